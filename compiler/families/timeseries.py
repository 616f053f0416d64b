"""Time-series models (`time_series -> time_series`): a PatchTST forecaster
(`forecasting` objective) and a window autoencoder for anomaly detection
(`reconstruction` objective).

PatchTST (Nie et al. 2023, "A Time Series is Worth 64 Words", arXiv:2211.14730), as
transformers' `PatchTSTForPrediction` builds it by default:

- instance normalization: each series (row, channel) of `past_values` [batch,
  lookback, channels] is standardized over time, loc = mean, scale = sqrt(var +
  1e-5); the forecast is de-standardized with the same loc and scale;
- patching: the last `patch_size + patch_stride * (N - 1)` steps are cut into N
  windows of `patch_size` steps, `patch_stride` apart (the first lookback - that
  steps are dropped, as transformers does);
- channel independence: every channel is its own sequence of N patch tokens, with
  shared weights (the channels fold into the batch axis);
- a linear patch embedding, learned positions, pre-norm transformer blocks
  (BatchNorm by default, see `frozen_batch_norm`), mean pooling over patches and a
  linear head to `horizon` steps, shared by the channels.

The anomaly detector reads a window `values` [batch, lookback, channels],
flattens it, encodes it through `layers` blocks down to a bottleneck of
hidden_size / 4, decodes it back, and outputs the `reconstruction` and the
`anomaly_score`: the mean squared reconstruction error of each window [batch].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    TransformerStack,
    class_name, inference, read_spec, single_tower_knobs, training, weight_nbytes,
)
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import ONES, ZEROS, InputSpec, Model, ModuleDef, Value, normal
from metagen.ir.types import DType, TensorType

DEFAULT_LOOKBACK, DEFAULT_HORIZON = 96, 24
SCALE_EPS = 1e-5  # transformers' PatchTSTStdScaler minimum_scale

PATCHTST_CONVENTIONS = dict(
    hidden_size=None, head_dim=32, activation="gelu", norm="batchnorm", norm_eps=1e-5, norm_position="pre",
    bias=True, pooling="mean", patch_size=16, patch_stride=8,
)
AUTOENCODER_CONVENTIONS = dict(activation="relu")


@dataclass
class TimeSeriesConfig(TransformerStack):
    pooling: str | None = spec_key()
    patch_size: int | None = spec_key()
    patch_stride: int | None = spec_key()
    variant: str = derived("patchtst")  # or "autoencoder"
    bias: bool = derived(True)
    position: str = derived("learned")
    lookback: int = derived(DEFAULT_LOOKBACK)
    horizon: int = derived(DEFAULT_HORIZON)
    channels: int = derived(1)
    num_patches: int = derived(0)


def patch_count(a: Any) -> int:
    return (max(a["lookback"], a["patch_size"]) - a["patch_size"]) // a["patch_stride"] + 1


class TimeSeries(Family):
    name = "time_series"
    pipeline_tag = "time-series-forecasting"
    doc = "PatchTST forecaster, or a window autoencoder with an anomaly score."
    inputs_doc = "past_values (forecasting) or values (reconstruction): float32 [batch, lookback, channels]"
    outputs_doc = (
        "prediction: float32 [batch, horizon, channels]; or reconstruction [batch, lookback, channels] and "
        "anomaly_score [batch]"
    )
    accepts_families = ("auto", "transformer", "mlp")
    built = "a time-series model"
    rules = (
        Rule(("time_series",), ("time_series",), ("forecasting", None), "PatchTST"),
        Rule(("time_series",), ("time_series",), ("reconstruction",), "window autoencoder; anomaly score output"),
    )
    default_objective = "forecasting"
    tasks = ("time_series_forecast", "anomaly_detection")
    norms = ("batchnorm", "layernorm", "rmsnorm")
    unit = UnitOfWork("window", "sample")
    default_budget = 1_000_000
    default_budget_source = "PatchTST with transformers' defaults (d = 128, 3 layers: 0.6M at 90 -> 30 steps; Nie et al. 2023)"
    config = TimeSeriesConfig
    tiny_doc = (
        "lookback 34 (2 steps dropped before 7 patches of 8, stride 4), horizon 8, at most 3 channels, d = 32, "
        "2 heads, 2 layers; the autoencoder: hidden 32, 2 blocks"
    )

    def configure(self, ctx: CompileContext) -> None:
        cfg = TimeSeriesConfig()
        cfg.variant = "autoencoder" if objective_name_of(ctx) == "reconstruction" else "patchtst"
        cfg.update(PATCHTST_CONVENTIONS if cfg.variant == "patchtst" else AUTOENCODER_CONVENTIONS)
        read_spec(ctx, cfg)
        if "heads" in ctx.pinned or "head_dim" in ctx.pinned:
            cfg.head_dim = cfg.head_dim if "head_dim" in ctx.pinned else None
        task = ctx.spec.task
        cfg.lookback = task.lookback or DEFAULT_LOOKBACK
        cfg.horizon = task.horizon or DEFAULT_HORIZON
        cfg.channels = task.num_outputs or 1
        for key, value in (("lookback", task.lookback), ("horizon", task.horizon)):
            if value is None and (key == "lookback" or cfg.variant == "patchtst"):
                ctx.sink.note(task.loc(), f"task.{key} is not given; using {cfg[key]} steps")
        arch = ctx.spec.architecture
        if cfg.variant == "patchtst":
            if cfg.patch_size > cfg.lookback:
                ctx.sink.error(self.key_loc(ctx, "patch_size"), f"architecture.patch_size {cfg.patch_size} is longer than the lookback of {cfg.lookback} steps")
            if cfg.pooling not in ("mean", "none"):
                ctx.sink.error(arch.loc("pooling"), f"architecture.pooling '{cfg.pooling}': PatchTST pools 'mean' over patches or 'none' (flattens them)")
            if cfg.activation in T.GATED:
                ctx.sink.error(arch.loc("activation"), f"architecture.activation '{cfg.activation}' is gated; PatchTST takes an ungated one")
            cfg.num_patches = patch_count(cfg) if cfg.patch_size <= cfg.lookback else 0
        ctx.arch = cfg

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if "hidden_size" in ctx.pinned and "layers" in ctx.pinned:
            return None
        depth = [] if "layers" in ctx.pinned else ["layers"]
        pinned_d = ctx.arch["hidden_size"] if "hidden_size" in ctx.pinned else None
        if ctx.arch.variant == "autoencoder":
            return Knobs([{"hidden_size": d} for d in ([pinned_d] if pinned_d else range(32, 8192 + 1, 32))], depth, ideal_depth=lambda w: 2.0)
        return single_tower_knobs(ctx, lambda cfg, pinned: T.derive(cfg, pinned, False), ideal_depth=lambda w: 3.0)

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a.update(lookback=34, horizon=8, channels=min(a["channels"], 3), hidden_size=32, layers=2)
        if a["variant"] == "patchtst":
            a.update(patch_size=8, patch_stride=4, heads=2, kv_heads=2, head_dim=16, ffn_size=64)
            a["num_patches"] = patch_count(a)

    def finalize(self, ctx: CompileContext) -> str | None:
        if ctx.arch.variant == "patchtst":
            return T.derive(ctx.arch, ctx.pinned, False)
        return None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc="PatchTST forecaster." if a.variant == "patchtst" else "Window autoencoder.")
        name = "past_values" if a.variant == "patchtst" else "values"
        x = top.input(name, TensorType(DType.f32, ("batch", a.lookback, a.channels)))
        if a.variant == "patchtst":
            out = patchtst(mb, top, a, x)
            top_def = top.ret(out, names=["prediction"])
            keys = [k for k in TimeSeriesConfig.spec_keys()]
        else:
            recon, score = autoencoder(mb, top, a, x)
            top_def = top.ret(recon, score, names=["reconstruction", "anomaly_score"])
            keys = ["hidden_size", "layers", "activation"]
        config = a.pick(keys)
        config.update(variant=a.variant, lookback=a.lookback, channels=a.channels)
        if a.variant == "patchtst":
            config.update(horizon=a.horizon, num_patches=a.num_patches)
        return mb.finish(
            top_def, name=top_def.name, spec_name=ctx.spec.name,
            inputs=[InputSpec(name, x.type, "normal", doc="the window, time along axis 1, channels last")],
            config=config, family=self.name, symbols={"batch": "batch size (windows)"},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Weights plus one window: PatchTST's channels x patches tokens through one
        block (4d + ffn per token, heads x patches^2 scores); the autoencoder's few
        hidden widths."""
        a = ctx.arch
        if a.variant == "patchtst":
            n = a.channels * a.num_patches
            acts = n * (4 * a.hidden_size + a.ffn_size) + a.channels * a.heads * a.num_patches ** 2
            stored = a.layers * 17 * n * a.hidden_size * 2
        else:
            acts = 2 * a.lookback * a.channels + 4 * a.hidden_size * (a.layers + 1)
            stored = 2 * acts
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts * 4), "training": training(params, stored, stored)}


