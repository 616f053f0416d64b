"""IR -> ONNX ModelProto, built node by node with `onnx.helper` (never by tracing).

ONNX has no classes, so modules are inlined: every node is named after the module
path it came from (`/blocks.3/attn/qkv_proj/MatMul`), `Repeat` children are unrolled
with one set of initializers per layer, and initializers carry the canonical names in
the canonical (PyTorch) layout. A linear layer therefore reads `Transpose(W)`;
onnxruntime folds that transpose of a constant once, when the session is created.

Two tables map ops to emitters: `LAYERS` for the parametric ops, `OPS` for the rest.
A few ops have a fused ONNX form (opset 23 `Attention`, `RMSNormalization`,
`RotaryEmbedding`); `FUSED` overrides the decomposed emitter when `fused=True`.
The default (`DEFAULT_FUSED`) was chosen by measurement, see docs/backends.md.

Weights: given ones are embedded; otherwise `init(seed)`'s canonical weights are drawn
with the very numpy code the Python backends embed (`init_code.INIT_FUNCTIONS`), so they
are bit-identical. Parameters are always initializers with the canonical names, never
graph inputs: inline up to protobuf's 2 GiB, in an external data file above it, and
above `MATERIALIZE_LIMIT` of init weights the graph is written alone and `metagen
weights init` writes the data later (`lower_to_onnx`). Weights are written one tensor
at a time, drawn ahead by a few threads (`made`): memory stays near the largest tensor.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

from metagen import __version__
from metagen.backends.init_code import draw as _draw
from metagen.backends.init_code import sine_positions_2d as _sine_positions_2d
from metagen.backends.lowering import EmitError, LoweringContext, first_loc, missing_rule
from metagen.diagnostics import Diagnostic, Loc
from metagen.ir import ops
from metagen.ir.graph import Layer, Model, ModuleDef, Node, Repeat, Sub, Value
from metagen.ir.names import Namespace, sanitize
from metagen.ir.types import DType, TensorType
from metagen.outputs import Content, Streamed

OPSET = 23
IR_VERSION = 11  # the ONNX IR version that opset 23 needs (onnx 1.18+)
PRODUCER = "metagen"
# Above this many bytes of float32 weights, `init(seed)` is not drawn by default: the
# graph is written alone, its initializers pointing into a data file that `metagen
# weights init` writes later (256 Mi parameters; GPT-2 small's 0.5 GB is embedded, the
# tutorial's 1B default model would be a 4 GB file of random numbers).
MATERIALIZE_LIMIT = 1024**3
# Above this many bytes the weights go to an external data file (protobuf's 2 GiB
# message limit, less headroom for the graph itself).
PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2
DATA_ALIGN = 64  # each tensor's offset in the external data file
MAX_WORKERS = 8  # threads drawing weights
AHEAD_BYTES = 256 * 1024**2  # weights made ahead of the writer, unless one tensor is larger
INIT_SEED_PROP = "metagen.init_seed"  # metadata of a graph-only file: the seed its weights will be drawn with
PENDING_PROP = "metagen.weights_pending"
# Fused opset-23 Attention/RMSNormalization/RotaryEmbedding ran 3-4% faster than the
# decomposed form in onnxruntime 1.32 (GPT-2 small and a 125M llama, 1 x 256 tokens,
# bench/onnx_bench.py --parts c); see docs/backends.md.
DEFAULT_FUSED = True

ONNX_DTYPES = {
    DType.f32: TensorProto.FLOAT,
    DType.f16: TensorProto.FLOAT16,
    DType.bf16: TensorProto.BFLOAT16,
    DType.i64: TensorProto.INT64,
    DType.i32: TensorProto.INT32,
    DType.bool: TensorProto.BOOL,
}


class OnnxEmitError(EmitError):
    pass


def _error(model: Model, message: str) -> OnnxEmitError:
    return OnnxEmitError([Diagnostic("error", model.loc or Loc("<ir>"), message)])


# ------------------------------------------------------------------ graph building


class GraphBuilder:
    """Accumulates nodes, unique value names and deduplicated constants."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.values = Namespace()
        self.consts: dict[tuple, str] = {}
        self.node_names = Namespace()
        self.types: dict[str, TensorType] = {}  # ONNX value name -> IR type (for checks)

    def fresh(self, hint: str) -> str:
        return self.values.fresh(hint or "v")

    def node(self, scope: str, op_type: str, inputs: list[str], n_out: int = 1, out: list[str] | None = None, **attrs) -> list[str]:
        name = self.node_names.fresh(f"{scope}/{op_type}")
        outs = out or [self.fresh(f"{scope}/{op_type}_output_{i}".lstrip("/")) for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def const(self, value: np.ndarray) -> str:
        value = np.asarray(value)  # (ascontiguousarray would make a scalar 1-D)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self.consts:
            name = self.fresh(f"const_{len(self.consts)}")
            tensor = onnx.numpy_helper.from_array(value, name)
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"/Constant_{len(self.consts)}", value=tensor))
            self.consts[key] = name
        return self.consts[key]


@dataclass
class Emit(LoweringContext):
    """An ONNX rule's context: the common one (attributes, operand and result types,
    location) plus its layer's parameter names (canonical) and `op`/`const` helpers
    scoped to the node's module path."""

    g: GraphBuilder | None = None
    scope: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        return self.g.node(self.scope, op_type, list(inputs), **attrs)[0]

    def const(self, value) -> str:
        return self.g.const(np.asarray(value))

    def f32(self, value: float) -> str:
        return self.const(np.array(value, dtype=np.float32))

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))


# ------------------------------------------------------------------ layer ops


def _linear(e: Emit, x: str) -> str:
    y = e.op("MatMul", x, e.op("Transpose", e.params["weight"], perm=[1, 0]))
    return e.op("Add", y, e.params["bias"]) if "bias" in e.params else y


def _embedding(e: Emit, ids: str) -> str:
    return e.op("Gather", e.params["weight"], ids, axis=0)


def _layer_norm(e: Emit, x: str) -> str:
    a = e.a
    scale = e.params.get("weight") or e.const(np.ones(a["dim"], np.float32))
    inputs = [x, scale] + ([e.params["bias"]] if "bias" in e.params else [])
    return e.op("LayerNormalization", *inputs, axis=-1, epsilon=float(a["eps"]))


def _rms_norm(e: Emit, x: str) -> str:
    ms = e.op("ReduceMean", e.op("Mul", x, x), e.ints(-1), keepdims=1)
    inv = e.op("Reciprocal", e.op("Sqrt", e.op("Add", ms, e.f32(e.a["eps"]))))
    return e.op("Mul", e.op("Mul", x, inv), e.params["weight"])


def _rms_norm_fused(e: Emit, x: str) -> str:
    return e.op("RMSNormalization", x, e.params["weight"], axis=-1, epsilon=float(e.a["eps"]))


