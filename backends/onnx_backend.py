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
with the very numpy code the Python backends embed (`pyemit.INIT_FUNCTIONS`). Models
whose float32 weights exceed `MATERIALIZE_LIMIT` get a graph-only form instead: every
parameter is a named graph input and nothing is allocated. Embedded weights larger
than the 2 GiB protobuf limit go to an external data file.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from metagen import __version__
from metagen.backends.lowering import EmitError, LoweringContext, first_loc, missing_rule
from metagen.backends.pyemit import INIT_FUNCTIONS
from metagen.diagnostics import Diagnostic, Loc
from metagen.ir import ops
from metagen.ir.graph import Layer, Model, ModuleDef, Node, Repeat, Sub, Value
from metagen.ir.names import Namespace, sanitize
from metagen.ir.types import DType, TensorType

OPSET = 23
IR_VERSION = 11  # the ONNX IR version that opset 23 needs (onnx 1.18+)
PRODUCER = "metagen"
# Above this many bytes of float32 weights, `init(seed)` is not drawn: the graph takes
# its parameters as inputs (256 Mi parameters; GPT-2 small's 0.5 GB is embedded, the
# tutorial's 1B default model would be a 4 GB file of random numbers).
MATERIALIZE_LIMIT = 1024**3
PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2  # leave headroom for the graph itself
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


def _draw_function() -> Callable:
    """`_draw` from the canonical init code every generated module embeds."""
    ns: dict[str, Any] = {"np": np, "zlib": zlib}
    exec(INIT_FUNCTIONS, ns)
    return ns["_draw"]


_draw = _draw_function()


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


LAYERS: dict[str, Callable[..., str]] = {
    "linear": _linear,
    "embedding": _embedding,
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "group_norm": _group_norm,
    "conv2d": _conv2d,
}

# ------------------------------------------------------------------ primitive ops


def _split_heads(e: Emit, x: str, heads: int, head_dim: int) -> str:
    """[B, S, H*D] -> [B, H, S, D]."""
    return e.op("Transpose", e.op("Reshape", x, e.ints(0, 0, heads, head_dim)), perm=[0, 2, 1, 3])


def _attention(e: Emit, q: str, k: str, v: str) -> str:
    a = e.a
    h, kvh, d = a["heads"], a["kv_heads"], a["head_dim"]
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(d)
    qh, kh, vh = _split_heads(e, q, h, d), _split_heads(e, k, kvh, d), _split_heads(e, v, kvh, d)
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
        sk = e.op("Shape", k, start=1, end=2)
        full = e.op("ConstantOfShape", e.op("Concat", sq, sk, axis=0), value=helper.make_tensor("value", TensorProto.FLOAT, [1], [-np.inf]))
        scores = e.op("Add", scores, e.op("Trilu", full, e.ints(1), upper=1))
    out = e.op("MatMul", e.op("Softmax", scores, axis=-1), vh)
    return e.op("Reshape", e.op("Transpose", out, perm=[0, 2, 1, 3]), e.ints(0, 0, -1))


def _expand_shape(e: Emit, t: str, rep: int) -> str:
    """[B, KVH, rep, S, D] for a [B, KVH, S, D] tensor."""
    return e.op("Concat", e.op("Shape", t, start=0, end=2), e.ints(rep), e.op("Shape", t, start=2), axis=0)


def _attention_fused(e: Emit, q: str, k: str, v: str) -> str:
    a = e.a
    attrs = {"q_num_heads": a["heads"], "kv_num_heads": a["kv_heads"], "is_causal": int(a["causal"])}
    if a["scale"] is not None:
        attrs["scale"] = float(a["scale"])
    return e.op("Attention", q, k, v, **attrs)


def _rope_tables(e: Emit, x: str) -> tuple[str, str]:
    """cos and sin of position * inv_freq, [S, D/2]."""
    a = e.a
    seq = e.op("Squeeze", e.op("Shape", x, start=1, end=2), e.ints(0))
    pos = e.op("Cast", e.op("Range", e.const(np.array(0, np.int64)), seq, e.const(np.array(1, np.int64))), to=TensorProto.FLOAT)
    freqs = e.op("Mul", e.op("Unsqueeze", pos, e.ints(1)), e.const(ops.rope_inv_freq(a)[None, :]))
    return e.op("Cos", freqs), e.op("Sin", freqs)


