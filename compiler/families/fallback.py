"""Best-effort models for modalities MetaGen does not know (taste, smell, vibes, ...).

MetaGen cannot know how such a signal is encoded, so the model takes a generic
feature sequence, one vector per time step, that the user computes from the sensor
(`features` float32 [batch, seq, feature_dim]; feature_dim is `architecture.channels`,
64 when absent). When every input is text it takes token ids instead. A pre-norm
transformer encoder (bidirectional, learned positions, GELU, LayerNorm) reads it;
the head follows the outputs:

- outputs include text: `logits` [batch, seq, vocab_size], token scores per step;
- outputs are a label: `logits` [batch, num_classes] from the mean over steps;
- anything else: `embedding` [batch, hidden_size], the mean over steps.

A warning says what was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    TransformerStack,
    block_stack, class_name, act_nbytes, inference, tower_training_activations, training, weight_nbytes, learned_positions, num_classes, read_spec, single_tower_knobs,
    tower_activations, tower_block,
)
from metagen.frontend.schema import MODALITIES
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType

DEFAULT_FEATURE_DIM = 64
DEFAULT_CLASSES = 2


@dataclass
class FallbackConfig(TransformerStack):
    feature_dim: int = spec_key(DEFAULT_FEATURE_DIM, key="channels")
    vocab_size: int | None = spec_key(32000)
    activation: str | None = spec_key("gelu")
    norm: str | None = spec_key("layernorm")
    norm_eps: float | None = spec_key(1e-5)
    norm_position: str | None = spec_key("pre")
    position: str | None = spec_key("learned")
    rope_theta: float | None = spec_key(10000.0)
    bias: bool | None = spec_key(True)
    token_input: bool = derived(False)  # every input is text: token ids instead of features
    head: str = derived("embedding")  # tokens | label | embedding
    num_classes: int = derived(0)
    context: int = derived(0)


def _check(cfg: dict[str, Any], pinned: set[str]) -> str | None:
    if cfg["position"] not in ("learned", "rope", "none"):
        return f"position '{cfg['position']}' is not supported by the fallback family; use 'learned', 'rope' or 'none'"
    return T.derive(cfg, pinned, False)


class Fallback(Family):
    name = "fallback"
    doc = "Best-effort transformer encoder for modalities MetaGen does not support."
    inputs_doc = "features: float32 [batch, seq, feature_dim] (input_ids: int64 [batch, seq] when every input is text)"
    outputs_doc = (
        "logits [batch, seq, vocab_size] for text outputs; logits [batch, num_classes] for a label; "
        "otherwise embedding [batch, hidden_size]"
    )
    rules = (Rule(note="warning says what was built", unknown_modalities=True),)
    unit = UnitOfWork("sequence", "sample")
    config = FallbackConfig
    # No published design reads an unknown modality: a small encoder, ViT-S's size,
    # that trains on one GPU, is where a first experiment starts.
    default_budget = 22_000_000
    default_budget_source = "no published model for the modality; ViT-S/16's size (22M; Touvron et al. 2021, DeiT-S)"
    tiny_doc = "d = 64, 2 layers, 4 heads, feature width at most 16, vocab 256, context 64, at most 10 classes"

    def configure(self, ctx: CompileContext) -> None:
        cfg = read_spec(ctx, FallbackConfig())
        ins = list(ctx.spec.modality.inputs or [])
        outs = list(ctx.spec.modality.outputs or [])
        cfg.token_input = all(m == "text" for m in ins)
        cfg.head = "tokens" if "text" in outs else ("label" if outs == ["label"] else "embedding")
        cfg.num_classes = num_classes(ctx, DEFAULT_CLASSES)
        cfg.context = ctx.context_window
        ctx.arch = cfg
        from metagen.compiler.select import best_effort_reason

        unknown = sorted({m for m in ins + outs if m not in MODALITIES})
        built = f"built a best-effort transformer encoder {self._describe(ctx.arch)} (see docs/families.md, 'fallback')"
        if unknown:
            # The spec builder has already warned at each unknown word (one warning per
            # problem); this note says what was built for it.
            ctx.sink.note(
                ctx.spec.modality.loc(),
                f"unsupported modalit{'y' if len(unknown) == 1 else 'ies'} {', '.join(repr(m) for m in unknown)}: {built}",
            )
        else:  # words of the language that no family builds (together) yet: one warning
            reason, section = best_effort_reason(ctx.spec)
            ctx.sink.warning(ctx.spec.modality.loc(section), f"{reason}: {built}")

    @staticmethod
    def _describe(a: dict[str, Any]) -> str:
        if a["token_input"]:
            src = "over token ids 'input_ids' int64 [batch, seq]"
        else:
            src = (
                f"over a generic feature sequence 'features' float32 [batch, seq, {a['feature_dim']}] "
                "(one feature vector per step, computed by you; architecture.channels sets the width)"
            )
        dst = {
            "tokens": "to 'logits' float32 [batch, seq, vocab_size] (token scores at each step)",
            "label": f"to 'logits' float32 [batch, {a['num_classes']}] (class scores of the whole sequence)",
            "embedding": "to 'embedding' float32 [batch, hidden_size] (mean over steps)",
        }[a["head"]]
        return f"{src} {dst}"

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, _check)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(hidden_size=64, layers=2, heads=4, kv_heads=4, head_dim=16, vocab_size=256, context=64)
        a["ffn_size"] = T.default_ffn(64, a["activation"])
        a["feature_dim"] = min(a["feature_dim"], 16)
        a["num_classes"] = min(a["num_classes"], 10)
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        return _check(ctx.arch, ctx.pinned)

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        d = a.hidden_size
        block = tower_block(mb, ctx, a, "seq", causal=False)
        top = mb.module(class_name(ctx.spec.name), doc="Best-effort transformer encoder for an unsupported modality.")
        if a.token_input:
            src = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
            spec = InputSpec("input_ids", src.type, "tokens", 0, a.vocab_size, "token ids, 0 <= id < vocab_size")
            top.layer("tok_embeddings", "embedding", num=a.vocab_size, dim=d)
            x = top.call("tok_embeddings", src, hint="x")
        else:
            src = top.input("features", TensorType(DType.f32, ("batch", "seq", a.feature_dim)))
            spec = InputSpec("features", src.type, "normal", doc="one feature vector per step")
            top.layer("in_proj", "linear", in_features=a.feature_dim, out_features=d, bias=bool(a.bias))
            x = top.call("in_proj", src, hint="x")
        x = learned_positions(top, x, src, a, a.context)
        x = block_stack(top, block, x, a)
        if a.head == "tokens":
            top.layer("lm_head", "linear", in_features=d, out_features=a.vocab_size, bias=False)
            out, name = top.call("lm_head", x, hint="logits"), "logits"
        else:
            out = top.op("mean", x, axis=1, hint="pooled")
            name = "embedding"
            if a.head == "label":
                top.layer("classifier", "linear", in_features=d, out_features=a.num_classes, bias=True)
                out, name = top.call("classifier", out, hint="logits"), "logits"
        top_def = top.ret(out, names=[name])
        config = a.pick([f.name for _, f in FallbackConfig.spec_fields()])
        config.update(input="input_ids" if a.token_input else "features", head=a.head, context_window=a.context)
        if a.head == "label":
            config["num_classes"] = a.num_classes
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[spec],
            config=config,
            family=self.name,
            symbols={"batch": "batch size", "seq": f"steps, at most {a.context}"},
            examples={"seq": min(16, a.context)},
        )

    def resolved_architecture(self, ctx: CompileContext) -> dict[str, Any]:
        out = super().resolved_architecture(ctx)
        channels = out.pop("channels")
        if not ctx.arch.token_input:
            out["channels"] = channels
        return out

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """One forward (one block live at a time); a token head outputs scores at
        every position in that forward, so its context x vocab logits count."""
        nbytes = act_nbytes(ctx)
        a = ctx.arch
        acts = tower_activations(a, a["context"], nbytes)
        logits = a["context"] * a["vocab_size"] if a["head"] == "tokens" else 0
        stored, ckpt = tower_training_activations(a["layers"], a["context"], a["hidden_size"])
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, acts + logits * nbytes),
            "training": training(params, stored + logits * 4, ckpt + logits * 4),
        }

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": 1}