def objective_name_of(ctx: CompileContext) -> str:
    """The spec's first objective (the model is not built yet: no output-based default)."""
    training_section = getattr(ctx.spec, "training", None)
    names = list(training_section.get("objective") or []) if training_section is not None else []
    return names[0] if names else "forecasting"


# ---------------------------------------------------------------- PatchTST


def frozen_batch_norm(mb: ModelBuilder, dim: int, eps: float, x_type: TensorType) -> ModuleDef:
    """BatchNorm over the last axis in its inference form, with the running
    statistics at their initial values (mean 0, variance 1): x / sqrt(1 + eps) *
    weight + bias. A trained checkpoint's statistics fold into weight and bias
    (driver/hf.py); in training it is a per-channel affine, as torchvision's
    FrozenBatchNorm2d."""
    b = mb.module("FrozenBatchNorm", doc="BatchNorm in inference form (statistics folded into weight and bias).")
    x = b.input("x", x_type)
    w = b.param("weight", (dim,), ONES, hint="weight")
    bias = b.param("bias", (dim,), ZEROS, hint="bias")
    y = b.op("scale", x, factor=1.0 / math.sqrt(1.0 + eps), hint="x")
    return b.ret(b.op("add", b.op("mul", y, w, hint="x"), bias, hint="x"))