def _rope(e: Emit, x: str) -> str:
    a = e.a
    h, d = a["heads"], a["head_dim"]
    cos, sin = _rope_tables(e, x)
    cos = e.op("Unsqueeze", e.op("Concat", cos, cos, axis=-1), e.ints(1))  # [S, 1, D]
    sin = e.op("Unsqueeze", e.op("Concat", sin, sin, axis=-1), e.ints(1))
    xh = e.op("Reshape", x, e.ints(0, 0, h, d))
    x1 = e.op("Slice", xh, e.ints(0), e.ints(d // 2), e.ints(-1))
    x2 = e.op("Slice", xh, e.ints(d // 2), e.ints(d), e.ints(-1))
    rotated = e.op("Concat", e.op("Neg", x2), x1, axis=-1)
    y = e.op("Add", e.op("Mul", xh, cos), e.op("Mul", rotated, sin))
    return e.op("Reshape", y, e.ints(0, 0, -1))


def _rope_fused(e: Emit, x: str) -> str:
    cos, sin = _rope_tables(e, x)
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


def _mse(e: Emit, x: str, y: str) -> str:
    d = e.op("Sub", x, y)
    return e.op("ReduceMean", e.op("Mul", d, d), keepdims=0)


def _quick_gelu(e: Emit, x: str) -> str:
    return e.op("Mul", x, e.op("Sigmoid", e.op("Mul", x, e.f32(1.702))))


def _unsqueeze(e: Emit, x: str) -> str:
    return e.op("Unsqueeze", x, e.ints(*sorted(e.a["axes"])))


OPS: dict[str, Callable[..., str]] = {
    "add": lambda e, x, y: e.op("Add", x, y),
    "sub": lambda e, x, y: e.op("Sub", x, y),
    "mul": lambda e, x, y: e.op("Mul", x, y),
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
    "timestep_embedding": _timestep_embedding,
    "cast": lambda e, x: e.op("Cast", x, to=ONNX_DTYPES[DType(e.a["dtype"])]),
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "masked_cross_entropy": _masked_cross_entropy,
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
                outs = [fn(e, *ins)]
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
            return [fn(e, *ins)]
        sub = self.model.modules[child.module]
        if isinstance(child, Sub):
            return self.lower_module(sub, here, ins)
        x = ins[0]
        for i in range(child.count):
            x = self.lower_module(sub, here + [str(i)], [x] + ins[1:])[0]
            self.g.types[x] = node.results[0].type
        return [x]


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_DTYPES[t.dtype], [d for d in t.shape])


def weights_bytes(model: Model) -> int:
    return sum(p.numel * p.type.dtype.nbytes for _, p in model.walk_params())


def build_onnx(
    model: Model,
    weights: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    *,
    fused: bool = DEFAULT_FUSED,
    graph_only: bool | None = None,
    detached: list[tuple[str, np.ndarray]] | None = None,
) -> tuple[onnx.ModelProto, dict[str, TensorType]]:
    """The ModelProto (weights inline, not yet split off) and the IR type of every
    value the IR names (for checking ONNX shape inference against the IR).

    `graph_only` None: decided by `MATERIALIZE_LIMIT` when no weights are given.
    `detached`: a list that receives the (name, array) initializers instead of the
    proto (`lower_to_onnx` writes them straight to the wire, saving two copies)."""
    if graph_only is None:
        graph_only = weights is None and weights_bytes(model) > MATERIALIZE_LIMIT
    if weights is not None:
        _check_weights(model, weights)
    lw = Lowering(model, fused=fused)
    g = lw.g
    top = model.top_module
    for spec in model.inputs:
        g.values.taken.add(spec.name)
    params = list(model.walk_params())
    for name, _ in params:
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
    initializers = []
    if graph_only:
        inputs += [_value_info(name, p.type) for name, p in params]
    else:
        for name, p in params:
            if weights is not None:
                arr = np.ascontiguousarray(weights[name], dtype=np.float32)
            else:
                arr = _draw(name, tuple(p.type.shape), p.init.scheme, dict(p.init.args), seed)
            if detached is not None:
                detached.append((name, arr))
            else:
                initializers.append(onnx.numpy_helper.from_array(arr, name))
    outputs = [_value_info(name, value.type) for name, value in zip(model.output_names, top.outputs)]
    graph = helper.make_graph(g.nodes, sanitize(model.name) or "model", inputs, outputs, initializer=initializers)
    doc = f"{model.spec_name} ({model.family}), lowered by {PRODUCER} {__version__}"
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=__version__,
        ir_version=IR_VERSION,
        doc_string="".join(ch if ch.isprintable() else " " for ch in doc),
    )
    if graph_only:
        helper.set_model_props(proto, {"metagen.graph_only": "parameters are graph inputs"})
    return proto, g.types


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


def _externalize(proto: onnx.ModelProto, data_name: str) -> bytes:
    """Move every initializer's bytes to one external blob (64-byte aligned)."""
    chunks: list[bytes] = []
    offset = 0
    for t in proto.graph.initializer:
        raw = t.raw_data
        pad = (-offset) % 64
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        chunks.append(raw)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
        offset += len(raw)
    return b"".join(chunks)


def lower_to_onnx(
    model: Model,
    weights: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    data_name: str = "model.onnx.data",
    *,
    fused: bool = DEFAULT_FUSED,
) -> dict[str, bytes]:
    """{"": ModelProto bytes}, plus {data_name: weight bytes} when the weights would
    not fit one protobuf message."""
    arrays: list[tuple[str, np.ndarray]] = []
    proto, _ = build_onnx(model, weights, seed, fused=fused, detached=arrays)
    if sum(a.nbytes for _, a in arrays) > PROTOBUF_LIMIT:
        proto.graph.initializer.extend(onnx.numpy_helper.from_array(a, n) for n, a in arrays)
        data = _externalize(proto, data_name)
        return {"": proto.SerializeToString(deterministic=True), data_name: data}
    return {"": proto.SerializeToString(deterministic=True) + _initializers_wire(arrays)}


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


def _initializers_wire(arrays: list[tuple[str, np.ndarray]]) -> bytes:
    """`ModelProto{graph: GraphProto{initializer: [...]}}` in protobuf wire format.
    Appended to a serialized ModelProto it merges into it (protobuf concatenation
    semantics: embedded messages merge, repeated fields append), so each weight is
    copied once instead of three times through `from_array`/`make_graph`/serialize.
    TensorProto fields: dims 1, data_type 2, name 8, raw_data 9 (little-endian)."""
    if not arrays:
        return b""
    parts = []
    for name, arr in arrays:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        head = b"".join(b"\x08" + _varint(d) for d in arr.shape)
        head += b"\x10" + _varint(TensorProto.FLOAT) + _field(0x42, name.encode("utf-8"))
        raw = memoryview(arr.astype("<f4", copy=False).reshape(-1).view(np.uint8))
        body_len = len(head) + 1 + len(_varint(len(raw))) + len(raw)
        parts += [b"\x2a", _varint(body_len), head, b"\x4a", _varint(len(raw)), raw]
    graph_len = sum(len(p) for p in parts)
    return b"".join([b"\x3a", _varint(graph_len)] + parts)


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
    model: Model, weights: dict[str, np.ndarray] | None = None, seed: int = 0, data_name: str = "model.onnx.data"
) -> dict[str, bytes]:
    """The backend's output folder: `lower_to_onnx`'s files, plus a diffusion model's
    pipeline parts as graphs of their own (backends/onnx_pipeline.py)."""
    files = lower_to_onnx(model, weights=weights, seed=seed, data_name=data_name)
    if model.family == "diffusion_unet":
        from metagen.backends.onnx_pipeline import pipeline_files

        files.update(pipeline_files(model, weights, seed))
    return files