def _group_norm(e: Emit, x: str) -> str:
    a = e.a
    c = a["channels"]
    grouped = e.op("Reshape", x, e.ints(0, a["groups"], -1))
    mean = e.op("ReduceMean", grouped, e.ints(-1), keepdims=1)
    centered = e.op("Sub", grouped, mean)
    var = e.op("ReduceMean", e.op("Mul", centered, centered), e.ints(-1), keepdims=1)
    normed = e.op("Div", centered, e.op("Sqrt", e.op("Add", var, e.f32(a["eps"]))))
    y = e.op("Reshape", normed, e.op("Shape", x))
    w = e.op("Reshape", e.params["weight"], e.ints(c, 1, 1))
    b = e.op("Reshape", e.params["bias"], e.ints(c, 1, 1))
    return e.op("Add", e.op("Mul", y, w), b)


def _conv2d(e: Emit, x: str) -> str:
    a = e.a
    k, s, p = a["kernel"], a["stride"], a["padding"]
    inputs = [x, e.params["weight"]] + ([e.params["bias"]] if "bias" in e.params else [])
    return e.op("Conv", *inputs, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])


def _batch_norm(e: Emit, x: str) -> str:
    p = e.params
    return e.op(
        "BatchNormalization", x, p["weight"], p["bias"], p["running_mean"], p["running_var"],
        epsilon=float(e.a["eps"]), momentum=1.0 - float(e.a["momentum"]),
    )


def _sine_positions(e: Emit, x: str) -> str:
    """A constant: the grid is static (the IR's H and W are concrete)."""
    h, w = e.in_types[0].shape[2], e.in_types[0].shape[3]
    table = _sine_positions_2d(h, w, e.a["features"], e.a["temperature"], e.a["scale"])
    return e.const(table.astype(np.float32))


def _max_pool2d(e: Emit, x: str) -> str:
    k, s, p = e.a["kernel"], e.a["stride"], e.a["padding"]
    return e.op("MaxPool", x, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])


LAYERS: dict[str, Callable[..., str]] = {
    "linear": _linear,
    "embedding": _embedding,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "group_norm": _group_norm,
    "conv2d": _conv2d,
    "batch_norm": _batch_norm,
}

# ------------------------------------------------------------------ primitive ops


def _split_heads(e: Emit, x: str, heads: int, head_dim: int) -> str:
    """[B, S, H*D] -> [B, H, S, D]."""
    return e.op("Transpose", e.op("Reshape", x, e.ints(0, 0, heads, head_dim)), perm=[0, 2, 1, 3])


def _attention(e: Emit, q: str, k: str, v: str, *bias: str) -> str:
    a = e.a
    h, kvh, d = a["heads"], a["kv_heads"], a["head_dim"]
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(d)
    qh = _split_heads(e, q, h, d)
    kh, vh = (k, v) if a["split_kv"] else (_split_heads(e, k, kvh, d), _split_heads(e, v, kvh, d))
    if kvh != h:
        rep = h // kvh

        def widen(t: str) -> str:
            """[B, KVH, S, D] -> [B, H, S, D], each kv head repeated for its queries."""
            t5 = e.op("Expand", e.op("Unsqueeze", t, e.ints(2)), _expand_shape(e, t, rep))
            return e.op("Reshape", t5, e.ints(0, h, -1, d))

        kh, vh = widen(kh), widen(vh)
    scores = e.op("MatMul", e.op("Mul", qh, e.f32(scale)), e.op("Transpose", kh, perm=[0, 1, 3, 2]))
    if a["causal"]:
        sq = e.op("Shape", q, start=1, end=2)
        sk = e.op("Shape", kh, start=2, end=3)
        full = e.op("ConstantOfShape", e.op("Concat", sq, sk, axis=0), value=helper.make_tensor("value", TensorProto.FLOAT, [1], [-np.inf]))
        scores = e.op("Add", scores, e.op("Trilu", full, e.ints(1), upper=1))
    for b in bias:
        scores = e.op("Add", scores, b)
    out = e.op("MatMul", e.op("Softmax", scores, axis=-1), vh)
    return e.op("Reshape", e.op("Transpose", out, perm=[0, 2, 1, 3]), e.ints(0, 0, -1))


def _expand_shape(e: Emit, t: str, rep: int) -> str:
    """[B, KVH, rep, S, D] for a [B, KVH, S, D] tensor."""
    return e.op("Concat", e.op("Shape", t, start=0, end=2), e.ints(rep), e.op("Shape", t, start=2), axis=0)


def _attention_fused(e: Emit, q: str, k: str, v: str, *bias: str) -> str:
    if bias or e.a["split_kv"]:  # onnxruntime 1.32's Attention gives a row whose keys are all masked other
        return _attention(e, q, k, v, *bias)  # values than the other backends (a left pad's own row), and takes
        # q, k and v in one layout: decomposed
    a = e.a
    attrs = {"q_num_heads": a["heads"], "kv_num_heads": a["kv_heads"], "is_causal": int(a["causal"])}
    if a["scale"] is not None:
        attrs["scale"] = float(a["scale"])
    return e.op("Attention", q, k, v, *bias, **attrs)


def _attention_bias(e: Emit, mask: str, x: str) -> str:
    """0 where query i (the last Sq of Sk positions) may see key j, float32's lowest
    elsewhere: [B, 1, Sq, Sk]."""
    a = e.a
    zero, one = e.const(np.array(0, np.int64)), e.const(np.array(1, np.int64))
    sq = e.op("Squeeze", e.op("Shape", x, start=1, end=2), e.ints(0))
    sk = e.op("Squeeze", e.op("Shape", mask, start=1, end=2), e.ints(0))
    i = e.op("Unsqueeze", e.op("Add", e.op("Range", zero, sq, one), e.op("Sub", sk, sq)), e.ints(1))  # [Sq, 1]
    j = e.op("Unsqueeze", e.op("Range", zero, sk, one), e.ints(0))  # [1, Sk]
    allowed = e.op("Unsqueeze", e.op("Cast", mask, to=TensorProto.BOOL), e.ints(1, 2))  # [B, 1, 1, Sk]
    if a["causal"]:
        allowed = e.op("And", allowed, e.op("LessOrEqual", j, i))
    if a["window"]:
        allowed = e.op("And", allowed, e.op("Greater", j, e.op("Sub", i, e.const(np.array(a["window"], np.int64)))))
    full = e.op("Concat", e.op("Shape", mask, start=0, end=1), e.ints(1), e.op("Shape", x, start=1, end=2), e.op("Shape", mask, start=1, end=2), axis=0)
    allowed = e.op("Expand", allowed, full)
    return e.op("Where", allowed, e.f32(0.0), e.f32(float(np.finfo(np.float32).min)))


