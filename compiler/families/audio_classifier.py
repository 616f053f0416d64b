"""Throwaway: an audio-codes classifier (to measure what adding a family touches)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    block_stack, class_name, dtype_bytes, num_classes, resolve_tower, single_tower_knobs, tower_activations, tower_block,
)
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType


@dataclass
class AudioClassifierConfig(ArchConfig):
    hidden_size: int | None = spec_key()
    layers: int | None = spec_key()
    heads: int | None = spec_key()
    kv_heads: int | None = spec_key()
    head_dim: int | None = spec_key()
    ffn_size: int | None = spec_key()
    activation: str | None = spec_key()
    norm: str | None = spec_key()
    norm_eps: float | None = spec_key()
    norm_position: str | None = spec_key()
    position: str | None = spec_key()
    rope_theta: float | None = spec_key()
    bias: bool | None = spec_key()
    codebooks: int = spec_key(4)
    codebook_size: int = spec_key(2048)
    num_classes: int = derived(0)
    context: int = derived(0)


def _check(cfg: Any, pinned: set[str]) -> str | None:
    return T.derive(cfg, pinned, False)


class AudioClassifier(Family):
    name = "audio_classifier"
    doc = "Transformer classifier over neural-codec tokens."
    rules = (Rule(("audio",), ("label",), ("classification", None)),)
    default_objective = "classification"
    unit = UnitOfWork("clip", "sample")
    config = AudioClassifierConfig
    tiny_doc = "d = 64, 2 layers, 4 heads, 2 codebooks of 64 entries, context 64, at most 10 classes"

    def configure(self, ctx: CompileContext) -> None:
        cfg = resolve_tower(ctx, "modern", AudioClassifierConfig)
        cfg.num_classes = num_classes(ctx, 2)
        cfg.context = ctx.context_window
        ctx.arch = cfg

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, _check)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=64, layers=2, heads=4, kv_heads=4, head_dim=16, codebooks=2, codebook_size=64, context=64)
        a.update(ffn_size=T.default_ffn(64, a.activation), num_classes=min(a.num_classes, 10))
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        return _check(ctx.arch, ctx.pinned)

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        block = tower_block(mb, ctx, a, "seq", causal=False)
        top = mb.module(class_name(ctx.spec.name), doc=self.doc)
        codes = top.input("codes", TensorType(DType.i64, ("batch", a.codebooks, "seq")))
        x = None
        for i in range(a.codebooks):
            top.layer(f"embed_{i}", "embedding", num=a.codebook_size, dim=a.hidden_size)
            e = top.call(f"embed_{i}", top.op("select", codes, axis=1, index=i, hint=f"codes_{i}"), hint="x")
            x = e if x is None else top.op("add", x, e, hint="x")
        x = block_stack(top, block, x, a)
        pooled = top.op("mean", x, axis=1, hint="pooled")
        top.layer("classifier", "linear", in_features=a.hidden_size, out_features=a.num_classes, bias=True)
        top_def = top.ret(top.call("classifier", pooled, hint="logits"), names=["logits"])
        config = a.pick(AudioClassifierConfig.spec_keys())
        config.update(num_classes=a.num_classes, context_window=a.context)
        return mb.finish(
            top_def, name=top_def.name, spec_name=ctx.spec.name,
            inputs=[InputSpec("codes", codes.type, "tokens", 0, a.codebook_size, "codec codes")],
            config=config, family=self.name,
            symbols={"batch": "batch size", "seq": f"frames, at most {a.context}"},
            examples={"seq": min(16, a.context)},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        nbytes = dtype_bytes(ctx)
        acts = tower_activations(ctx.arch, ctx.arch.context, nbytes)
        return {"weights": params * nbytes, "kv_cache": 0, "activations": acts, "total": params * nbytes + acts}