def patchtst_block(mb: ModelBuilder, a: Any, x_type: TensorType) -> ModuleDef:
    """transformers' PatchTSTEncoderLayer without channel attention: pre-norm
    (`pre_norm=True`) or post-norm residual attention and feed-forward."""
    init_out = 0.02 / math.sqrt(2 * a["layers"])
    attn = T.attention_module(mb, a, x_type, causal=False, rope=False, init_out=init_out)
    mlp = T.mlp_module(mb, a, x_type, init_out=init_out)
    norm = frozen_batch_norm(mb, a["hidden_size"], float(a["norm_eps"]), x_type) if a["norm"] == "batchnorm" else None
    b = mb.module("Block", doc=f"PatchTST encoder layer ({a['norm_position']}-norm, {a['norm']}).")
    x = b.input("x", x_type)
    for name in ("attn_norm", "mlp_norm"):
        if norm is not None:
            b.sub(name, norm)
        else:
            T.norm_layer(b, name, a)
    b.sub("attn", attn)
    b.sub("mlp", mlp)
    if a["norm_position"] == "pre":
        x = b.op("add", x, b.call("attn", b.call("attn_norm", x, hint="h"), hint="h"), hint="x")
        x = b.op("add", x, b.call("mlp", b.call("mlp_norm", x, hint="h"), hint="h"), hint="x")
    else:
        x = b.call("attn_norm", b.op("add", x, b.call("attn", x, hint="h"), hint="x"), hint="x")
        x = b.call("mlp_norm", b.op("add", x, b.call("mlp", x, hint="h"), hint="x"), hint="x")
    return b.ret(x)


def instance_norm(top: ModuleBuilder, x: Value) -> tuple[Value, Value, Value]:
    """(x - loc) / scale per (row, channel) over time; loc and scale [batch, 1, channels]."""
    loc = top.op("unsqueeze", top.op("mean", x, axis=1, hint="loc"), axes=(1,), hint="loc")
    centered = top.op("sub", x, loc, hint="centered")
    var = top.op("mean", top.op("mul", centered, centered, hint="sq"), axis=1, hint="var")
    scale = top.op("unsqueeze", top.op("sqrt", var, eps=SCALE_EPS, hint="scale"), axes=(1,), hint="scale")
    return top.op("div", centered, scale, hint="x"), loc, scale