def _split_heads_op(e: Emit, x: str) -> str:
    return _split_heads(e, x, e.a["heads"], e.a["head_dim"])


def _merge_heads(e: Emit, x: str) -> str:
    t = e.in_types[0]
    return e.op("Reshape", e.op("Transpose", x, perm=[0, 2, 1, 3]), e.ints(0, 0, t.shape[1] * t.shape[3]))


def _rope_tables(e: Emit, x: str, positions: tuple[str, ...] = ()) -> tuple[str, str]:
    """cos and sin of position * inv_freq: [S, D/2] at positions 0..S-1, [B, S, D/2]
    at given position ids."""
    a = e.a
    if positions:
        pos = e.op("Cast", positions[0], to=TensorProto.FLOAT)
    else:
        seq = e.op("Squeeze", e.op("Shape", x, start=1, end=2), e.ints(0))
        pos = e.op("Cast", e.op("Range", e.const(np.array(0, np.int64)), seq, e.const(np.array(1, np.int64))), to=TensorProto.FLOAT)
    freqs = e.op("Mul", e.op("Unsqueeze", pos, e.ints(-1)), e.const(ops.rope_inv_freq(a)))
    return e.op("Cos", freqs), e.op("Sin", freqs)


def _rope(e: Emit, x: str, *positions: str) -> str:
    a = e.a
    h, d = a["heads"], a["head_dim"]
    cos, sin = _rope_tables(e, x, positions)
    cos = e.op("Unsqueeze", e.op("Concat", cos, cos, axis=-1), e.ints(-2))  # [(B,) S, 1, D]
    sin = e.op("Unsqueeze", e.op("Concat", sin, sin, axis=-1), e.ints(-2))
    xh = e.op("Reshape", x, e.ints(0, 0, h, d))
    x1 = e.op("Slice", xh, e.ints(0), e.ints(d // 2), e.ints(-1))
    x2 = e.op("Slice", xh, e.ints(d // 2), e.ints(d), e.ints(-1))
    rotated = e.op("Concat", e.op("Neg", x2), x1, axis=-1)
    y = e.op("Add", e.op("Mul", xh, cos), e.op("Mul", rotated, sin))
    return e.op("Reshape", y, e.ints(0, 0, -1))


def _rope_fused(e: Emit, x: str, *positions: str) -> str:
    cos, sin = _rope_tables(e, x, positions)
    shape = e.op("Concat", e.op("Shape", x, start=0, end=2), e.ints(e.a["head_dim"] // 2), axis=0)
    cos, sin = e.op("Expand", cos, shape), e.op("Expand", sin, shape)  # [B, S, D/2]
    return e.op("RotaryEmbedding", x, cos, sin, num_heads=e.a["heads"], interleaved=0)


def _l2_normalize(e: Emit, x: str) -> str:
    norm = e.op("ReduceL2", x, e.ints(e.a["axis"]), keepdims=1)
    return e.op("Div", x, e.op("Max", norm, e.f32(1e-12)))


def _matmul(e: Emit, x: str, y: str) -> str:
    if e.a["transpose_b"]:
        r = e.in_types[1].rank
        y = e.op("Transpose", y, perm=list(range(r - 2)) + [r - 1, r - 2])
    return e.op("MatMul", x, y)


def _positions(e: Emit, x: str) -> str:
    ax = e.a["axis"] % e.in_types[0].rank
    n = e.op("Squeeze", e.op("Shape", x, start=ax, end=ax + 1), e.ints(0))
    return e.op("Range", e.const(np.array(0, np.int64)), n, e.const(np.array(1, np.int64)))


def _stack(e: Emit, *xs: str) -> str:
    ax = e.a["axis"]
    ax = ax + e.in_types[0].rank + 1 if ax < 0 else ax
    return e.op("Concat", *[e.op("Unsqueeze", x, e.ints(ax)) for x in xs], axis=ax)


def _slice(e: Emit, x: str) -> str:
    a = e.a
    return e.op("Slice", x, e.ints(a["start"]), e.ints(a["end"]), e.ints(a["axis"]))


def _prepend(e: Emit, x: str, token: str) -> str:
    shape = e.op("Concat", e.op("Shape", x, start=0, end=1), e.ints(1, 1), axis=0)
    return e.op("Concat", e.op("Expand", token, shape), x, axis=1)


def _gather_argmax(e: Emit, x: str, ids: str) -> str:
    idx = e.op("ArgMax", ids, axis=-1, keepdims=1)  # [B, 1]
    idx = e.op("Expand", e.op("Unsqueeze", idx, e.ints(2)), e.op("Concat", e.op("Shape", idx), e.op("Shape", x, start=2), axis=0))
    return e.op("Squeeze", e.op("GatherElements", x, idx, axis=1), e.ints(1))


def _upsample(e: Emit, x: str) -> str:
    f = float(e.a["factor"])
    scales = e.const(np.array([1.0, 1.0, f, f], np.float32))
    return e.op("Resize", x, "", scales, mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _timestep_embedding(e: Emit, t: str) -> str:
    a = e.a
    half = a["dim"] // 2
    exponent = np.float32(-math.log(a["max_period"])) * np.arange(half, dtype=np.float32)
    freqs = np.exp(exponent / np.float32(half - a["freq_shift"])).astype(np.float32)
    args = e.op("Mul", e.op("Unsqueeze", e.op("Cast", t, to=TensorProto.FLOAT), e.ints(1)), e.const(freqs[None, :]))
    first, second = (e.op("Cos", args), e.op("Sin", args)) if a["flip_sin_to_cos"] else (e.op("Sin", args), e.op("Cos", args))
    return e.op("Concat", first, second, axis=-1)


def _cross_entropy(e: Emit, logits: str, labels: str) -> str:
    c = e.in_types[0].shape[-1]
    flat = e.op("Reshape", logits, e.ints(-1, c) if isinstance(c, int) else e.op("Concat", e.ints(-1), e.op("Shape", logits, start=-1), axis=0))
    lab = e.op("Reshape", labels, e.ints(-1))
    if e.in_types[1].dtype != DType.i64:
        lab = e.op("Cast", lab, to=TensorProto.INT64)
    return e.op("SoftmaxCrossEntropyLoss", flat, lab, reduction="mean")


def _masked_cross_entropy(e: Emit, logits: str, labels: str, mask: str) -> str:
    c = e.in_types[0].shape[-1]
    flat = e.op("Reshape", logits, e.ints(-1, c) if isinstance(c, int) else e.op("Concat", e.ints(-1), e.op("Shape", logits, start=-1), axis=0))
    lab = e.op("Reshape", labels, e.ints(-1))
    if e.in_types[1].dtype != DType.i64:
        lab = e.op("Cast", lab, to=TensorProto.INT64)
    per_token = e.op("SoftmaxCrossEntropyLoss", flat, lab, reduction="none")
    weight = e.op("Reshape", mask, e.ints(-1))
    total = e.op("ReduceSum", e.op("Mul", per_token, weight), keepdims=0)
    count = e.op("Max", e.op("ReduceSum", weight, keepdims=0), e.f32(1.0))
    return e.op("Div", total, count)


def _dice_loss(e: Emit, logits: str, labels: str) -> str:
    rank, c = e.in_types[0].rank, e.in_types[0].shape[1]
    p = e.op("Softmax", logits, axis=1)
    lab = labels if e.in_types[1].dtype == DType.i64 else e.op("Cast", labels, to=TensorProto.INT64)
    y = e.op("OneHot", lab, e.const(np.array(c, np.int64)), e.const(np.array([0.0, 1.0], np.float32)), axis=1)
    axes = e.ints(0, *range(2, rank))
    inter = e.op("ReduceSum", e.op("Mul", p, y), axes, keepdims=0)
    total = e.op("Add", e.op("ReduceSum", p, axes, keepdims=0), e.op("ReduceSum", y, axes, keepdims=0))
    smooth = e.f32(e.a["smooth"])
    ratio = e.op("Div", e.op("Add", e.op("Mul", inter, e.f32(2.0)), smooth), e.op("Add", total, smooth))
    return e.op("Sub", e.f32(1.0), e.op("ReduceMean", ratio, keepdims=0))


def _mse(e: Emit, x: str, y: str) -> str:
    d = e.op("Sub", x, y)
    return e.op("ReduceMean", e.op("Mul", d, d), keepdims=0)


def _frames(e: Emit, x: str) -> str:
    count, size = e.out_types[0].shape[-2], e.a["size"]
    index = np.arange(count, dtype=np.int64)[:, None] * e.a["step"] + np.arange(size, dtype=np.int64)
    return e.op("Gather", x, e.const(index), axis=-1)


def _scatter(e: Emit, src: str, index: str, like: str, fill: float, reduction: str) -> str:
    """ScatterND of src [E, ...] into like.shape[0] rows filled with `fill`."""
    shape = e.op("Concat", e.op("Shape", like, end=1), e.op("Shape", src, start=1), axis=0)
    base = e.op("ConstantOfShape", shape, value=onnx.numpy_helper.from_array(np.array([fill], np.float32)))
    rows = e.op("Unsqueeze", e.op("Cast", index, to=TensorProto.INT64), e.ints(-1))
    return e.op("ScatterND", base, rows, src, reduction=reduction)


def _degree(e: Emit, index: str, like: str) -> str:
    ones = e.op("ConstantOfShape", e.op("Shape", index), value=onnx.numpy_helper.from_array(np.array([1.0], np.float32)))
    return _scatter(e, ones, index, like, 0.0, "add")


def _segment_softmax(e: Emit, s: str, index: str, like: str) -> str:
    idx = e.op("Cast", index, to=TensorProto.INT64)
    top = e.op("Gather", _scatter(e, s, idx, like, float("-inf"), "max"), idx, axis=0)
    ex = e.op("Exp", e.op("Sub", s, top))
    return e.op("Div", ex, e.op("Gather", _scatter(e, ex, idx, like, 0.0, "add"), idx, axis=0))


def _huber(e: Emit, x: str, y: str) -> str:
    d = e.op("Sub", x, y)
    a = e.op("Abs", d)
    delta = e.a["delta"]
    quad = e.op("Mul", e.op("Mul", d, d), e.f32(0.5))
    lin = e.op("Mul", e.op("Sub", a, e.f32(0.5 * delta)), e.f32(delta))
    return e.op("ReduceMean", e.op("Where", e.op("LessOrEqual", a, e.f32(delta)), quad, lin), keepdims=0)


def _quick_gelu(e: Emit, x: str) -> str:
    return e.op("Mul", x, e.op("Sigmoid", e.op("Mul", x, e.f32(1.702))))


def _unsqueeze(e: Emit, x: str) -> str:
    return e.op("Unsqueeze", x, e.ints(*sorted(e.a["axes"])))


OPS: dict[str, Callable[..., str]] = {
    "add": lambda e, x, y: e.op("Add", x, y),
    "sub": lambda e, x, y: e.op("Sub", x, y),
    "mul": lambda e, x, y: e.op("Mul", x, y),
    "div": lambda e, x, y: e.op("Div", x, y),
    "scale": lambda e, x: e.op("Mul", x, e.f32(e.a["factor"])),
    "gelu": lambda e, x: e.op("Gelu", x, approximate="none"),
    "gelu_tanh": lambda e, x: e.op("Gelu", x, approximate="tanh"),
    "quick_gelu": _quick_gelu,
    "silu": lambda e, x: e.op("Mul", x, e.op("Sigmoid", x)),
    "relu": lambda e, x: e.op("Relu", x),
    "tanh": lambda e, x: e.op("Tanh", x),
    "sigmoid": lambda e, x: e.op("Sigmoid", x),
    "exp": lambda e, x: e.op("Exp", x),
    "softmax": lambda e, x: e.op("Softmax", x, axis=e.a["axis"]),
    "l2_normalize": _l2_normalize,
    "matmul": _matmul,
    "linear_fn": lambda e, x, w: e.op("MatMul", x, e.op("Transpose", w, perm=[1, 0])),
    "attention": _attention,
    "attention_bias": _attention_bias,
    "split_heads": _split_heads_op,
    "merge_heads": _merge_heads,
    "rope": _rope,
    "positions": _positions,
    "concat": lambda e, *xs: e.op("Concat", *xs, axis=e.a["axis"]),
    "stack": _stack,
    "slice": _slice,
    "select": lambda e, x: e.op("Gather", x, e.const(np.array(e.a["index"], np.int64)), axis=e.a["axis"]),
    "transpose": lambda e, x: e.op("Transpose", x, perm=list(e.a["perm"])),
    "unsqueeze": _unsqueeze,
    "prepend": _prepend,
    "flatten_spatial": lambda e, x: e.op("Transpose", e.op("Reshape", x, e.ints(0, 0, -1)), perm=[0, 2, 1]),
    "unflatten_spatial": lambda e, x, like: e.op(
        "Reshape", e.op("Transpose", x, perm=[0, 2, 1]), e.op("Concat", e.ints(0, 0), e.op("Shape", like, start=2), axis=0)
    ),
    "pad2d": lambda e, x: e.op("Pad", x, e.ints(0, 0, e.a["pads"][0], e.a["pads"][2], 0, 0, e.a["pads"][1], e.a["pads"][3])),
    "merge_axes": lambda e, x: e.op(
        "Reshape", x, e.op("Concat", e.ints(*[0] * e.a["start"], -1), e.op("Shape", x, start=e.a["start"] + e.a["count"]), axis=0)
    ),
    "split_axis": lambda e, x, like: e.op(
        "Reshape", x, e.op(
            "Concat", e.ints(*[0] * e.a["axis"]), *[e.op("Shape", like, start=i, end=i + 1) for i in e.a["like_axes"]],
            e.op("Shape", x, start=e.a["axis"] + 1), axis=0,
        )
    ),
    "expand_axis": lambda e, x, like: e.op(
        "Expand", e.op("Unsqueeze", x, e.ints(e.a["axis"])), e.op(
            "Concat", e.op("Shape", x, start=0, end=e.a["axis"]),
            e.op("Shape", like, start=e.a["like_axis"], end=e.a["like_axis"] + 1), e.op("Shape", x, start=e.a["axis"]), axis=0,
        )
    ),
    # ONNX has no assertion: a size that is not a multiple fails at the U-Net's skip concat.
    "require_multiple": lambda e, x: e.op("Identity", x),
    "mean": lambda e, x: e.op("ReduceMean", x, e.ints(e.a["axis"]), keepdims=0),
    "gather_argmax": _gather_argmax,
    "upsample_nearest": _upsample,
    "max_pool2d": _max_pool2d,
    "sine_positions_2d": _sine_positions,
    "timestep_embedding": _timestep_embedding,
    "cast": lambda e, x: e.op("Cast", x, to=ONNX_DTYPES[DType(e.a["dtype"])]),
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "masked_cross_entropy": _masked_cross_entropy,
    "dropout": lambda e, x: e.op("Identity", x),
    "div": lambda e, x, y: e.op("Div", x, y),
    "sqrt": lambda e, x: e.op("Sqrt", e.op("Add", x, e.f32(e.a["eps"])) if e.a["eps"] else x),
    "reshape": lambda e, x: e.op("Reshape", x, e.ints(*e.a["shape"])),
    "frames": _frames,
    "huber": _huber,
    "log_softmax": lambda e, x: e.op("LogSoftmax", x, axis=e.a["axis"]),
    "take_along": lambda e, x, i: e.op("Squeeze", e.op("GatherElements", x, e.op("Unsqueeze", i, e.ints(-1)), axis=-1), e.ints(-1)),
    "clip": lambda e, x: e.op("Clip", x, e.f32(e.a["low"]), e.f32(e.a["high"])),
    "minimum": lambda e, x, y: e.op("Min", x, y),
    "gather_rows": lambda e, x, i: e.op("Gather", x, e.op("Cast", i, to=TensorProto.INT64), axis=0),
    "scatter_add": lambda e, s, i, like: _scatter(e, s, i, like, 0.0, "add"),
    "segment_softmax": _segment_softmax,
    "leaky_relu": lambda e, x: e.op("LeakyRelu", x, alpha=e.a["slope"]),
    "degree": _degree,
    "dice_loss": _dice_loss,
}

# The opset-23 fused forms, used instead of the entries above when fused=True.
FUSED: dict[str, Callable[..., str]] = {
    "attention": _attention_fused,
    "rms_norm": _rms_norm_fused,
    "rope": _rope_fused,
}

# ------------------------------------------------------------------ lowering


class Lowering:
    def __init__(self, model: Model, fused: bool = DEFAULT_FUSED):
        self.model = model
        self.fused = fused
        self.g = GraphBuilder()
        self.fp32_nodes: set[int] = set()  # indices into g.nodes that stay float32 in a float16 graph

    def emit(self, op: str, fn: Callable[..., str], e: Emit, ins: list[str]) -> str:
        start = len(self.g.nodes)
        out = fn(e, *ins)
        if op in FP32_OPS:
            self.fp32_nodes.update(range(start, len(self.g.nodes)))
        return out

    def _emitter(self, op: str, layer: bool) -> Callable[..., str] | None:
        if self.fused and op in FUSED:
            return FUSED[op]
        return (LAYERS if layer else OPS).get(op)

    def context(self, md: ModuleDef, node: Node, op: str, attrs: dict, scope: str, operands: list[str]) -> Emit:
        return Emit(
            op_name=op,
            a=attrs,
            operands=tuple(operands),
            in_types=tuple(o.type for o in node.operands),
            out_types=tuple(r.type for r in node.results),
            loc=first_loc(node.loc, md.loc, self.model.loc),
            g=self.g,
            scope=scope,
        )

    def lower_module(self, md: ModuleDef, path: list[str], args: list[str]) -> list[str]:
        """Inline `md` at module path `path` (child names) on ONNX values `args`."""
        prefix = "".join(p + "." for p in path)
        scope = "/" + "/".join(path) if path else ""
        env: dict[int, str] = {id(v): a for v, a in zip(md.inputs, args)}
        g = self.g
        for node in md.nodes:
            ins = [env[id(o)] for o in node.operands]
            if node.kind == "param":
                env[id(node.results[0])] = prefix + node.target
                continue
            if node.kind == "call":
                outs = self.lower_call(md, node, path, ins)
            else:
                e = self.context(md, node, node.op, node.attrs, scope, ins)
                fn = self._emitter(node.op, layer=False)
                if fn is None:
                    raise missing_rule("onnx", "op", node.op, e.loc)
                outs = [self.emit(node.op, fn, e, ins)]
            for r, name in zip(node.results, outs):
                env[id(r)] = name
                g.types[name] = r.type
        return [env[id(v)] for v in md.outputs]

    def lower_call(self, md: ModuleDef, node: Node, path: list[str], ins: list[str]) -> list[str]:
        from metagen.ir import ops

        child = md.children[node.target]
        here = path + [node.target]
        if isinstance(child, Layer):
            prefix = "".join(p + "." for p in here)
            attrs = ops.get(child.op).resolve_attrs(child.attr_dict())
            e = self.context(md, node, child.op, attrs, "/" + "/".join(here), ins)
            e.params = {k: prefix + k for k in ops.layer_params(child)}
            fn = self._emitter(child.op, layer=True)
            if fn is None:
                raise missing_rule("onnx", "layer op", child.op, e.loc)
            return [self.emit(child.op, fn, e, ins)]
        sub = self.model.modules[child.module]
        if isinstance(child, Sub):
            return self.lower_module(sub, here, ins)
        k = child.per_layer
        shared = len(ins) - child.count * k
        x, outs = ins[0], []
        for i in range(child.count):
            mine = ins[shared + i * k : shared + (i + 1) * k]
            x, *rest = self.lower_module(sub, here + [str(i)], [x] + ins[1:shared] + mine)
            self.g.types[x] = node.results[0].type
            outs += rest
        return [x] + outs


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_DTYPES[t.dtype], [d for d in t.shape])


def weights_bytes(model: Model) -> int:
    return sum(p.numel * p.type.dtype.nbytes for _, p in model.walk_params())


# ------------------------------------------------------------------ weights


@dataclass(frozen=True)
class WeightSource:
    """One initializer: its canonical name, shape, and how to make its float32 array
    (drawn as `init(seed)` draws it, or taken from given weights) when it is written."""

    name: str
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]
    dtype: str = "float32"  # as written: float16 in a `precision="fp16"` graph

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def onnx_type(self) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))

    def array(self) -> np.ndarray:
        arr = self.make()
        return arr if self.dtype == "float32" else arr.astype(self.dtype)


def _given(arr) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=np.float32)


def weight_sources(
    model: Model, weights: dict[str, np.ndarray] | None = None, seed: int = 0, dtype: str = "float32"
) -> list[WeightSource]:
    """Every parameter in canonical order; nothing is drawn or converted yet."""
    if weights is not None:
        _check_weights(model, weights)
    out = []
    for name, p in model.walk_params():
        shape = tuple(p.type.shape)
        if weights is not None:
            make = partial(_given, weights[name])
        else:
            make = partial(_draw, name, shape, p.init.scheme, dict(p.init.args), seed)
        out.append(WeightSource(name, shape, make, dtype))
    return out


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_WORKERS))


