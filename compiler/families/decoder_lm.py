"""Decoder-only language models (GPT-2 and Llama conventions, modern by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    block_stack, class_name, act_nbytes, decode_inputs, inference, present_names, tower_training_activations, training, weight_nbytes,
    resolve_tower, tower_block,
)
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType



@dataclass
class DecoderConfig(ArchConfig):
    vocab_size: int | None = spec_key()
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
    tie_embeddings: bool | None = spec_key()
    sliding_window: int = spec_key(0)  # Mistral's: each token attends to itself and the window - 1 before it; 0 = all
    gqa: bool = derived(False)  # grouped-query attention when heads are derived
    context: int = derived(0)


SIZE_KEYS = ("hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size")


def lm_widths() -> list[int]:
    """Candidate model widths: 64, multiples of 128 up to 512, then of 256 up to 2048
    (so heads = d / 64 is a multiple of 4 and grouped-query attention applies), then
    of 512 (heads = d / 128, again a multiple of 4). Matmul-friendly and the shapes
    published models use."""
    return [d for d in range(64, 16384 + 1, 64) if d == 64 or (d % 128 == 0 and d <= 512) or (d % 256 == 0 and d <= 2048) or d % 512 == 0]


class DecoderLM(Family):
    name = "decoder_lm"
    doc = "Decoder-only transformer language model."
    inputs_doc = "input_ids: int64 [batch, seq] token ids in [0, vocab_size)"
    outputs_doc = "logits: float32 [batch, seq, vocab_size], next-token scores at each position"
    rules = (Rule(("text",), ("text",), ("autoregressive", None)),)
    default_objective = "autoregressive"
    tasks = ("generation",)
    generates = True
    unit = UnitOfWork("token", "token")
    config = DecoderConfig
    built = "a decoder-only language model"
    tiny_doc = "d = 64, 2 layers, 4 heads of 16 (2 kv heads when grouped-query), vocab 256, context 64, sliding window at most 8"

    def configure(self, ctx: CompileContext) -> None:
        cfg = resolve_tower(ctx, "modern", self.config)
        # Grouped-query attention is part of the modern (rotary) convention; models
        # pinned to learned positions follow GPT-2's plain multi-head attention.
        cfg.gqa = cfg.position == "rope"
        cfg.context = ctx.context_window
        ctx.arch = cfg

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        free = [k for k in ("hidden_size", "layers") if k not in ctx.pinned]
        if not free:
            return None
        widths = []
        if "hidden_size" in ctx.pinned:
            candidates = [ctx.arch["hidden_size"]]
        else:
            candidates = lm_widths()
        for d in candidates:
            cfg = dict(ctx.arch, hidden_size=d)
            if T.derive(cfg, ctx.pinned, ctx.arch["gqa"]) is None:
                widths.append({k: cfg[k] for k in SIZE_KEYS if k != "layers"})
        depth_keys = [] if "layers" in ctx.pinned else ["layers"]
        return Knobs(widths=widths, depth_keys=depth_keys, ideal_depth=lambda w: T.ideal_layers(w["hidden_size"]))

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        if "kv_heads" in ctx.pinned:
            gqa = a["kv_heads"] < (a["heads"] if "heads" in ctx.pinned else a["kv_heads"] + 1)
        else:
            gqa = a["gqa"]
        a.update(hidden_size=64, layers=2, head_dim=16, heads=4, kv_heads=2 if gqa else 4, vocab_size=256, context=64)
        a["ffn_size"] = T.default_ffn(64, a["activation"])
        if getattr(a, "sliding_window", 0):  # shorter than the tiny context, so the window still bites
            a["sliding_window"] = min(a["sliding_window"], 8)
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        return T.derive(ctx.arch, ctx.pinned, ctx.arch["gqa"])

    def build(self, ctx: CompileContext) -> Model:
        """The decode form, one graph for a whole prompt and for each step after it:
        tokens, their attention mask (over the cached and the new tokens), position
        ids and each layer's past keys and values in; logits and each layer's
        present keys and values out. Without a cache (past length 0) it is the
        plain forward; the generated modules default every input but the tokens."""
        a = ctx.arch
        mb = self.model_builder(ctx)
        d, vocab = a.hidden_size, a.vocab_size
        block = tower_block(mb, ctx, a, "seq", causal=True, cache=True)
        top = mb.module(class_name(ctx.spec.name), doc="Decoder-only language model.")
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        mask, positions, past, specs = decode_inputs(top, ids, a)
        x = self.embed(top, ids, positions, a)
        bias = top.op("attention_bias", mask, x, causal=True, window=a.sliding_window, hint="attn_bias")
        shared = (bias, positions) if a.position == "rope" else (bias,)
        x, present = block_stack(top, block, x, a, shared=shared, per_layer=past)
        outputs = self.head(top, x, a)
        top_def = top.ret(outputs, *present, names=["logits", *present_names(a)])
        config = a.pick(self.config.spec_keys())
        config["context_window"] = a.context
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[self.token_input(ids, a), *specs],
            config=config,
            family=self.name,
            symbols={
                "batch": "batch size",
                "seq": "new tokens (the whole prompt, or one per decoding step)",
                "past": f"cached tokens; past + seq at most {a.context}",
            },
            examples={"seq": min(16, a.context), "past": 0},
        )

    def token_input(self, ids, a) -> InputSpec:
        return InputSpec("input_ids", ids.type, "tokens", 0, a.vocab_size, "token ids, 0 <= id < vocab_size")

    def embed(self, top, ids, positions, a):
        """Token embeddings [batch, seq, d], plus learned positions at the position ids."""
        top.layer("tok_embeddings", "embedding", num=a.vocab_size, dim=a.hidden_size)
        x = top.call("tok_embeddings", ids, hint="x")
        if a.position != "learned":
            return x
        top.layer("pos_embeddings", "embedding", num=a.context, dim=a.hidden_size, init_std=0.01)
        return top.op("add", x, top.call("pos_embeddings", positions, hint="pos_emb"), hint="x")

    def head(self, top, x, a):
        if a.tie_embeddings:
            w = top.get_param("tok_embeddings.weight", hint="w_emb")
            return top.op("linear_fn", x, w, hint="logits")
        top.layer("lm_head", "linear", in_features=a.hidden_size, out_features=a.vocab_size, bias=False)
        return top.call("lm_head", x, hint="logits")

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Inference: weights at the deployment precision, the KV cache at the full
        context (batch 1), and one decode step's working set: one layer's
        activations for the new token (4d + ffn), its attention scores over the
        context (heads * context) and one row of logits (vocab). Prefill is chunked
        (as vLLM and TensorRT-LLM do), so it never holds context x vocab logits.
        Training: one sequence at the context, plus its fp32 logits for the loss."""
        a = ctx.arch
        nbytes = act_nbytes(ctx)
        kv = T.kv_cache_bytes(a, a["context"], nbytes)
        step = (4 * a["hidden_size"] + a["ffn_size"] + a["heads"] * a["context"] + a["vocab_size"]) * nbytes
        stored, ckpt = tower_training_activations(a["layers"], a["context"], a["hidden_size"])
        logits = a["context"] * a["vocab_size"] * 4
        return {
            "inference": inference(params * weight_nbytes(ctx), kv, step),
            "training": training(params, stored + logits, ckpt + logits),
        }

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1, "seq": ctx.arch["context"], "past": 0}, "per_unit": ctx.arch["context"]}