def patchtst(mb: ModelBuilder, top: ModuleBuilder, a: Any, x: Value) -> Value:
    d, n, c = a["hidden_size"], a["num_patches"], a["channels"]
    p, s = a["patch_size"], a["patch_stride"]
    x, loc, scale = instance_norm(top, x)
    series = top.op("transpose", x, perm=(0, 2, 1), hint="series")  # [batch, channels, lookback]
    start = a["lookback"] - (p + s * (n - 1))
    if start:
        series = top.op("slice", series, axis=2, start=start, end=a["lookback"], hint="series")
    patches = top.op("frames", series, size=p, step=s, hint="patches")  # [batch, channels, n, p]
    top.layer("patch_embed", "linear", in_features=p, out_features=d)
    h = top.call("patch_embed", patches, hint="h")
    pos = top.param("pos_embed", (n, d), normal(0.02), hint="pos_embed")
    h = top.op("reshape", top.op("add", h, pos, hint="h"), shape=(-1, n, d), hint="h")  # channels fold into the batch
    x_type = TensorType(DType.f32, (f"batch*{c}" if c > 1 else "batch", n, d))
    top.repeat("blocks", patchtst_block(mb, a, x_type), a["layers"])
    h = top.call("blocks", h, hint="h")
    if a["pooling"] == "mean":
        pooled, width = top.op("mean", h, axis=1, hint="pooled"), d
    else:
        pooled, width = top.op("reshape", h, shape=(-1, n * d), hint="pooled"), n * d
    top.layer("head", "linear", in_features=width, out_features=a["horizon"])
    y = top.op("reshape", top.call("head", pooled, hint="y"), shape=(-1, c, a["horizon"]), hint="y")
    y = top.op("transpose", y, perm=(0, 2, 1), hint="y")  # [batch, horizon, channels]
    return top.op("add", top.op("mul", y, scale, hint="y"), loc, hint="prediction")


# ---------------------------------------------------------------- anomaly detection


def dense_block(mb: ModelBuilder, a: Any, width: int, out: int, name: str) -> ModuleDef:
    b = mb.module(name, doc="Linear and activation.")
    x = b.input("x", TensorType(DType.f32, ("batch", width)))
    b.layer("linear", "linear", in_features=width, out_features=out)
    return b.ret(b.op(a["activation"], b.call("linear", x, hint="h"), hint="h"))


def autoencoder(mb: ModelBuilder, top: ModuleBuilder, a: Any, x: Value) -> tuple[Value, Value]:
    h_dim, flat = a["hidden_size"], a["lookback"] * a["channels"]
    latent = max(1, h_dim // 4)
    v = top.op("reshape", x, shape=(-1, flat), hint="flat")
    top.sub("encoder_in", dense_block(mb, a, flat, h_dim, "EncoderIn"))
    hidden = dense_block(mb, a, h_dim, h_dim, "Hidden")
    top.repeat("encoder", hidden, a["layers"])
    top.layer("to_latent", "linear", in_features=h_dim, out_features=latent)
    top.sub("decoder_in", dense_block(mb, a, latent, h_dim, "DecoderIn"))
    top.repeat("decoder", hidden, a["layers"])
    top.layer("to_window", "linear", in_features=h_dim, out_features=flat)
    h = top.call("encoder", top.call("encoder_in", v, hint="h"), hint="h")
    z = top.call("to_latent", h, hint="z")
    h = top.call("decoder", top.call("decoder_in", z, hint="h"), hint="h")
    recon = top.op("reshape", top.call("to_window", h, hint="recon"), shape=(-1, a["lookback"], a["channels"]), hint="reconstruction")
    err = top.op("sub", x, recon, hint="err")
    sq = top.op("mul", err, err, hint="sq")
    score = top.op("mean", top.op("mean", sq, axis=2, hint="sq"), axis=1, hint="anomaly_score")
    return recon, score