class made:
    """(source, array) for each source, in order, the arrays made ahead by `workers`
    threads from the moment this is created (`lower_to_onnx` creates it before it
    builds the graph, so drawing overlaps building and serializing it): numpy's
    generators release the GIL while they fill an array, and each tensor has its own
    seeded generator, so the bytes do not depend on the thread count or the timing. At most max(largest tensor, AHEAD_BYTES) bytes are made ahead
    of the consumer, so peak memory stays near the largest tensor, not the model.
    Iterate it once; dropped unread, what was not started yet is cancelled."""

    def __init__(self, sources: list[WeightSource], workers: int | None = None):
        self.sources = sources
        workers = _workers() if workers is None else workers
        self._pool = None
        if workers > 1 and len(sources) > 1:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="metagen-weights")
            self._budget = max([AHEAD_BYTES] + [s.nbytes for s in sources])
            self._pending: deque = deque()
            self._ahead = 0
            self._todo = iter(sources)
            self._next = next(self._todo, None)
            self._fill()

    def _fill(self) -> None:
        while self._next is not None and (not self._pending or self._ahead + self._next.nbytes <= self._budget):
            self._pending.append((self._next, self._pool.submit(self._next.array)))
            self._ahead += self._next.nbytes
            self._next = next(self._todo, None)

    def __iter__(self) -> Iterator[tuple[WeightSource, np.ndarray]]:
        if self._pool is None:
            for s in self.sources:
                yield s, _checked(s, s.array())
            return
        try:
            while True:
                self._fill()
                if not self._pending:
                    return
                s, future = self._pending.popleft()
                arr = future.result()
                self._ahead -= s.nbytes
                yield s, _checked(s, arr)
                del arr
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()
            self._next = None
            self._pool.shutdown(wait=False)

    def __del__(self) -> None:
        self.close()


