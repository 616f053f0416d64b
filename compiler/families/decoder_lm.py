"""Decoder-only language models (GPT-2 and Llama conventions, modern by default)."""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import Family, Knobs, register
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Model
from metagen.ir.types import DType, TensorType

TOWER_KEYS = [
    "vocab_size", "hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size", "activation",
    "norm", "norm_eps", "norm_position", "position", "rope_theta", "bias", "tie_embeddings",
]
SIZE_KEYS = ("hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size")


def class_name(spec_name: str) -> str:
    """A Python class name from free text ("ViT-Base/16 classifier" -> ViTBase16Classifier)."""
    words = []
    cur = ""
    for ch in spec_name:
        if ch.isascii() and ch.isalnum():
            cur += ch
        else:
            if cur:
                words.append(cur)
            cur = ""
    if cur:
        words.append(cur)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    if name[0].isdigit():
        name = "M" + name
    if name in ("Model", "CONFIG", "INPUTS", "OUTPUTS"):
        name = name + "Net"
    return name


def resolve_tower(ctx: CompileContext, preset: str, section=None, prefix: str = "") -> dict[str, Any]:
    """A tower config: the user's pinned keys over the preset's conventions, sizes
    left None for the fitter."""
    arch = section if section is not None else ctx.spec.architecture
    cfg: dict[str, Any] = dict(T.PRESETS[preset])
    for key in ("hidden_size", "layers", "heads", "kv_heads", "head_dim", "ffn_size"):
        cfg.setdefault(key, None)
    for key, value in arch.items():
        if key in ("family", "components", "text_encoder", "image_encoder") or value is None:
            continue
        if arch.given(key):
            cfg[key] = value
            ctx.pinned.add(prefix + key)
    return cfg


def lm_widths() -> list[int]:
    """Candidate model widths: 64, multiples of 128 up to 512, then of 256 up to 2048
    (so heads = d / 64 is a multiple of 4 and grouped-query attention applies), then
    of 512 (heads = d / 128, again a multiple of 4). Matmul-friendly and the shapes
    published models use."""
    return [d for d in range(64, 16384 + 1, 64) if d == 64 or (d % 128 == 0 and d <= 512) or (d % 256 == 0 and d <= 2048) or d % 512 == 0]


class DecoderLM(Family):
    def resolve(self, ctx: CompileContext) -> None:
        from metagen.compiler.families.vit import warn_family

        warn_family(ctx, "a decoder-only language model")
        cfg = resolve_tower(ctx, "modern")
        ctx.arch = {k: cfg.get(k) for k in TOWER_KEYS}
        # Grouped-query attention is part of the modern (rotary) convention; models
        # pinned to learned positions follow GPT-2's plain multi-head attention.
        ctx.arch["gqa"] = cfg["position"] == "rope"
        ctx.arch["context"] = ctx.context_window

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
        ctx.context_window = 64

    def finalize(self, ctx: CompileContext) -> str | None:
        return T.derive(ctx.arch, ctx.pinned, ctx.arch["gqa"])

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = ModelBuilder()
        d, vocab = a["hidden_size"], a["vocab_size"]
        x_type = TensorType(DType.f32, ("batch", "seq", d))
        block = T.block_module(mb, a, x_type, causal=True)
        top = mb.module(class_name(ctx.spec.name), doc="Decoder-only language model.")
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        top.layer("tok_embeddings", "embedding", num=vocab, dim=d)
        x = top.call("tok_embeddings", ids, hint="x")
        if a["position"] == "learned":
            top.layer("pos_embeddings", "embedding", num=a["context"], dim=d, init_std=0.01)
            pos = top.op("positions", ids, axis=1, hint="pos")
            x = top.op("add", x, top.call("pos_embeddings", pos, hint="pos_emb"), hint="x")
        top.repeat("blocks", block, a["layers"])
        x = top.call("blocks", x, hint="x")
        T.norm_layer(top, "norm_f", a)
        x = top.call("norm_f", x, hint="x")
        if a["tie_embeddings"]:
            w = top.get_param("tok_embeddings.weight", hint="w_emb")
            logits = top.op("linear_fn", x, w, hint="logits")
        else:
            top.layer("lm_head", "linear", in_features=d, out_features=vocab, bias=False)
            logits = top.call("lm_head", x, hint="logits")
        top_def = top.ret(logits, names=["logits"])
        config = {k: a[k] for k in TOWER_KEYS}
        config["context_window"] = a["context"]
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[InputSpec("input_ids", ids.type, "tokens", 0, vocab, "token ids, 0 <= id < vocab_size")],
            config=config,
            family=self.name,
            symbols={"batch": "batch size", "seq": f"sequence length, at most {a['context']}"},
            examples={"seq": min(16, a["context"])},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        a = ctx.arch
        nbytes = _dtype_bytes(ctx)
        weights = params * nbytes
        kv = T.kv_cache_bytes(a, a["context"], nbytes)
        # One layer's activations at a time during prefill of the full context, plus
        # the logits: context * (4d + ffn + vocab) values.
        acts = a["context"] * (4 * a["hidden_size"] + a["ffn_size"] + a["vocab_size"]) * nbytes
        return {"weights": weights, "kv_cache": kv, "activations": acts, "total": weights + kv + acts}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"unit": "token", "bindings": {"batch": 1, "seq": ctx.arch["context"]}, "per_unit": ctx.arch["context"]}


def _dtype_bytes(ctx: CompileContext) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[ctx.spec.constraints.dtype]


register(
    DecoderLM(
        "decoder_lm",
        "Decoder-only transformer language model.",
        inputs_doc="input_ids: int64 [batch, seq] token ids in [0, vocab_size)",
        outputs_doc="logits: float32 [batch, seq, vocab_size], next-token scores at each position",
    )
)
