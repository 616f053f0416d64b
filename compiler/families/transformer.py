"""Transformer towers shared by every transformer family (decoder LMs, encoders,
vision transformers, the towers of dual encoders and the diffusion text encoder).

A tower config is any mapping with the tower keys (a family's config, blocks.py, or
a plain dict the fitter is trying), fully resolved.
"""

from __future__ import annotations

import math
from typing import Any

from metagen.compiler.design_rules import kv_heads_for
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import ModuleDef, Value

# Convention presets. "modern" is MetaGen's default for new decoder models:
# Llama-style pre-RMSNorm, SwiGLU, rotary positions, no biases, grouped-query
# attention; "bert"/"vit"/"clip" are what those families conventionally use.
PRESETS: dict[str, dict[str, Any]] = {
    "modern": dict(
        activation="swiglu", norm="rmsnorm", norm_eps=1e-5, norm_position="pre", position="rope",
        rope_theta=10000.0, bias=False, tie_embeddings=False, type_vocab_size=0, pooling="last",
        vocab_size=32000,
    ),
    "encoder": dict(
        activation="gelu", norm="layernorm", norm_eps=1e-12, norm_position="post", position="learned",
        rope_theta=10000.0, bias=True, tie_embeddings=False, type_vocab_size=2, pooling="cls_pooler",
        vocab_size=30522,
    ),
    "vit": dict(
        activation="gelu", norm="layernorm", norm_eps=1e-6, norm_position="pre", position="learned",
        rope_theta=10000.0, bias=True, tie_embeddings=False, type_vocab_size=0, pooling="cls",
        image_size=224, patch_size=16, channels=3,
    ),
    "clip_text": dict(
        activation="quick_gelu", norm="layernorm", norm_eps=1e-5, norm_position="pre", position="learned",
        rope_theta=10000.0, bias=True, tie_embeddings=False, type_vocab_size=0, pooling="eot",
        vocab_size=49408,
    ),
    "clip_image": dict(
        activation="quick_gelu", norm="layernorm", norm_eps=1e-5, norm_position="pre", position="learned",
        rope_theta=10000.0, bias=True, tie_embeddings=False, type_vocab_size=0, pooling="cls",
        image_size=224, patch_size=32, channels=3,
    ),
}

GATED = {"swiglu": "silu", "geglu": "gelu"}

# Llama 3.1's rope scaling settings, the defaults of `rope_scaling: llama3`.
LLAMA3_ROPE = {"rope_scaling_factor": 8.0, "rope_low_freq_factor": 1.0, "rope_high_freq_factor": 4.0,
               "rope_original_context": 8192}


def resolve_rope_scaling(ctx, cfg) -> None:
    """`rope_scaling` (default none) and, for llama3, its settings (default Llama
    3.1's); a setting given without llama3 scaling, or low >= high, is an error at it."""
    if cfg["rope_scaling"] is None:
        cfg["rope_scaling"] = "none"
    section = ctx.spec.architecture
    if cfg["rope_scaling"] == "none":
        for key in LLAMA3_ROPE:
            if cfg[key] is not None:
                ctx.sink.error(section.loc(key), f"architecture: {key} applies to rope_scaling: llama3; rope_scaling is none")
        return
    for key, value in LLAMA3_ROPE.items():
        if cfg[key] is None:
            cfg[key] = value
    if cfg["rope_low_freq_factor"] >= cfg["rope_high_freq_factor"]:
        ctx.sink.error(section.loc("rope_low_freq_factor"), (
            f"architecture: rope_low_freq_factor {cfg['rope_low_freq_factor']} must be below rope_high_freq_factor "
            f"{cfg['rope_high_freq_factor']}"))


def rope_attrs(cfg) -> dict[str, Any]:
    """The `rope` op's attributes of a tower config."""
    out: dict[str, Any] = {"theta": float(cfg["rope_theta"])}
    if cfg.get("rope_scaling") not in (None, "none"):
        out.update(scaling=cfg["rope_scaling"], factor=float(cfg["rope_scaling_factor"]),
                   low_freq_factor=float(cfg["rope_low_freq_factor"]), high_freq_factor=float(cfg["rope_high_freq_factor"]),
                   original_context=int(cfg["rope_original_context"]))
    return out


def default_head_dim(hidden: int) -> int:
    """32 below 256 wide (Pythia-14M: 128 wide, 4 heads), 64 up to 2048 (GPT-2, Llama
    3.2 1B), 128 above (Llama 2 7B and larger)."""
    if hidden < 256:
        return 32
    return 64 if hidden <= 2048 else 128