def _checked(s: WeightSource, arr: np.ndarray) -> np.ndarray:
    if arr.shape != s.shape or arr.dtype != np.dtype(s.dtype):
        raise AssertionError(f"{s.name}: made {arr.dtype}{list(arr.shape)}, the graph declares {s.dtype}{list(s.shape)}")
    return arr


def _raw(arr: np.ndarray) -> memoryview:
    """The little-endian bytes of an array, without a copy where possible."""
    return memoryview(np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).reshape(-1).view(np.uint8))


def _offsets(sources: list[WeightSource]) -> list[int]:
    """Each tensor's offset in the external data file (64-byte aligned)."""
    out, offset = [], 0
    for s in sources:
        offset += (-offset) % DATA_ALIGN
        out.append(offset)
        offset += s.nbytes
    return out


def _external_initializers(sources: list[WeightSource], data_name: str) -> list[onnx.TensorProto]:
    out = []
    for s, offset in zip(sources, _offsets(sources)):
        t = onnx.TensorProto(name=s.name, dims=s.shape, data_type=s.onnx_type, data_location=TensorProto.EXTERNAL)
        for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(s.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        out.append(t)
    return out


def write_external_data(fh: BinaryIO, sources: list[WeightSource], workers: int | None = None, arrays: made | None = None) -> None:
    """The external data file: each tensor at its `_offsets` place, zero padding between;
    the arrays from `arrays` when given (a `made` of `sources` already drawing)."""
    pos = 0
    for (s, arr), offset in zip(made(sources, workers) if arrays is None else arrays, _offsets(sources)):
        fh.write(b"\0" * (offset - pos))
        fh.write(_raw(arr))
        pos = offset + s.nbytes


def _tensor_head(s: WeightSource) -> bytes:
    """A TensorProto's fields before its raw data: dims 1, data_type 2, name 8."""
    head = b"".join(b"\x08" + _varint(d) for d in s.shape)
    return head + b"\x10" + _varint(s.onnx_type) + _field(0x42, s.name.encode("utf-8"))


def write_inline(fh: BinaryIO, proto_bytes: bytes, sources: list[WeightSource], workers: int | None = None,
                 arrays: made | None = None) -> None:
    """A serialized ModelProto followed by `ModelProto{graph: GraphProto{initializer:
    [...]}}` in protobuf wire format. Protobuf concatenation merges the two (embedded
    messages merge, repeated fields append), so each weight goes from the generator
    to the file once, one tensor at a time. TensorProto's raw_data is field 9. The
    arrays come from `arrays` when given (a `made` of `sources` already drawing)."""
    fh.write(proto_bytes)
    if not sources:
        return
    heads = [_tensor_head(s) for s in sources]
    bodies = [len(h) + 1 + len(_varint(s.nbytes)) + s.nbytes for h, s in zip(heads, sources)]
    fh.write(b"\x3a" + _varint(sum(1 + len(_varint(b)) + b for b in bodies)))
    for (s, arr), head, body in zip(made(sources, workers) if arrays is None else arrays, heads, bodies):
        fh.write(b"\x2a" + _varint(body) + head + b"\x4a" + _varint(s.nbytes))
        fh.write(_raw(arr))


def _model_proto(
    model: Model, fused: bool, initializers: list[onnx.TensorProto], precision: str = "fp32"
) -> tuple[onnx.ModelProto, dict[str, TensorType]]:
    lw = Lowering(model, fused=fused)
    g = lw.g
    top = model.top_module
    for spec in model.inputs:
        g.values.taken.add(spec.name)
    for name, _ in model.walk_params():
        g.values.taken.add(name)
    for name in model.output_names:
        g.values.taken.add(name)
    outs = lw.lower_module(top, [], [spec.name for spec in model.inputs])
    for name, v, value in zip(model.output_names, outs, top.outputs):
        g.node("", "Identity", [v], out=[name])
        g.types[name] = value.type
    inputs = [_value_info(spec.name, spec.type) for spec in model.inputs]
    for spec in model.inputs:
        g.types[spec.name] = spec.type
    outputs = [_value_info(name, value.type) for name, value in zip(model.output_names, top.outputs)]
    nodes = g.nodes
    if precision == "fp16":
        nodes = _float16_nodes(model, lw, inputs, outputs)
    graph = helper.make_graph(nodes, sanitize(model.name) or "model", inputs, outputs, initializer=initializers)
    doc = f"{model.spec_name} ({model.family}), lowered by {PRODUCER} {__version__}"
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=__version__,
        ir_version=IR_VERSION,
        doc_string="".join(ch if ch.isprintable() else " " for ch in doc),
    )
    if precision != "fp32":
        helper.set_model_props(proto, {PRECISION_PROP: precision})
    return proto, g.types


