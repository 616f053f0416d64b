"""Decoder-only language models (GPT-2 and Llama conventions, modern by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import math

from metagen.compiler import design_rules as R
from metagen.compiler.constraints import budget_max
from metagen.compiler.context import CompileContext
from metagen.compiler.devices import DEVICES
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    TransformerStack,
    block_stack, class_name, act_nbytes, decode_inputs, inference, present_names, tower_training_activations, training, weight_nbytes,
    resolve_tower, tower_block,
)
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType
from metagen.frontend.units import format_count



@dataclass
class DecoderConfig(TransformerStack):
    vocab_size: int | None = spec_key()
    position: str | None = spec_key()
    rope_theta: float | None = spec_key()
    bias: bool | None = spec_key()
    tie_embeddings: bool | None = spec_key()
    qkv_bias: bool | None = spec_key()
    rope_scaling: str | None = spec_key()
    rope_scaling_factor: float | None = spec_key()
    rope_low_freq_factor: float | None = spec_key()
    rope_high_freq_factor: float | None = spec_key()
    rope_original_context: int | None = spec_key()
    sliding_window: int = spec_key(0)  # Mistral's: each token attends to itself and the window - 1 before it; 0 = all
    gqa: bool = derived(False)  # grouped-query attention when heads are derived
    context: int = derived(0)
    tensor_parallel: int = derived(1)  # the device's (design rule parallel-shapes)
    ffn_multiple: int = derived(256)  # what a derived ffn_size is rounded up to


SIZE_KEYS = ("hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size")


def lm_widths() -> list[int]:
    """Candidate model widths: 64, then multiples of 128 or 192 up to 1024 (head
    counts that group by 4 or 3: MobileLLM's and SmolLM's 576 and 960 among them), of
    128 up to 2048, of 256 up to 4096 (Llama 3.2 3B's 3072), then of 512 (Llama 2
    13B's 5120, 70B's 8192). Heads are 64 wide up to 2048, 128 wide above
    (`transformer.default_head_dim`)."""
    return [
        d for d in range(64, 16384 + 1, 64)
        if d == 64
        or (d <= 1024 and (d % 128 == 0 or d % 192 == 0))
        or (d % 128 == 0 and d <= 2048)
        or (d % 256 == 0 and d <= 4096)
        or d % 512 == 0
    ]


def apply_lm_rules(ctx: CompileContext, cfg: ArchConfig, *, ties: bool) -> None:
    """The design rules a decoder LM follows before its sizes are fitted
    (compiler/design_rules.py): the RoPE base for the context, the device's parallel
    shapes, tied embeddings for a small budget. A pinned value that breaks one is
    kept, with a warning at its line."""
    arch = ctx.spec.architecture
    device = DEVICES[ctx.spec.constraints.device]
    tp = device.tensor_parallel
    cfg.tensor_parallel = tp
    cfg.ffn_multiple = math.lcm(256, tp * device.tile)
    if tp > 1:
        R.applied(
            ctx, R.PARALLEL,
            f"heads and KV heads multiples of {tp} ({device.name}: {tp}-way tensor parallel), "
            f"ffn_size a multiple of {cfg.ffn_multiple} ({tp} x {device.tile}-wide tiles)",
        )
        for key in ("heads", "kv_heads"):
            if key in ctx.pinned and cfg[key] % tp:
                R.pinned_breaks(
                    ctx, arch.loc(key), R.PARALLEL,
                    f"{key} {cfg[key]} does not split over the {tp}-way tensor parallelism of {device.name}",
                )
        if "hidden_size" in ctx.pinned and "heads" not in ctx.pinned:
            trial = dict(cfg)
            if T.derive(trial, ctx.pinned, cfg.gqa) is None and trial["heads"] % tp:
                R.pinned_breaks(
                    ctx, arch.loc("hidden_size"), R.PARALLEL,
                    f"hidden_size {cfg.hidden_size} gives {trial['heads']} heads, which do not split over the "
                    f"{tp}-way tensor parallelism of {device.name}",
                )
    if cfg.position == "rope":
        base = R.rope_base(cfg.context)
        if "rope_theta" not in ctx.pinned:
            cfg.rope_theta = base
            R.applied(ctx, R.ROPE_BASE, f"rope_theta = {base:,.0f} for a {cfg.context}-token context")
        elif cfg.rope_theta < base:
            R.pinned_breaks(
                ctx, arch.loc("rope_theta"), R.ROPE_BASE,
                f"rope_theta {cfg.rope_theta:,.0f} is below the base published models use at a {cfg.context}-token "
                f"context ({base:,.0f})",
            )
    if ties:
        budget = budget_max(ctx)
        small = budget <= R.TIE_UP_TO
        if "tie_embeddings" not in ctx.pinned:
            cfg.tie_embeddings = small
            R.applied(
                ctx, R.TIED,
                f"tie_embeddings = {'true' if small else 'false'} for a {format_count(budget)} budget",
            )
        elif small and not cfg.tie_embeddings:
            R.pinned_breaks(
                ctx, arch.loc("tie_embeddings"), R.TIED,
                f"tie_embeddings false on a {format_count(budget)} budget: the LM head repeats the embedding's "
                "vocab_size x hidden_size parameters",
            )


class DecoderLM(Family):
    name = "decoder_lm"
    pipeline_tag = "text-generation"
    doc = "Decoder-only transformer language model."
    inputs_doc = "input_ids: int64 [batch, seq] token ids in [0, vocab_size)"
    outputs_doc = "logits: float32 [batch, seq, vocab_size], next-token scores at each position"
    rules = (Rule(("text",), ("text",), ("autoregressive", None)),)
    default_objective = "autoregressive"
    tasks = ("generation",)
    generates = True
    default_budget = 1_000_000_000
    default_budget_source = "TinyLlama 1.1B and Llama 3.2 1B, the small open LMs practitioners start from"
    unit = UnitOfWork("token", "token")
    config = DecoderConfig
    built = "a decoder-only language model"
    tiny_doc = "d = 64, 2 layers, 4 heads of 16 (2 kv heads when grouped-query), vocab 256, context 64, sliding window at most 8"

    def configure(self, ctx: CompileContext) -> None:
        cfg = resolve_tower(ctx, "modern", self.config)
        # Grouped-query attention is part of the modern (rotary) convention; models
        # pinned to learned positions follow GPT-2's plain multi-head attention.
        cfg.gqa = cfg.position == "rope"
        if cfg.qkv_bias is None:
            cfg.qkv_bias = cfg.bias
        T.resolve_rope_scaling(ctx, cfg)
        cfg.context = ctx.context_window
        apply_lm_rules(ctx, cfg, ties=True)
        ctx.arch = cfg

    # The LM head and embedding follow the tokenizer's vocabulary, which the fitter
    # may shrink for a tiny budget (design rule vocab-shrink); audio LMs read a codec's.
    shrinks_vocab = True

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        free = [k for k in ("hidden_size", "layers") if k not in ctx.pinned]
        if not free:
            return None
        widths = []
        if "hidden_size" in ctx.pinned:
            candidates = [ctx.arch["hidden_size"]]
        else:
            candidates = lm_widths()
        default_vocab = ctx.arch["vocab_size"]
        shrink = self.shrinks_vocab and "vocab_size" not in ctx.pinned
        budget = budget_max(ctx)
        for d in candidates:
            cfg = dict(ctx.arch, hidden_size=d)
            if T.derive(cfg, ctx.pinned, ctx.arch["gqa"]) is not None:
                continue
            if "heads" not in ctx.pinned and cfg["heads"] % cfg["tensor_parallel"]:
                continue  # design rule parallel-shapes
            w = {k: cfg[k] for k in SIZE_KEYS if k != "layers"}
            if shrink:
                vocab = R.shrunk_vocab(default_vocab, d, budget)
                if vocab != default_vocab:
                    w["vocab_size"] = vocab
            widths.append(w)
        depth_keys = [] if "layers" in ctx.pinned else ["layers"]
        return Knobs(
            widths=widths,
            depth_keys=depth_keys,
            ideal_depth=lambda w: R.lm_depth(w["hidden_size"]),
            choice="the one whose depth is closest to the published depth for its width (design rule lm-depth)",
            depth_rule="lm-depth",
            demoted=lambda w: "vocab_size" in w,
            chosen=lambda ctx, w: self._vocab_warning(ctx, w, default_vocab, budget),
        )

    def _vocab_warning(self, ctx: CompileContext, width: dict[str, Any], default: int, budget: int) -> None:
        vocab = width.get("vocab_size")
        if vocab is None:
            pinned = ctx.arch["vocab_size"]
            if self.shrinks_vocab and "vocab_size" in ctx.pinned and pinned * width["hidden_size"] > budget * R.VOCAB_SHARE:
                R.pinned_breaks(
                    ctx, ctx.spec.architecture.loc("vocab_size"), R.VOCAB,
                    f"vocab_size {pinned:,}: its embedding ({pinned:,} x {width['hidden_size']}) is over half of "
                    f"parameter_budget.max = {format_count(budget)}",
                )
            return
        c = ctx.spec.constraints
        loc = c.parameter_budget.loc("max") if c.parameter_budget.given("max") else c.loc()
        ctx.sink.warning(
            loc,
            f"parameter_budget.max = {format_count(budget)} cannot hold the default {default:,}-token vocabulary "
            f"(its embedding alone, {default:,} x {width['hidden_size']}, is over half the budget): vocab_size shrunk "
            f"to {vocab:,}; train a tokenizer of that size, or pin architecture.vocab_size",
        )
        R.applied(ctx, R.VOCAB, f"vocab_size = {vocab:,} (the default {default:,} is over half the budget)")

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        if "kv_heads" in ctx.pinned:
            gqa = a["kv_heads"] < (a["heads"] if "heads" in ctx.pinned else a["kv_heads"] + 1)
        else:
            gqa = a["gqa"]
        a.update(hidden_size=64, layers=2, head_dim=16, heads=4, kv_heads=2 if gqa else 4, vocab_size=256, context=64)
        a.update(tensor_parallel=1, ffn_multiple=256)  # test scale runs on one device
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
        config = {k: v for k, v in a.pick(self.config.spec_keys()).items() if v is not None}
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