def default_ffn(hidden: int, activation: str, multiple: int = 256) -> int:
    if activation in GATED:
        # Llama's rule: two thirds of 4d (same parameters as an ungated 4d MLP),
        # rounded up to a multiple of 256 for fast matmul tiles (of more when the
        # device splits it over tensor-parallel shards: design rule parallel-shapes).
        return multiple * math.ceil(8 * hidden / 3 / multiple)
    return 4 * hidden


def derive(cfg: dict[str, Any], pinned: set[str], gqa: bool) -> str | None:
    """Fill heads/kv_heads/head_dim/ffn_size from hidden_size where not pinned.
    Returns a reason when the combination is impossible."""
    d = cfg["hidden_size"]
    if cfg.get("head_dim") is None:
        if "heads" in pinned and cfg.get("heads"):
            if d % cfg["heads"]:
                return f"heads {cfg['heads']} does not divide hidden_size {d}"
            cfg["head_dim"] = d // cfg["heads"]
        else:
            cfg["head_dim"] = default_head_dim(d)
    if cfg.get("heads") is None:
        if d % cfg["head_dim"]:
            return f"head_dim {cfg['head_dim']} does not divide hidden_size {d}"
        cfg["heads"] = d // cfg["head_dim"]
    # The device's tensor-parallel degree and FFN rounding (design rule parallel-shapes;
    # configs without those fields run on one device).
    tp = cfg.get("tensor_parallel") or 1
    if cfg.get("kv_heads") is None:
        cfg["kv_heads"] = kv_heads_for(cfg["heads"], gqa, tp)
    if cfg["heads"] % cfg["kv_heads"]:
        return f"kv_heads {cfg['kv_heads']} does not divide heads {cfg['heads']}"
    if cfg.get("ffn_size") is None:
        cfg["ffn_size"] = default_ffn(d, cfg["activation"], cfg.get("ffn_multiple") or 256)
    return None


def norm_layer(b: ModuleBuilder, name: str, cfg: dict, dim: int | None = None) -> str:
    dim = dim or cfg["hidden_size"]
    if cfg["norm"] == "rmsnorm":
        return b.layer(name, "rms_norm", dim=dim, eps=float(cfg["norm_eps"]))
    return b.layer(name, "layer_norm", dim=dim, eps=float(cfg["norm_eps"]), bias=bool(cfg["bias"]))


def attention_module(
    mb: ModelBuilder, cfg: dict, x_type, *, causal: bool, rope: bool, init_out: float, context_type=None, name="Attention",
    bias_type=None, positions_type=None, cache_type=None,
) -> ModuleDef:
    """Multi-head (grouped-query) attention. Self-attention projects q, k and v with
    one fused matmul (`qkv_proj`); cross-attention projects queries from x and keys
    and values from the context (`q_proj`, `kv_proj`).

    Optional inputs, in this order after x: an additive attention bias (padding,
    causality and windows; `attention_bias`), the position ids rotary embeddings
    rotate by, and a KV cache (past keys and values [B, KVH, P, D]), in which case
    the module also returns the present keys and values (past and new)."""
    d = cfg["hidden_size"]
    h, kvh, hd = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    bias = cfg["bias"]
    qkv_bias = bias if cfg.get("qkv_bias") is None else cfg["qkv_bias"]  # Qwen2: on q, k and v only
    b = mb.module(name, doc="Grouped-query attention." if kvh < h else "Multi-head attention.")
    x = b.input("x", x_type)
    mask = b.input("bias", bias_type) if bias_type is not None else None
    positions = b.input("position_ids", positions_type) if positions_type is not None else None
    past = [b.input("past_key", cache_type), b.input("past_value", cache_type)] if cache_type is not None else []
    qw, kvw = h * hd, kvh * hd
    if context_type is None:
        b.layer("qkv_proj", "linear", in_features=d, out_features=qw + 2 * kvw, bias=qkv_bias)
        qkv = b.call("qkv_proj", x, hint="qkv")
        q = b.op("slice", qkv, axis=-1, start=0, end=qw, hint="q")
        k = b.op("slice", qkv, axis=-1, start=qw, end=qw + kvw, hint="k")
        v = b.op("slice", qkv, axis=-1, start=qw + kvw, end=qw + 2 * kvw, hint="v")
    else:
        ctx = b.input("context", context_type)
        cdim = context_type.shape[-1]
        b.layer("q_proj", "linear", in_features=d, out_features=qw, bias=qkv_bias)
        b.layer("kv_proj", "linear", in_features=cdim, out_features=2 * kvw, bias=qkv_bias)
        q = b.call("q_proj", x, hint="q")
        kv = b.call("kv_proj", ctx, hint="kv")
        k = b.op("slice", kv, axis=-1, start=0, end=kvw, hint="k")
        v = b.op("slice", kv, axis=-1, start=kvw, end=2 * kvw, hint="v")
    if rope:
        at = [positions] if positions is not None else []
        q = b.op("rope", q, *at, heads=h, head_dim=hd, **rope_attrs(cfg), hint="q")
        k = b.op("rope", k, *at, heads=kvh, head_dim=hd, **rope_attrs(cfg), hint="k")
    present = []
    if past:
        for i, (t, old) in enumerate(((k, past[0]), (v, past[1]))):
            new = b.op("split_heads", t, heads=kvh, head_dim=hd, hint="kv_new")
            present.append(b.op("concat", old, new, axis=2, hint=("present_key", "present_value")[i]))
        k, v = present  # attended in the cache's [B, KVH, S, D] layout: no re-pack per step
    extra = [mask] if mask is not None else []
    split = {"split_kv": True} if past else {}
    a = b.op(
        "attention", q, k, v, *extra, heads=h, kv_heads=kvh, head_dim=hd, causal=causal and mask is None, hint="attn", **split
    )
    b.layer("o_proj", "linear", in_features=qw, out_features=d, bias=bias, init_std=init_out)
    return b.ret(b.call("o_proj", a, hint="out"), *present)