# ------------------------------------------------------------------ precision

PRECISIONS = ("fp32", "fp16", "int8")
WEIGHT_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "float32"}
# The IR ops whose ONNX nodes stay float32 in a float16 graph: norms, softmax (and the
# attention holding it), losses, and the sin/cos tables of large angles (RoPE,
# timestep embeddings), which float16 cannot resolve past a position of ~2048.
FP32_OPS = frozenset(
    {"layer_norm", "rms_norm", "group_norm", "softmax", "attention", "l2_normalize", "rope", "timestep_embedding",
     "cross_entropy", "masked_cross_entropy", "mse", "attention_bias"}
)
FP32_INPUTS = frozenset({("Resize", 2)})  # inputs ONNX types float32 whatever the data's type (Resize's scales)
PRECISION_PROP = "metagen.precision"


def _float16_nodes(model: Model, lw: Lowering, inputs: list, outputs: list) -> list[onnx.NodeProto]:
    """The float32 graph's nodes computing in float16: parameters are float16, graph
    inputs and outputs stay float32, the nodes of `FP32_OPS` (`lw.fp32_nodes`) stay
    float32, and a `Cast` is put wherever a value crosses between the two (one per
    value and direction); float constants are copied to the precision each user wants
    (an epsilon of 1e-5 would not survive a float16 round trip)."""
    params = [(name, p.type) for name, p in model.walk_params()]
    probe = helper.make_model(
        helper.make_graph(lw.g.nodes, "probe", inputs + [_value_info(n, t) for n, t in params], outputs),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info, *inferred.output]}
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    out_names = {o.name for o in outputs}
    prec = {i.name: F32 for i in inputs} | {n: F16 for n, _ in params}
    consts: dict[str, onnx.NodeProto] = {}
    made_for: dict[tuple[str, int], str] = {}
    names = Namespace()
    for n in lw.g.nodes:
        names.taken.update(n.output)
    new: list[onnx.NodeProto] = []

    def use(v: str, want: int) -> str:
        if not v or elem.get(v) != F32:
            return v
        if v not in consts and prec.get(v) == want:
            return v
        key = (v, want)
        if key not in made_for:
            if v in consts:
                node = consts[v]
                if want == F32:
                    new.append(node)
                    made_for[key] = v
                else:
                    name = names.fresh(v + "_fp16")
                    value = onnx.numpy_helper.to_array(node.attribute[0].t).astype(np.float16)
                    new.append(helper.make_node("Constant", [], [name], name=node.name + "_fp16",
                                                value=onnx.numpy_helper.from_array(value, name)))
                    made_for[key] = name
            else:
                name = names.fresh(v + ("_fp32" if want == F32 else "_fp16"))
                new.append(helper.make_node("Cast", [v], [name], name=name + "/Cast", to=want))
                made_for[key] = name
        return made_for[key]

    for i, original in enumerate(lw.g.nodes):
        if original.op_type == "Constant" and elem.get(original.output[0]) == F32:
            consts[original.output[0]] = original
            continue
        want = F32 if i in lw.fp32_nodes or any(o in out_names for o in original.output) else F16
        node = onnx.NodeProto()
        node.CopyFrom(original)
        for j, x in enumerate(node.input):
            node.input[j] = use(x, F32 if (node.op_type, j) in FP32_INPUTS else want)
        if want == F16:
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to" and attr.i == F32:
                    attr.i = F16
                if node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == F32:
                    attr.t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
        for o in node.output:
            if elem.get(o) == F32:
                prec[o] = want
        new.append(node)
    return new


