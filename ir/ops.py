"""Every op of the IR, declared once: operands, attributes with defaults, shape rule,
parameter shapes with init schemes (for layer ops), FLOP count and verifier.

Backends keep one table from op name to emitter; a missing entry is a compile error
at the op's location. Adding an op means declaring it here and giving each backend
its emitter.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from metagen.ir.graph import ONES, ZEROS, Init, Layer, Param, normal
from metagen.ir.types import Dim, DType, TensorType, dim_offset, dim_add, dim_div, dim_mul, eval_dim

REQUIRED = object()


class OpError(ValueError):
    """An op's operands or attributes do not fit its declaration."""


@dataclass(frozen=True)
class Attr:
    name: str
    type: str  # int | float | bool | str | ints | float?
    default: Any = REQUIRED
    choices: tuple = ()


@dataclass(frozen=True)
class OpDef:
    name: str
    operands: tuple[str, ...]  # a trailing "*name" is variadic
    attrs: tuple[Attr, ...]
    shape: Callable[[dict, list[TensorType]], list[TensorType]]
    flops: Callable[[dict, list[TensorType], list[TensorType], Mapping[str, int]], int]
    params: Callable[[dict], dict[str, Param]] | None = None
    doc: str = ""
    num_results: int = 1

    @functools.cached_property
    def attr_names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.attrs)

    @property
    def is_layer(self) -> bool:
        return self.params is not None

    def resolve_attrs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Attributes with defaults filled in, checked against the declaration."""
        names = self.attr_names
        for k in given:
            if k not in names:
                raise OpError(f"op '{self.name}' has no attribute '{k}'")
        out = {}
        for a in self.attrs:
            if a.name in given:
                v = given[a.name]
            elif a.default is REQUIRED:
                raise OpError(f"op '{self.name}' needs attribute '{a.name}'")
            else:
                v = a.default
            _check_attr(self.name, a, v)
            out[a.name] = v
        return out


def _attr_ok(kind: str, v: Any) -> bool:
    if kind == "int":
        return type(v) is int
    if kind == "float":
        return type(v) in (int, float)
    if kind == "bool":
        return type(v) is bool
    if kind == "str":
        return type(v) is str
    if kind == "float?":
        return v is None or type(v) in (int, float)
    if kind == "ints":
        return type(v) is tuple and all(type(x) is int for x in v)
    return False


def _check_attr(op: str, a: Attr, v: Any) -> None:
    if not _attr_ok(a.type, v):
        raise OpError(f"op '{op}': attribute '{a.name}' must be {a.type}, got {v!r}")
    if a.choices and v not in a.choices:
        raise OpError(f"op '{op}': attribute '{a.name}' must be one of {a.choices}, got {v!r}")


REGISTRY: dict[str, OpDef] = {}


def op(name: str, operands: tuple[str, ...], attrs: tuple[Attr, ...] = (), *, params=None, flops=None, doc="", num_results=1):
    def deco(shape_fn):
        REGISTRY[name] = OpDef(
            name, operands, attrs, shape_fn, flops or _flops_numel, params, doc or (shape_fn.__doc__ or ""), num_results
        )
        return shape_fn

    return deco


def get(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise OpError(f"unknown op '{name}'") from None


@functools.lru_cache(maxsize=4096)
def layer_params(layer: Layer) -> dict[str, Param]:
    """Parameters of a layer child (cached: layers are immutable values; callers
    must not mutate the returned dict)."""
    d = get(layer.op)
    return d.params(d.resolve_attrs(layer.attr_dict()))


def infer(name: str, attrs: Mapping[str, Any], operands: list[TensorType]) -> list[TensorType]:
    d = get(name)
    fixed = [o for o in d.operands if not o.startswith("*")]
    variadic = any(o.startswith("*") for o in d.operands)
    if len(operands) < len(fixed) or (not variadic and len(operands) != len(fixed)):
        raise OpError(f"op '{name}' takes {len(fixed)}{'+' if variadic else ''} operands, got {len(operands)}")
    return d.shape(d.resolve_attrs(attrs), operands)


# ---------------------------------------------------------------- helpers


def _flops_numel(attrs, ins, outs, b) -> int:
    return sum(o.numel(b) for o in outs)


def _flops_zero(attrs, ins, outs, b) -> int:
    return 0


def _same_dim(a: Dim, b: Dim) -> bool:
    return a == b


def _need_float(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise OpError(f"op '{op}' needs a float tensor, got {t}")


def _need_last(op: str, t: TensorType, n: int, what: str = "last dim") -> None:
    if not t.shape or not _same_dim(t.shape[-1], n):
        raise OpError(f"op '{op}': {what} of {t} must be {n}")


def broadcast(op: str, a: TensorType, b: TensorType) -> TensorType:
    if a.dtype != b.dtype:
        raise OpError(f"op '{op}': dtypes differ ({a} vs {b})")
    ra, rb = list(a.shape), list(b.shape)
    n = max(len(ra), len(rb))
    ra = [1] * (n - len(ra)) + ra
    rb = [1] * (n - len(rb)) + rb
    out = []
    for x, y in zip(ra, rb):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise OpError(f"op '{op}': shapes {a} and {b} do not broadcast")
    return TensorType(a.dtype, tuple(out))


def _axis(op: str, t: TensorType, axis: int) -> int:
    ax = axis + t.rank if axis < 0 else axis
    if not 0 <= ax < t.rank:
        raise OpError(f"op '{op}': axis {axis} out of range for {t}")
    return ax


# ---------------------------------------------------------------- layer ops

INIT_STD = Attr("init_std", "float", 0.02)


def _linear_params(a):
    p = {"weight": Param("weight", TensorType(DType.f32, (a["out_features"], a["in_features"])), normal(a["init_std"]))}
    if a["bias"]:
        p["bias"] = Param("bias", TensorType(DType.f32, (a["out_features"],)), ZEROS)
    return p


def _linear_flops(a, ins, outs, b):
    return 2 * a["in_features"] * outs[0].numel(b)


@op(
    "linear",
    ("x",),
    (Attr("in_features", "int"), Attr("out_features", "int"), Attr("bias", "bool", True), INIT_STD),
    params=_linear_params,
    flops=_linear_flops,
)
def _linear(a, ins):
    """y = x W^T + b over the last axis."""
    (x,) = ins
    _need_float("linear", x)
    _need_last("linear", x, a["in_features"])
    return [x.with_shape(x.shape[:-1] + (a["out_features"],))]


@op(
    "embedding",
    ("ids",),
    (Attr("num", "int"), Attr("dim", "int"), INIT_STD),
    params=lambda a: {"weight": Param("weight", TensorType(DType.f32, (a["num"], a["dim"])), normal(a["init_std"]))},
    flops=_flops_zero,
)
def _embedding(a, ins):
    """Rows of the table at integer ids."""
    (ids,) = ins
    if ids.dtype not in (DType.i64, DType.i32):
        raise OpError(f"op 'embedding' needs integer ids, got {ids}")
    return [TensorType(DType.f32, ids.shape + (a["dim"],))]


def _norm_params(a):
    p = {}
    if a.get("affine", True):
        p["weight"] = Param("weight", TensorType(DType.f32, (a["dim"],)), ONES)
        if a.get("bias", False):
            p["bias"] = Param("bias", TensorType(DType.f32, (a["dim"],)), ZEROS)
    return p


@op(
    "layer_norm",
    ("x",),
    (Attr("dim", "int"), Attr("eps", "float", 1e-5), Attr("affine", "bool", True), Attr("bias", "bool", True)),
    params=_norm_params,
    flops=lambda a, i, o, b: 8 * o[0].numel(b),
)
def _layer_norm(a, ins):
    """Normalize the last axis to zero mean and unit variance, then scale and shift."""
    (x,) = ins
    _need_float("layer_norm", x)
    _need_last("layer_norm", x, a["dim"])
    return [x]


@op(
    "rms_norm",
    ("x",),
    (Attr("dim", "int"), Attr("eps", "float", 1e-6)),
    params=lambda a: {"weight": Param("weight", TensorType(DType.f32, (a["dim"],)), ONES)},
    flops=lambda a, i, o, b: 4 * o[0].numel(b),
)
def _rms_norm(a, ins):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    (x,) = ins
    _need_float("rms_norm", x)
    _need_last("rms_norm", x, a["dim"])
    return [x]


@op(
    "group_norm",
    ("x",),
    (Attr("groups", "int"), Attr("channels", "int"), Attr("eps", "float", 1e-5)),
    params=lambda a: {
        "weight": Param("weight", TensorType(DType.f32, (a["channels"],)), ONES),
        "bias": Param("bias", TensorType(DType.f32, (a["channels"],)), ZEROS),
    },
    flops=lambda a, i, o, b: 8 * o[0].numel(b),
)
def _group_norm(a, ins):
    """GroupNorm over [B, C, H, W]."""
    (x,) = ins
    _need_float("group_norm", x)
    if x.rank != 4 or x.shape[1] != a["channels"]:
        raise OpError(f"op 'group_norm' needs [B, {a['channels']}, H, W], got {x}")
    if a["channels"] % a["groups"]:
        raise OpError(f"op 'group_norm': {a['groups']} groups do not divide {a['channels']} channels")
    return [x]


def _conv_params(a):
    k = a["kernel"]
    p = {"weight": Param("weight", TensorType(DType.f32, (a["out_channels"], a["in_channels"], k, k)), normal(a["init_std"]))}
    if a["bias"]:
        p["bias"] = Param("bias", TensorType(DType.f32, (a["out_channels"],)), ZEROS)
    return p


def _conv_out(n: Dim, k: int, s: int, p: int) -> Dim:
    if isinstance(n, int):
        return (n + 2 * p - k) // s + 1
    # Symbolic: n = base + c. Shapes the U-Net and autoencoder use stay exact:
    # "same" convolutions, and strided ones mapping a multiple of s to base / s.
    base, c = dim_offset(n)
    off = c + 2 * p - k
    if s == 1 and off + 1 >= 0:
        return dim_add(base, off + 1)
    if s > 1 and -s <= off < 0:
        return dim_div(base, s)
    raise OpError(f"conv2d (kernel {k}, stride {s}, padding {p}) needs concrete spatial dims, got {n!r}")


@op(
    "conv2d",
    ("x",),
    (
        Attr("in_channels", "int"),
        Attr("out_channels", "int"),
        Attr("kernel", "int"),
        Attr("stride", "int", 1),
        Attr("padding", "int", 0),
        Attr("bias", "bool", True),
        INIT_STD,
    ),
    params=_conv_params,
    flops=lambda a, i, o, b: 2 * a["in_channels"] * a["kernel"] ** 2 * o[0].numel(b),
)
def _conv2d(a, ins):
    """2-D convolution, NCHW, square kernel."""
    (x,) = ins
    _need_float("conv2d", x)
    if x.rank != 4 or x.shape[1] != a["in_channels"]:
        raise OpError(f"op 'conv2d' needs [B, {a['in_channels']}, H, W], got {x}")
    h = _conv_out(x.shape[2], a["kernel"], a["stride"], a["padding"])
    w = _conv_out(x.shape[3], a["kernel"], a["stride"], a["padding"])
    if (isinstance(h, int) and h < 1) or (isinstance(w, int) and w < 1):
        raise OpError(f"op 'conv2d': input {x} is smaller than the kernel")
    return [x.with_shape((x.shape[0], a["out_channels"], h, w))]


def _batch_norm_params(a):
    c = (a["channels"],)
    return {
        "weight": Param("weight", TensorType(DType.f32, c), ONES, buffer=a["frozen"]),
        "bias": Param("bias", TensorType(DType.f32, c), ZEROS, buffer=a["frozen"]),
        "running_mean": Param("running_mean", TensorType(DType.f32, c), ZEROS, buffer=True),
        "running_var": Param("running_var", TensorType(DType.f32, c), ONES, buffer=True),
    }


@op(
    "batch_norm",
    ("x",),
    (Attr("channels", "int"), Attr("eps", "float", 1e-5), Attr("momentum", "float", 0.1), Attr("frozen", "bool", False)),
    params=_batch_norm_params,
    flops=lambda a, i, o, b: 2 * o[0].numel(b),
)
def _batch_norm(a, ins):
    """Batch norm over [B, C, H, W] in inference form: (x - running_mean) /
    sqrt(running_var + eps) * weight + bias per channel. The running statistics are
    buffers (canonical weights outside the parameter count). Training programs run
    it in training form (batch statistics, biased variance; the running statistics
    move by `momentum` towards the batch mean and unbiased variance, as torch's).
    `frozen` (DETR's FrozenBatchNorm2d): weight and bias are buffers too, and the
    op stays in inference form in training."""
    (x,) = ins
    _need_float("batch_norm", x)
    if x.rank != 4 or x.shape[1] != a["channels"]:
        raise OpError(f"op 'batch_norm' needs [B, {a['channels']}, H, W], got {x}")
    if not 0.0 <= a["momentum"] <= 1.0:
        raise OpError(f"op 'batch_norm': momentum {a['momentum']} is outside [0, 1]")
    return [x]


@op(
    "max_pool2d",
    ("x",),
    (Attr("kernel", "int"), Attr("stride", "int", 1), Attr("padding", "int", 0)),
    flops=lambda a, i, o, b: a["kernel"] ** 2 * o[0].numel(b),
)
def _max_pool2d(a, ins):
    """Max over k x k windows of [B, C, H, W], NCHW; padding counts as -inf (never the max)."""
    (x,) = ins
    _need_float("max_pool2d", x)
    if x.rank != 4:
        raise OpError(f"op 'max_pool2d' needs [B, C, H, W], got {x}")
    if 2 * a["padding"] > a["kernel"]:
        raise OpError(f"op 'max_pool2d': padding {a['padding']} is more than half the kernel {a['kernel']}")
    h = _conv_out(x.shape[2], a["kernel"], a["stride"], a["padding"])
    w = _conv_out(x.shape[3], a["kernel"], a["stride"], a["padding"])
    if h < 1 or w < 1:
        raise OpError(f"op 'max_pool2d': input {x} is smaller than the kernel")
    return [x.with_shape((x.shape[0], x.shape[1], h, w))]


# ---------------------------------------------------------------- elementwise


def _binary(name: str, doc: str):
    @op(name, ("a", "b"), doc=doc)
    def _shape(a, ins):
        return [broadcast(name, ins[0], ins[1])]


_binary("add", "a + b with numpy broadcasting.")
_binary("sub", "a - b with numpy broadcasting.")
_binary("mul", "a * b with numpy broadcasting.")
_binary("div", "a / b with numpy broadcasting (IEEE: x / 0 is inf or nan).")


def _unary(name: str, doc: str, cost: int = 1):
    @op(name, ("x",), doc=doc, flops=lambda a, i, o, b: cost * o[0].numel(b))
    def _shape(a, ins):
        _need_float(name, ins[0])
        return [ins[0]]


_unary("gelu", "GELU with the exact erf form.", 8)
_unary("gelu_tanh", "GELU with the tanh approximation.", 8)
_unary("quick_gelu", "x * sigmoid(1.702 x), as in CLIP.", 4)
_unary("silu", "x * sigmoid(x).", 4)
_unary("relu", "max(x, 0).")
_unary("tanh", "tanh(x).", 4)
_unary("sigmoid", "1 / (1 + exp(-x)).", 4)
_unary("exp", "e^x.", 4)


@op("scale", ("x",), (Attr("factor", "float"),))
def _scale(a, ins):
    """x * factor, a compile-time constant."""
    _need_float("scale", ins[0])
    return [ins[0]]


@op("softmax", ("x",), (Attr("axis", "int", -1),), flops=lambda a, i, o, b: 5 * o[0].numel(b))
def _softmax(a, ins):
    """Softmax along one axis."""
    _axis("softmax", ins[0], a["axis"])
    return [ins[0]]


@op("l2_normalize", ("x",), (Attr("axis", "int", -1),), flops=lambda a, i, o, b: 3 * o[0].numel(b))
def _l2n(a, ins):
    """x / ||x||_2 along one axis."""
    _axis("l2_normalize", ins[0], a["axis"])
    return [ins[0]]


# ---------------------------------------------------------------- contractions


@op(
    "matmul",
    ("a", "b"),
    (Attr("transpose_b", "bool", False),),
    flops=lambda a, i, o, b: 2 * o[0].numel(b) * eval_dim(i[0].shape[-1], b),
)
def _matmul(a, ins):
    """a @ b (or a @ b^T) over the last two axes, leading axes broadcast."""
    x, y = ins
    if x.dtype != y.dtype:
        raise OpError(f"op 'matmul': dtypes differ ({x} vs {y})")
    if x.rank < 2 or y.rank < 2:
        raise OpError("op 'matmul' needs operands of rank >= 2")
    k2, n = (y.shape[-1], y.shape[-2]) if a["transpose_b"] else (y.shape[-2], y.shape[-1])
    if x.shape[-1] != k2:
        raise OpError(f"op 'matmul': inner dims differ ({x} @ {y})")
    lead = broadcast("matmul", x.with_shape(x.shape[:-2]), y.with_shape(y.shape[:-2])).shape
    return [x.with_shape(tuple(lead) + (x.shape[-2], n))]


@op(
    "linear_fn",
    ("x", "weight"),
    flops=lambda a, i, o, b: 2 * o[0].numel(b) * eval_dim(i[0].shape[-1], b),
)
def _linear_fn(a, ins):
    """x W^T with a weight owned elsewhere (a tied output head)."""
    x, w = ins
    if w.rank != 2:
        raise OpError("op 'linear_fn' needs a 2-D weight")
    _need_last("linear_fn", x, w.shape[1])
    return [x.with_shape(x.shape[:-1] + (w.shape[0],))]


def _attn_flops(a, ins, outs, b):
    q, k = ins[0], ins[1]
    bsz = eval_dim(q.shape[0], b)
    sq, sk = eval_dim(q.shape[1], b), eval_dim(k.shape[2 if a["split_kv"] else 1], b)
    return 4 * bsz * a["heads"] * sq * sk * a["head_dim"]


@op(
    "attention",
    ("q", "k", "v", "*bias"),
    (
        Attr("heads", "int"),
        Attr("kv_heads", "int"),
        Attr("head_dim", "int"),
        Attr("causal", "bool", False),
        Attr("scale", "float?", None),
        Attr("split_kv", "bool", False),
    ),
    flops=_attn_flops,
)
def _attention(a, ins):
    """Scaled dot-product attention on packed heads: q [B, Sq, H*D], k and v
    [B, Sk, KVH*D] -> [B, Sq, H*D]. Grouped-query when KVH < H. `scale` None means
    1/sqrt(D). An optional `bias` [B, 1, Sq, Sk] (from `attention_bias`) is added to
    the scores; it carries padding, causality and windows, so `causal` is then False.
    `split_kv`: k and v come with their heads split, [B, KVH, Sk, D], the KV cache's
    layout, so a decoder attends to its cache as it is (no re-pack per step)."""
    q, k, v = ins[:3]
    h, kvh, d = a["heads"], a["kv_heads"], a["head_dim"]
    if h % kvh:
        raise OpError(f"op 'attention': kv_heads {kvh} must divide heads {h}")
    for t in ins[:3]:
        _need_float("attention", t)
    if q.rank != 3:
        raise OpError(f"op 'attention' needs [B, S, H*D] queries, got {q}")
    _need_last("attention", q, h * d, "query width")
    if a["split_kv"]:
        for t in (k, v):
            if t.rank != 4 or not _same_dim(t.shape[1], kvh) or not _same_dim(t.shape[3], d):
                raise OpError(f"op 'attention' with split_kv needs [B, {kvh}, S, {d}] keys and values, got {t}")
        if k.shape[:3] != v.shape[:3]:
            raise OpError(f"op 'attention': keys {k} and values {v} differ in batch or length")
        k = k.with_shape((k.shape[0], k.shape[2], kvh * d))  # packed view, for the checks below
    else:
        for t in (k, v):
            if t.rank != 3:
                raise OpError(f"op 'attention' needs [B, S, H*D] operands, got {t}")
        _need_last("attention", k, kvh * d, "key width")
        _need_last("attention", v, kvh * d, "value width")
        if k.shape[:2] != v.shape[:2]:
            raise OpError(f"op 'attention': keys {k} and values {v} differ in batch or length")
    if len(ins) > 4:
        raise OpError("op 'attention' takes at most one bias")
    if len(ins) == 4:
        bias = ins[3]
        if a["causal"]:
            raise OpError("op 'attention': a bias carries causality; causal must be False with one")
        if bias.rank != 4 or bias.shape[1] != 1 or bias.shape[2:] != (q.shape[1], k.shape[1]):
            raise OpError(f"op 'attention': bias must be [B, 1, {q.shape[1]}, {k.shape[1]}], got {bias}")
    elif a["causal"] and q.shape[1] != k.shape[1]:
        raise OpError("op 'attention': causal attention needs equal query and key lengths")
    return [q]


# The additive mask value of a key a query may not see: float32's lowest, as
# transformers uses (not -inf, so a row with no visible key stays finite).
MASKED = -3.4028234663852886e38


@op("attention_bias", ("key_mask", "x"), (Attr("causal", "bool", False), Attr("window", "int", 0)), flops=_flops_numel)
def _attention_bias(a, ins):
    """The additive attention mask [B, 1, Sq, Sk] of a key mask [B, Sk] (1 = token,
    0 = padding) for the Sq queries of x [B, Sq, ...], which are the last Sq of the
    Sk positions (a KV cache holds the first Sk - Sq): 0 where query i may attend key
    j, else MASKED. Key j is visible when key_mask[b, j] = 1 and, if causal,
    j <= i + Sk - Sq, and, if window > 0, also j > i + Sk - Sq - window (Mistral's
    sliding window: the query itself and the window - 1 keys before it)."""
    m, x = ins
    if m.dtype not in (DType.i64, DType.i32) or m.rank != 2:
        raise OpError(f"op 'attention_bias' needs an integer key mask [B, S], got {m}")
    if x.rank < 2:
        raise OpError(f"op 'attention_bias' needs queries [B, S, ...], got {x}")
    if a["window"] < 0:
        raise OpError("op 'attention_bias': window must be >= 0")
    if a["window"] and not a["causal"]:
        raise OpError("op 'attention_bias': a sliding window needs causal attention")
    return [TensorType(DType.f32, (m.shape[0], 1, x.shape[1], m.shape[1]))]


@op("split_heads", ("x",), (Attr("heads", "int"), Attr("head_dim", "int")), flops=_flops_zero)
def _split_heads(a, ins):
    """Packed heads [B, S, H*D] -> [B, H, S, D] (the KV cache's layout)."""
    (x,) = ins
    if x.rank != 3:
        raise OpError(f"op 'split_heads' needs [B, S, H*D], got {x}")
    _need_last("split_heads", x, a["heads"] * a["head_dim"])
    return [x.with_shape((x.shape[0], a["heads"], x.shape[1], a["head_dim"]))]


@op("merge_heads", ("x",), flops=_flops_zero)
def _merge_heads(a, ins):
    """[B, H, S, D] -> packed heads [B, S, H*D]."""
    (x,) = ins
    if x.rank != 4 or not isinstance(x.shape[1], int) or not isinstance(x.shape[3], int):
        raise OpError(f"op 'merge_heads' needs [B, H, S, D] with concrete H and D, got {x}")
    return [x.with_shape((x.shape[0], x.shape[2], x.shape[1] * x.shape[3]))]


@op(
    "rope",
    ("x", "*positions"),
    (
        Attr("heads", "int"), Attr("head_dim", "int"), Attr("theta", "float", 10000.0),
        # Llama 3's frequency scaling (`scaling="llama3"`); the other four are its settings.
        Attr("scaling", "str", "none", choices=("none", "llama3")), Attr("factor", "float", 8.0),
        Attr("low_freq_factor", "float", 1.0), Attr("high_freq_factor", "float", 4.0),
        Attr("original_context", "int", 8192),
    ),
    flops=lambda a, i, o, b: 3 * o[0].numel(b),
)
def _rope(a, ins):
    """Rotary position embedding, rotate-half convention, on packed heads
    [B, S, H*D]: at positions 0..S-1, or at `positions` int64 [B, S] when given
    (left padding, a KV cache's offset); the frequencies are `rope_inv_freq(a)`."""
    x = ins[0]
    _need_float("rope", x)
    if x.rank != 3:
        raise OpError(f"op 'rope' needs [B, S, H*D], got {x}")
    _need_last("rope", x, a["heads"] * a["head_dim"])
    if a["head_dim"] % 2:
        raise OpError("op 'rope' needs an even head_dim")
    if len(ins) > 2:
        raise OpError("op 'rope' takes at most one positions operand")
    if len(ins) == 2:
        p = ins[1]
        if p.dtype not in (DType.i64, DType.i32) or p.shape != x.shape[:2]:
            raise OpError(f"op 'rope': positions must be integers [{x.shape[0]}, {x.shape[1]}], got {p}")
    if a["scaling"] == "llama3" and not (0 < a["low_freq_factor"] < a["high_freq_factor"] and a["factor"] > 0
                                         and a["original_context"] > 0):
        raise OpError("op 'rope': llama3 scaling needs 0 < low_freq_factor < high_freq_factor, factor > 0 "
                      "and original_context > 0")
    return [x]


def rope_inv_freq(a: Mapping[str, Any]):
    """The rotary frequencies [head_dim / 2] (float32 numpy) of a `rope` op's attributes:
    theta^(-2i/D), then, with `scaling="llama3"`, Llama 3's rescaling: wavelengths
    above original_context / low_freq_factor are divided by `factor`, those below
    original_context / high_freq_factor kept, those between interpolated. Computed in
    float32 step by step as transformers does, so every backend uses the same numbers."""
    import numpy as np

    f32 = np.float32
    d = a["head_dim"]
    inv = (f32(1.0) / (f32(a["theta"]) ** (np.arange(0, d, 2, dtype=np.int64).astype(f32) / f32(d)))).astype(f32)
    if a["scaling"] == "none":
        return inv
    factor, low, high, old = f32(a["factor"]), f32(a["low_freq_factor"]), f32(a["high_freq_factor"]), f32(a["original_context"])
    wavelen = (f32(2 * math.pi) / inv).astype(f32)
    scaled = np.where(wavelen > old / low, inv / factor, inv).astype(f32)
    smooth = ((old / wavelen - low) / (high - low)).astype(f32)
    smoothed = ((f32(1) - smooth) * scaled / factor + smooth * scaled).astype(f32)
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled).astype(f32)


# ---------------------------------------------------------------- data movement


@op("positions", ("x",), (Attr("axis", "int", 1),), flops=_flops_zero)
def _positions(a, ins):
    """0..n-1 (int64) where n is the length of x along `axis`."""
    ax = _axis("positions", ins[0], a["axis"])
    return [TensorType(DType.i64, (ins[0].shape[ax],))]


@op("concat", ("*xs",), (Attr("axis", "int"),), flops=_flops_zero)
def _concat(a, ins):
    """Join tensors along one axis."""
    first = ins[0]
    ax = _axis("concat", first, a["axis"])
    total: Dim = 0
    for t in ins:
        if t.rank != first.rank or t.dtype != first.dtype:
            raise OpError(f"op 'concat': {t} does not match {first}")
        for i, (x, y) in enumerate(zip(t.shape, first.shape)):
            if i != ax and x != y:
                raise OpError(f"op 'concat': {t} and {first} differ off the concat axis")
        d = t.shape[ax]
        total = total + d if isinstance(total, int) and isinstance(d, int) else _sym_sum(total, d)
    return [first.with_shape(first.shape[:ax] + (total,) + first.shape[ax + 1 :])]


def _sym_sum(a: Dim, b: Dim) -> Dim:
    if isinstance(b, int):
        return dim_add(a, b)
    if isinstance(a, int):
        return dim_add(b, a)
    return f"{a}+{b}"


@op("stack", ("*xs",), (Attr("axis", "int"),), flops=_flops_zero)
def _stack(a, ins):
    """Stack equal tensors along a new axis."""
    first = ins[0]
    for t in ins:
        if t != first:
            raise OpError(f"op 'stack': {t} differs from {first}")
    ax = a["axis"] + first.rank + 1 if a["axis"] < 0 else a["axis"]
    if not 0 <= ax <= first.rank:
        raise OpError("op 'stack': axis out of range")
    return [first.with_shape(first.shape[:ax] + (len(ins),) + first.shape[ax:])]


@op("slice", ("x",), (Attr("axis", "int"), Attr("start", "int"), Attr("end", "int")), flops=_flops_zero)
def _slice(a, ins):
    """x[start:end] along one axis (concrete bounds)."""
    (x,) = ins
    ax = _axis("slice", x, a["axis"])
    n = x.shape[ax]
    if not (0 <= a["start"] < a["end"]) or (isinstance(n, int) and a["end"] > n):
        raise OpError(f"op 'slice': [{a['start']}:{a['end']}] is out of range for {x} axis {ax}")
    return [x.with_shape(x.shape[:ax] + (a["end"] - a["start"],) + x.shape[ax + 1 :])]


@op("select", ("x",), (Attr("axis", "int"), Attr("index", "int")), flops=_flops_zero)
def _select(a, ins):
    """x[..., index, ...]: one entry along an axis, which is dropped."""
    (x,) = ins
    ax = _axis("select", x, a["axis"])
    n = x.shape[ax]
    if a["index"] < 0 or (isinstance(n, int) and a["index"] >= n):
        raise OpError(f"op 'select': index {a['index']} out of range for {x}")
    return [x.with_shape(x.shape[:ax] + x.shape[ax + 1 :])]


@op("transpose", ("x",), (Attr("perm", "ints"),), flops=_flops_zero)
def _transpose(a, ins):
    """Permute axes."""
    (x,) = ins
    if sorted(a["perm"]) != list(range(x.rank)):
        raise OpError(f"op 'transpose': perm {a['perm']} does not fit {x}")
    return [x.with_shape(tuple(x.shape[p] for p in a["perm"]))]


@op("unsqueeze", ("x",), (Attr("axes", "ints"),), flops=_flops_zero)
def _unsqueeze(a, ins):
    """Insert size-1 axes at the given (output) positions."""
    (x,) = ins
    shape = list(x.shape)
    for ax in sorted(a["axes"]):
        if not 0 <= ax <= len(shape):
            raise OpError("op 'unsqueeze': axis out of range")
        shape.insert(ax, 1)
    return [x.with_shape(tuple(shape))]


@op("prepend", ("x", "token"), flops=_flops_zero)
def _prepend(a, ins):
    """[token; x] along the sequence: x [B, S, D], token [1, 1, D] -> [B, S+1, D]."""
    x, t = ins
    if x.rank != 3 or t.shape != (1, 1, x.shape[2]):
        raise OpError(f"op 'prepend' needs x [B, S, D] and token [1, 1, D], got {x} and {t}")
    return [x.with_shape((x.shape[0], dim_add(x.shape[1], 1), x.shape[2]))]


@op("flatten_spatial", ("x",), flops=_flops_zero)
def _flatten_spatial(a, ins):
    """[B, C, H, W] -> [B, H*W, C] (row-major over H, W)."""
    (x,) = ins
    if x.rank != 4:
        raise OpError(f"op 'flatten_spatial' needs [B, C, H, W], got {x}")
    return [x.with_shape((x.shape[0], dim_mul(x.shape[2], x.shape[3]), x.shape[1]))]


@op("unflatten_spatial", ("x", "like"), flops=_flops_zero)
def _unflatten_spatial(a, ins):
    """[B, H*W, C] -> [B, C, H, W], H and W those of `like` [B, *, H, W] (read at
    run time, so the spatial size may be symbolic)."""
    x, like = ins
    if x.rank != 3 or like.rank != 4 or not _same_dim(x.shape[1], dim_mul(like.shape[2], like.shape[3])):
        raise OpError(f"op 'unflatten_spatial': {x} is not [B, H*W, C] for the H, W of {like}")
    return [x.with_shape((x.shape[0], x.shape[2], like.shape[2], like.shape[3]))]


@op("merge_axes", ("x",), (Attr("start", "int"), Attr("count", "int", 2)), flops=_flops_zero)
def _merge_axes(a, ins):
    """Merge `count` adjacent axes from `start` into one (row-major): a video
    [B, T, C, H, W] with start 0 is [B*T, C, H, W], its frames folded into the batch."""
    (x,) = ins
    s, n = a["start"], a["count"]
    if s < 0 or n < 2 or s + n > x.rank:
        raise OpError(f"op 'merge_axes': {n} axes from {s} do not fit {x}")
    merged: Dim = 1
    for d in x.shape[s : s + n]:
        merged = dim_mul(merged, d)
    return [x.with_shape(x.shape[:s] + (merged,) + x.shape[s + n :])]


@op("split_axis", ("x", "like"), (Attr("axis", "int"), Attr("like_axes", "ints")), flops=_flops_zero)
def _split_axis(a, ins):
    """Split one axis of x into the sizes of `like`'s axes `like_axes` (read at run
    time, so they may be symbolic): the inverse of merge_axes, [B*T, D] with a
    video [B, T, ...] and like_axes (0, 1) is [B, T, D]."""
    x, like = ins
    ax = a["axis"]
    if not 0 <= ax < x.rank or any(not 0 <= i < like.rank for i in a["like_axes"]):
        raise OpError(f"op 'split_axis': axis {ax} of {x} or axes {a['like_axes']} of {like} out of range (non-negative)")
    dims = tuple(like.shape[i] for i in a["like_axes"])
    merged: Dim = 1
    for d in dims:
        merged = dim_mul(merged, d)
    if not dims or not _same_dim(x.shape[ax], merged):
        raise OpError(f"op 'split_axis': dim {ax} of {x} is not the product of {like}'s axes {a['like_axes']}")
    return [x.with_shape(x.shape[:ax] + dims + x.shape[ax + 1 :])]


@op("expand_axis", ("x", "like"), (Attr("axis", "int"), Attr("like_axis", "int")), flops=_flops_zero)
def _expand_axis(a, ins):
    """x with a new axis at `axis`, of the size of `like`'s axis `like_axis` (read
    at run time), x repeated along it: a clip's timestep embedding [B, D] with a
    video [B, T, ...] and like_axis 1 is [B, T, D], one copy per frame."""
    x, like = ins
    ax, la = a["axis"], a["like_axis"]
    if not 0 <= ax <= x.rank or not 0 <= la < like.rank:
        raise OpError(f"op 'expand_axis': axis {ax} of {x} or axis {la} of {like} out of range (non-negative)")
    return [x.with_shape(x.shape[:ax] + (like.shape[la],) + x.shape[ax:])]


@op("require_multiple", ("x",), (Attr("axes", "ints"), Attr("multiple", "int"), Attr("what", "str")), flops=_flops_zero)
def _require_multiple(a, ins):
    """x unchanged, after checking at run time that its dims at `axes` are multiples
    of `multiple`: a model that halves a symbolic size k times says so by name
    ("sample height and width ...") instead of failing deep inside."""
    (x,) = ins
    for ax in a["axes"]:
        _axis("require_multiple", x, ax)
        d = x.shape[ax]
        if isinstance(d, int) and d % a["multiple"]:
            raise OpError(f"{a['what']}: dim {ax} of {x} is not a multiple of {a['multiple']}")
    return [x]


@op(
    "sine_positions_2d",
    ("x",),
    (Attr("features", "int"), Attr("temperature", "float", 10000.0), Attr("scale", "float", 2 * math.pi)),
    flops=_flops_zero,
)
def _sine_positions_2d(a, ins):
    """DETR's sine position embedding of the H x W grid of x [B, C, H, W] (its values
    are not read), flattened row-major: [1, H*W, 2 * features], the y half first.
    Coordinate y = (row + 1) / (H + 1e-6) * scale (x alike); feature k of a
    coordinate is sin (k even) or cos (k odd) of coordinate / temperature^(2 floor(k/2) / features)."""
    (x,) = ins
    if x.rank != 4 or isinstance(x.shape[2], str) or isinstance(x.shape[3], str):
        raise OpError(f"op 'sine_positions_2d' needs [B, C, H, W] with concrete H, W, got {x}")
    if a["features"] % 2:
        raise OpError("op 'sine_positions_2d' needs an even number of features")
    return [TensorType(DType.f32, (1, x.shape[2] * x.shape[3], 2 * a["features"]))]


@op("mean", ("x",), (Attr("axis", "int"),))
def _mean(a, ins):
    """Mean over one axis, which is dropped."""
    (x,) = ins
    ax = _axis("mean", x, a["axis"])
    return [x.with_shape(x.shape[:ax] + x.shape[ax + 1 :])]


@op("gather_argmax", ("x", "ids"), flops=_flops_zero)
def _gather_argmax(a, ins):
    """x[b, argmax(ids[b])] for each batch row: x [B, S, D], ids [B, S] -> [B, D].
    CLIP pools text at the end-of-text token, the highest id in the sequence."""
    x, ids = ins
    if x.rank != 3 or ids.rank != 2 or x.shape[:2] != ids.shape:
        raise OpError(f"op 'gather_argmax' needs x [B, S, D] and ids [B, S], got {x} and {ids}")
    return [x.with_shape((x.shape[0], x.shape[2]))]


@op("pad2d", ("x",), (Attr("pads", "ints"),), flops=_flops_zero)
def _pad2d(a, ins):
    """Zero padding of [B, C, H, W]: pads = (top, bottom, left, right). SD's
    autoencoder pads (0, 1, 0, 1) before its stride-2 downsampling convs."""
    (x,) = ins
    if x.rank != 4 or len(a["pads"]) != 4 or min(a["pads"]) < 0:
        raise OpError(f"op 'pad2d' needs [B, C, H, W] and 4 non-negative pads, got {x} and {a['pads']}")
    t, b, l, r = a["pads"]
    return [x.with_shape((x.shape[0], x.shape[1], dim_add(x.shape[2], t + b), dim_add(x.shape[3], l + r)))]


@op("upsample_nearest", ("x",), (Attr("factor", "int", 2),))
def _upsample(a, ins):
    """Nearest-neighbour upsampling of [B, C, H, W] by an integer factor."""
    (x,) = ins
    if x.rank != 4:
        raise OpError(f"op 'upsample_nearest' needs [B, C, H, W], got {x}")
    f = a["factor"]
    return [x.with_shape((x.shape[0], x.shape[1], dim_mul(x.shape[2], f), dim_mul(x.shape[3], f)))]


@op(
    "timestep_embedding",
    ("t",),
    (
        Attr("dim", "int"),
        Attr("flip_sin_to_cos", "bool", True),
        Attr("freq_shift", "float", 0.0),
        Attr("max_period", "float", 10000.0),
    ),
)
def _timestep_embedding(a, ins):
    """Sinusoidal embedding of timesteps t [B] -> [B, dim]:
    freqs_i = exp(-ln(max_period) * i / (dim/2 - freq_shift)), [sin, cos] (or
    [cos, sin] when flipped), as diffusers' `get_timestep_embedding`."""
    (t,) = ins
    if t.rank != 1:
        raise OpError(f"op 'timestep_embedding' needs t [B], got {t}")
    if a["dim"] % 2:
        raise OpError("op 'timestep_embedding' needs an even dim")
    return [TensorType(DType.f32, (t.shape[0], a["dim"]))]


@op("cast", ("x",), (Attr("dtype", "str", choices=tuple(d.value for d in DType)),), flops=_flops_zero)
def _cast(a, ins):
    """Convert element type."""
    return [ins[0].with_dtype(DType(a["dtype"]))]


# ---------------------------------------------------------------- losses


@op("cross_entropy", ("logits", "labels"), flops=lambda a, i, o, b: 5 * i[0].numel(b))
def _cross_entropy(a, ins):
    """Mean cross-entropy of logits [..., C] against integer labels [...] (a scalar)."""
    logits, labels = ins
    if labels.dtype not in (DType.i64, DType.i32) or logits.shape[:-1] != labels.shape:
        raise OpError(f"op 'cross_entropy' needs logits [..., C] and labels [...], got {logits} and {labels}")
    return [TensorType(logits.dtype, ())]


@op("mse", ("a", "b"), flops=lambda a, i, o, b: 3 * i[0].numel(b))
def _mse(a, ins):
    """Mean squared error (a scalar)."""
    x, y = ins
    if x != y:
        raise OpError(f"op 'mse' needs equal operands, got {x} and {y}")
    return [TensorType(x.dtype, ())]


@op("masked_cross_entropy", ("logits", "labels", "mask"), flops=lambda a, i, o, b: 6 * i[0].numel(b))
def _masked_cross_entropy(a, ins):
    """Cross-entropy averaged over the positions where `mask` is 1 (masked-LM
    training): logits [..., C], labels [...] integers, mask [...] floats in {0, 1};
    the denominator is max(sum(mask), 1) so an empty mask gives 0, not NaN."""
    logits, labels, mask = ins
    if labels.dtype not in (DType.i64, DType.i32) or logits.shape[:-1] != labels.shape:
        raise OpError(f"op 'masked_cross_entropy' needs logits [..., C] and labels [...], got {logits} and {labels}")
    if not mask.dtype.is_float or mask.shape != labels.shape:
        raise OpError(f"op 'masked_cross_entropy' needs a float mask shaped like the labels, got {mask}")
    return [TensorType(logits.dtype, ())]


@op("dice_loss", ("logits", "labels"), (Attr("smooth", "float", 1.0),), flops=lambda a, i, o, b: 10 * i[0].numel(b))
def _dice_loss(a, ins):
    """Soft Dice loss of per-pixel class logits [B, C, ...] against integer labels
    [B, ...] (a scalar): p = softmax over axis 1, y = one-hot labels, and
    1 - mean over classes of (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth), each
    sum over the batch and every position (Milletari et al. 2016, V-Net)."""
    logits, labels = ins
    _need_float("dice_loss", logits)
    if labels.dtype not in (DType.i64, DType.i32) or logits.rank < 2 or labels.shape != (logits.shape[0],) + logits.shape[2:]:
        raise OpError(f"op 'dice_loss' needs logits [B, C, ...] and labels [B, ...], got {logits} and {labels}")
    return [TensorType(logits.dtype, ())]


def _sqrt(x: float) -> float:
    return math.sqrt(x)


# ---------------------------------------------------------------- tabular, time series, graphs, RL


@op("dropout", ("x",), (Attr("rate", "float"),), flops=_flops_zero)
def _dropout(a, ins):
    """Identity at inference; during torch training, zero each element with
    probability `rate` and scale the rest by 1 / (1 - rate)."""
    _need_float("dropout", ins[0])
    if not 0.0 <= a["rate"] < 1.0:
        raise OpError(f"op 'dropout': rate {a['rate']} is not in [0, 1)")
    return [ins[0]]


_binary("div", "a / b with numpy broadcasting.")
@op("sqrt", ("x",), (Attr("eps", "float", 0.0),), flops=lambda a, i, o, b: 4 * o[0].numel(b))
def _sqrt_op(a, ins):
    """sqrt(x + eps)."""
    _need_float("sqrt", ins[0])
    return [ins[0]]


def _reshape_factors(shape: tuple[Dim, ...]) -> tuple[int, list[str]]:
    """A shape's element count as an integer times symbols ("batch*3" -> 3, [batch])."""
    num, syms = 1, []
    for d in shape:
        for factor in ([d] if isinstance(d, int) else str(d).split("*")):
            if isinstance(factor, int) or factor.isdigit():
                num *= int(factor)
            elif "+" in factor:
                raise OpError(f"op 'reshape': cannot split the dimension {d}")
            else:
                syms.append(factor)
    return num, sorted(syms)


@op("reshape", ("x",), (Attr("shape", "ints"),), flops=_flops_zero)
def _reshape(a, ins):
    """x in a new shape of the same element count; one entry of `shape` may be -1,
    standing for what is left, symbols included ([batch, 3, 10, 8] -> (-1, 10, 8)
    is [batch*3, 10, 8], and back with (-1, 3, 10, 8))."""
    (x,) = ins
    shape = a["shape"]
    if sum(1 for d in shape if d == -1) > 1 or any(d == 0 or d < -1 for d in shape):
        raise OpError(f"op 'reshape': shape {shape} needs positive sizes and at most one -1")
    num, syms = _reshape_factors(x.shape)
    known = math.prod(d for d in shape if d != -1)
    if -1 not in shape:
        if syms or known != num:
            raise OpError(f"op 'reshape': {x} does not have the {known} elements of {shape}")
        return [x.with_shape(tuple(shape))]
    if num % known:
        raise OpError(f"op 'reshape': {x} cannot be viewed as {shape}")
    rest: Dim = num // known
    for s in syms:
        rest = dim_mul(s, rest) if rest != 1 else s
    return [x.with_shape(tuple(rest if d == -1 else d for d in shape))]


@op("frames", ("x",), (Attr("size", "int"), Attr("step", "int")), flops=_flops_zero)
def _frames(a, ins):
    """Overlapping windows along the last axis: x [..., L] -> [..., N, size], window
    i starting at i * step, N = (L - size) // step + 1 (a trailing remainder is
    dropped), as torch's `Tensor.unfold(-1, size, step)`."""
    (x,) = ins
    n = x.shape[-1] if x.rank else None
    if not isinstance(n, int) or a["size"] < 1 or a["step"] < 1 or a["size"] > n:
        raise OpError(f"op 'frames' needs a concrete last axis of at least {a['size']}, got {x}")
    count = (n - a["size"]) // a["step"] + 1
    return [x.with_shape(x.shape[:-1] + (count, a["size"]))]


@op("huber", ("a", "b"), (Attr("delta", "float", 1.0),), flops=lambda a, i, o, b: 5 * i[0].numel(b))
def _huber(a, ins):
    """Mean Huber loss (a scalar): 0.5 d^2 where |d| <= delta, else delta (|d| - delta / 2)."""
    x, y = ins
    if x != y:
        raise OpError(f"op 'huber' needs equal operands, got {x} and {y}")
    return [TensorType(x.dtype, ())]


@op("log_softmax", ("x",), (Attr("axis", "int", -1),), flops=lambda a, i, o, b: 5 * o[0].numel(b))
def _log_softmax(a, ins):
    """log(softmax(x)) along one axis, computed stably (x - logsumexp(x))."""
    _need_float("log_softmax", ins[0])
    _axis("log_softmax", ins[0], a["axis"])
    return [ins[0]]


@op("take_along", ("x", "index"), flops=_flops_zero)
def _take_along(a, ins):
    """x[..., index[...]]: one entry of the last axis per row, x [..., C] and integer
    index [...] -> [...] (a Q-value or log-probability of the action taken)."""
    x, idx = ins
    if idx.dtype not in (DType.i64, DType.i32) or x.shape[:-1] != idx.shape:
        raise OpError(f"op 'take_along' needs x [..., C] and integer index [...], got {x} and {idx}")
    return [idx.with_dtype(x.dtype)]


@op("clip", ("x",), (Attr("low", "float"), Attr("high", "float")))
def _clip(a, ins):
    """min(max(x, low), high), constant bounds."""
    _need_float("clip", ins[0])
    if a["low"] > a["high"]:
        raise OpError(f"op 'clip': low {a['low']} is above high {a['high']}")
    return [ins[0]]


_binary("minimum", "min(a, b) elementwise, numpy broadcasting.")


# ---------------------------------------------------------------- message passing (graphs)
# A graph batch is node rows [nodes, ...] and an edge index; `like` operands lend
# their first dimension (the node or graph count), which stays symbolic.


def _index_vector(op: str, t: TensorType) -> None:
    if t.dtype not in (DType.i64, DType.i32) or t.rank != 1:
        raise OpError(f"op '{op}' needs an integer index vector, got {t}")


@op("gather_rows", ("x", "index"), flops=_flops_zero)
def _gather_rows(a, ins):
    """x[index]: rows of x [N, ...] at integer index [E] -> [E, ...] (a node's
    features onto each of its edges)."""
    x, idx = ins
    _index_vector("gather_rows", idx)
    if x.rank < 1:
        raise OpError("op 'gather_rows' needs x of rank >= 1")
    return [x.with_shape((idx.shape[0],) + x.shape[1:])]


@op("scatter_add", ("src", "index", "like"))
def _scatter_add(a, ins):
    """out[index[e]] += src[e]: src [E, ...] summed into like.shape[0] rows (a
    node's incoming messages; a graph's nodes); rows no index names stay 0."""
    src, idx, like = ins
    _index_vector("scatter_add", idx)
    _need_float("scatter_add", src)
    if src.rank < 1 or src.shape[0] != idx.shape[0] or like.rank < 1:
        raise OpError(f"op 'scatter_add' needs src [E, ...], index [E] and like [N, ...], got {src}, {idx}, {like}")
    return [src.with_shape((like.shape[0],) + src.shape[1:])]


@op("segment_softmax", ("scores", "index", "like"), flops=lambda a, i, o, b: 6 * o[0].numel(b))
def _segment_softmax(a, ins):
    """Softmax of scores [E, ...] over the entries that share index[e] (each node's
    incoming edges), per trailing position; `like` [N, ...] gives the segment count.
    Stable: each segment's maximum is subtracted first."""
    s, idx, like = ins
    _index_vector("segment_softmax", idx)
    _need_float("segment_softmax", s)
    if s.rank < 1 or s.shape[0] != idx.shape[0] or like.rank < 1:
        raise OpError(f"op 'segment_softmax' needs scores [E, ...], index [E] and like [N, ...], got {s}, {idx}, {like}")
    return [s]


@op("leaky_relu", ("x",), (Attr("slope", "float", 0.01),))
def _leaky_relu(a, ins):
    """x where x >= 0, slope * x elsewhere."""
    _need_float("leaky_relu", ins[0])
    return [ins[0]]


@op("degree", ("index", "like"), flops=_flops_zero)
def _degree(a, ins):
    """How many entries of index [E] name each of like.shape[0] rows (float32 [N]):
    a node's in-degree from the targets of its edges."""
    idx, like = ins
    _index_vector("degree", idx)
    if like.rank < 1:
        raise OpError(f"op 'degree' needs like [N, ...], got {like}")
    return [TensorType(DType.f32, (like.shape[0],))]