def mlp_module(mb: ModelBuilder, cfg: dict, x_type, *, init_out: float, name="MLP") -> ModuleDef:
    d, f, act = cfg["hidden_size"], cfg["ffn_size"], cfg["activation"]
    bias = cfg["bias"]
    b = mb.module(name, doc=f"Feed-forward block ({act}).")
    x = b.input("x", x_type)
    if act in GATED:
        b.layer("gate_proj", "linear", in_features=d, out_features=f, bias=bias)
        b.layer("up_proj", "linear", in_features=d, out_features=f, bias=bias)
        g = b.op(GATED[act], b.call("gate_proj", x, hint="gate"), hint="gate")
        h = b.op("mul", g, b.call("up_proj", x, hint="up"), hint="h")
        b.layer("down_proj", "linear", in_features=f, out_features=d, bias=bias, init_std=init_out)
        return b.ret(b.call("down_proj", h, hint="out"))
    b.layer("fc_in", "linear", in_features=d, out_features=f, bias=bias)
    h = b.op(act, b.call("fc_in", x, hint="h"), hint="h")
    b.layer("fc_out", "linear", in_features=f, out_features=d, bias=bias, init_std=init_out)
    return b.ret(b.call("fc_out", h, hint="out"))


def block_module(
    mb: ModelBuilder, cfg: dict, x_type, *, causal: bool, name="Block", bias_type=None, positions_type=None, cache_type=None
) -> ModuleDef:
    """One transformer block, pre-norm or post-norm. Output projections start
    smaller (0.02 / sqrt(2 * layers)) so the residual stream's variance does not
    grow with depth, as in GPT-2. The optional attention inputs (`attention_module`)
    become the block's inputs after x, and its present keys and values its outputs
    after x."""
    init_out = 0.02 / math.sqrt(2 * cfg["layers"])
    rope = cfg["position"] == "rope"
    attn = attention_module(
        mb, cfg, x_type, causal=causal, rope=rope, init_out=init_out,
        bias_type=bias_type, positions_type=positions_type if rope else None, cache_type=cache_type,
    )
    mlp = mlp_module(mb, cfg, x_type, init_out=init_out)
    b = mb.module(name, doc=f"Transformer block ({cfg['norm_position']}-norm).")
    x = b.input("x", x_type)
    extra = []
    if bias_type is not None:
        extra.append(b.input("bias", bias_type))
    if positions_type is not None and rope:
        extra.append(b.input("position_ids", positions_type))
    if cache_type is not None:
        extra += [b.input("past_key", cache_type), b.input("past_value", cache_type)]
    norm_layer(b, "attn_norm", cfg)
    b.sub("attn", attn)
    norm_layer(b, "mlp_norm", cfg)
    b.sub("mlp", mlp)

    def attend(h):
        out = b.call_multi("attn", h, *extra, hint="h")
        present[:] = out[1:]
        return out[0]

    present: list = []
    if cfg["norm_position"] == "pre":
        x = b.op("add", x, attend(b.call("attn_norm", x, hint="h")), hint="x")
        x = b.op("add", x, b.call("mlp", b.call("mlp_norm", x, hint="h"), hint="h"), hint="x")
    else:
        x = b.call("attn_norm", b.op("add", x, attend(x), hint="x"), hint="x")
        x = b.call("mlp_norm", b.op("add", x, b.call("mlp", x, hint="h"), hint="x"), hint="x")
    return b.ret(x, *present)


def kv_cache_bytes(cfg: dict, context: int, dtype_bytes: int, batch: int = 1) -> int:
    return 2 * cfg["layers"] * cfg["kv_heads"] * cfg["head_dim"] * context * dtype_bytes * batch