def _quantized_int8(model: Model, files: dict[str, bytes], data_name: str) -> dict[str, bytes]:
    """onnxruntime's dynamic quantization of the float32 files: int8 weights for
    MatMul (and Gather), activations quantized per call. Its pre-processing folds
    each linear layer's `Transpose(W)` into a constant first, which is what lets it
    find the weights; the int8 file's tensors therefore no longer carry the canonical
    names and layout (they are a derived artifact, not canonical weights)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    main = data_name[: -len(".data")] if data_name.endswith(".data") else "model.onnx"
    external = data_name in files
    with tempfile.TemporaryDirectory(prefix="metagen-int8-") as work:
        src, pre, out = (os.path.join(work, d) for d in ("fp32", "pre", "int8"))
        for d in (src, pre, out):
            os.mkdir(d)
        for rel, data in files.items():
            with open(os.path.join(src, rel or main), "wb") as f:
                f.write(data)
        quant_pre_process(os.path.join(src, main), os.path.join(pre, main), skip_symbolic_shape=True,
                          save_as_external_data=external, all_tensors_to_one_file=True, external_data_location=data_name)
        # MatMul, Gather and Conv only: the quantizer would take opset 23's `Attention` for
        # onnxruntime's contrib op of that name and emit a QAttention that cannot run
        quantize_dynamic(os.path.join(pre, main), os.path.join(out, main), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather", "Conv"], use_external_data_format=external)
        result = {}
        for rel in sorted(os.listdir(out)):
            with open(os.path.join(out, rel), "rb") as f:
                result["" if rel == main else rel] = f.read()
    proto = onnx.load_from_string(result[""])
    helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, PRECISION_PROP: "int8"})
    result[""] = proto.SerializeToString(deterministic=True)
    return result


def _pending_props(model: Model, seed: int, data_name: str) -> dict[str, str]:
    """What a graph-only file records so `metagen weights init` can finish it."""
    return {
        INIT_SEED_PROP: str(seed),
        PENDING_PROP: f"{data_name} not written: {weights_bytes(model)} bytes of init(seed={seed}) float32 weights; "
        "`metagen weights init RUN_DIR` writes it",
    }


def build_onnx(
    model: Model,
    weights: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    *,
    fused: bool = DEFAULT_FUSED,
    graph_only: bool = False,
    data_name: str = "model.onnx.data",
) -> tuple[onnx.ModelProto, dict[str, TensorType]]:
    """The ModelProto, every initializer inline (built with `onnx.numpy_helper`: the
    plain reference the streaming writers are tested against), or with `graph_only`
    the initializers pointing into `data_name`, which is not written; and the IR type
    of every value the IR names (for checking ONNX shape inference against the IR)."""
    sources = weight_sources(model, weights, seed)
    if graph_only:
        proto, types = _model_proto(model, fused, _external_initializers(sources, data_name))
        helper.set_model_props(proto, _pending_props(model, seed, data_name))
        return proto, types
    return _model_proto(model, fused, [onnx.numpy_helper.from_array(arr, s.name) for s, arr in made(sources, 1)])


def _check_weights(model: Model, weights: dict[str, np.ndarray]) -> None:
    want = {name: tuple(p.type.shape) for name, p in model.walk_params()}
    missing = sorted(set(want) - set(weights))
    extra = sorted(set(weights) - set(want))
    bad = sorted(n for n in want if n in weights and tuple(np.shape(weights[n])) != want[n])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. '{missing[0]}'")
    if extra:
        problems.append(f"{len(extra)} unknown tensor(s), e.g. '{extra[0]}'")
    if bad:
        problems.append(f"'{bad[0]}' has shape {list(np.shape(weights[bad[0]]))}, the model needs {list(want[bad[0]])}")
    if problems:
        raise _error(model, "the weights do not fit the model: " + "; ".join(problems))


FORMS = ("inline", "external", "graph_only")


def onnx_form(model: Model, weights_given: bool, materialize_limit: float | None = None, precision: str = "fp32") -> str:
    """The form `lower_to_onnx` chooses: "inline", "external" or "graph_only"."""
    size = weights_bytes(model) * np.dtype(WEIGHT_DTYPES[precision]).itemsize // 4
    limit = MATERIALIZE_LIMIT if materialize_limit is None else materialize_limit
    if not weights_given and size > limit:
        return "graph_only"
    return "external" if size > PROTOBUF_LIMIT else "inline"


def lower_to_onnx(
    model: Model,
    weights: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    data_name: str = "model.onnx.data",
    *,
    fused: bool = DEFAULT_FUSED,
    precision: str = "fp32",
    stream: bool = False,
    materialize_limit: float | None = None,
    form: str | None = None,
    workers: int | None = None,
) -> dict[str, Content]:
    """The ONNX files, keyed '' (the model) and `data_name` (its external data). The
    parameters are always initializers under their canonical names, in one of three
    forms (`onnx_form`), by the size of their weights:

    - inline (up to PROTOBUF_LIMIT): one file holding the weights;
    - external (above it, where protobuf cannot go): the model, whose initializers
      point into `data_name`, and `data_name`;
    - graph only (init weights above `materialize_limit`, default MATERIALIZE_LIMIT,
      and no weights given): the external form's model without its data file, and
      the seed in its metadata; `metagen weights init` writes the data later.

    `form` overrides the choice (`metagen weights init` finishes a graph-only file in
    the external form, so the graph keeps pointing where it did). With `stream`, a
    file carrying weights is a `Streamed`: nothing is drawn until it is written, then
    one tensor at a time (see `made`); otherwise bytes.

    `precision`: "fp32"; "fp16" (float16 weights and arithmetic, `FP32_OPS` kept in
    float32, inputs and outputs float32); "int8" (onnxruntime's dynamic quantization of
    the float32 graph, see `_quantized_int8`; bytes, never graph only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown ONNX precision {precision!r}; one of {PRECISIONS}")
    sources = weight_sources(model, weights, seed, WEIGHT_DTYPES[precision])
    form = form or onnx_form(model, weights is not None, materialize_limit, precision)
    if form not in FORMS:
        raise ValueError(f"unknown ONNX form {form!r}; one of {FORMS}")
    if precision == "int8":
        if form == "graph_only":
            raise _error(model, f"int8 quantizes the weights, and this model's init weights ({weights_bytes(model)} bytes "
                         "of float32) are above the size drawn by default: give the weights (--weights)")
        fp32 = lower_to_onnx(model, weights, seed, data_name, fused=fused, form=form, workers=workers)
        return _quantized_int8(model, fp32, data_name)
    # The weights start drawing now, on their own threads, while this one builds the
    # graph; the first write takes them, any later write draws afresh.
    started = [made(sources, workers)] if form != "graph_only" else []

    def arrays() -> made:
        return started.pop() if started else made(sources, workers)

    if form == "inline":
        proto, _ = _model_proto(model, fused, [], precision)
        head = proto.SerializeToString(deterministic=True)
        files: dict[str, Content] = {"": Streamed(lambda fh: write_inline(fh, head, sources, arrays=arrays()))}
    else:
        proto, _ = _model_proto(model, fused, _external_initializers(sources, data_name), precision)
        if form == "graph_only":
            helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **_pending_props(model, seed, data_name)})
            return {"": proto.SerializeToString(deterministic=True)}
        files = {"": proto.SerializeToString(deterministic=True),
                 data_name: Streamed(lambda fh: write_external_data(fh, sources, arrays=arrays()))}
    if not stream:
        files = {k: v.to_bytes() if isinstance(v, Streamed) else v for k, v in files.items()}
    return files


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def golden_text(files: dict[str, bytes]) -> bytes:
    """ONNX as onnx.printer text, initializer payloads replaced by a digest so the
    file stays readable (the weights themselves are covered by the differential and
    determinism tests)."""
    from onnx import printer

    model = onnx.load_from_string(files[""])
    lines = []
    for init in model.graph.initializer:
        payload = init.raw_data or init.SerializeToString()
        digest = hashlib.sha256(payload).hexdigest()[:16]
        lines.append(f"# initializer {init.name} {list(init.dims)} sha256:{digest}")
        init.ClearField("raw_data")
        for fld in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
            init.ClearField(fld)
        init.ClearField("external_data")
        init.data_location = onnx.TensorProto.DEFAULT
    text = printer.to_text(model)
    return ("\n".join(lines) + ("\n" if lines else "") + text.rstrip("\n") + "\n").encode("utf-8")


def lower_to_onnx_folder(
    model: Model, weights: dict[str, np.ndarray] | None = None, seed: int = 0, data_name: str = "model.onnx.data", **options
) -> dict[str, Content]:
    """The backend's output folder: `lower_to_onnx`'s files, plus a diffusion model's
    pipeline parts as graphs of their own (backends/onnx_pipeline.py). `options`
    (precision, stream, ...) apply to every graph."""
    files = lower_to_onnx(model, weights=weights, seed=seed, data_name=data_name, **options)
    if model.family == "diffusion_unet":
        from metagen.backends.onnx_pipeline import pipeline_files

        files.update(pipeline_files(model, weights, seed, **options))
    return files
