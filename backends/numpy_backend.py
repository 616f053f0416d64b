"""IR -> standalone NumPy source: the reference semantics of every op.

The generated module has the same API as the torch and flax ones and imports nothing
but numpy and the standard library. It is written to be read: each primitive op is
one NumPy expression, each layer op a small class whose `__call__` states the maths,
and the module tree is kept (one class per module definition, a `Repeat` a list
looped in `__call__`), so a disagreement between backends can be traced here.

Precision: float tensors are held in float64 while the model runs. `load_canonical`
keeps float64 copies of the canonical float32 weights and `run` promotes float inputs,
so matmuls, convolutions, softmax, norms and reductions all accumulate in float64 with
no per-op casts, and `run` rounds each output to its declared dtype once, at the end.
The result is the float32 model's exact value up to float64 rounding, which is what the
other backends are compared with (CONTRACT §5). A `cast` to a narrower float type rounds
to that type's precision (the values stay float64); NumPy has no bfloat16, so a
bfloat16 output is returned as float32 holding bfloat16-rounded values.
`timestep_embedding` takes sin/cos of t * freq in float64 too; float32 backends, whose
argument (up to 1000 rad) is off by up to ~3e-5, differ from it on the raw embedding
(docs/backends.md has the figures).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from metagen.backends.pyemit import (
    EXAMPLE_FUNCTION,
    INIT_FUNCTIONS,
    EmitError,
    Lines,
    ModuleEmitter,
    Namespace,
    emit_common_header,
    emit_tables,
    format_python,
    missing_emitter,
    py_literal,
)
from metagen.diagnostics import Diagnostic, Loc
from metagen.ir import ops
from metagen.ir.graph import Layer, Model, ModuleDef, Node, Repeat, Sub
from metagen.ir.types import DType

# ------------------------------------------------------------------ layer ops
# attrs -> constructor of the layer's class (declared in HELPERS).

LAYERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "linear": lambda a: f"_Linear({a['in_features']}, {a['out_features']}, bias={a['bias']})",
    "embedding": lambda a: f"_Embedding({a['num']}, {a['dim']})",
    "layer_norm": lambda a: f"_LayerNorm({a['dim']}, eps={a['eps']!r}, affine={a['affine']}, bias={a['bias']})",
    "rms_norm": lambda a: f"_RMSNorm({a['dim']}, eps={a['eps']!r})",
    "group_norm": lambda a: f"_GroupNorm({a['groups']}, {a['channels']}, eps={a['eps']!r})",
    "conv2d": lambda a: (
        f"_Conv2d({a['in_channels']}, {a['out_channels']}, {a['kernel']}, stride={a['stride']}, "
        f"padding={a['padding']}, bias={a['bias']})"
    ),
}

# ------------------------------------------------------------------ primitive ops
# Each takes the node's attributes and its operands' Python names and returns an
# expression; a helper it calls (a name in HELPERS) is emitted with it.


def _index(x: str, axis: int, item: str) -> str:
    """`x[..., item, ...]` with `item` at `axis` (negative axes count from the end)."""
    if axis >= 0:
        return f"{x}[{':, ' * axis}{item}]"
    return f"{x}[..., {item}{', :' * (-axis - 1)}]"


def _cast(dtype: str, x: str) -> str:
    if dtype == "bf16":
        return f"_round_to_bfloat16({x})"
    if DType(dtype).is_float:  # round to the type's precision, keep computing in float64
        return f"{x}.astype(np.{DType(dtype).numpy}).astype(np.float64)"
    return f"{x}.astype(np.{DType(dtype).numpy})"


OPS: dict[str, Callable[..., str]] = {
    "add": lambda a, x, y: f"{x} + {y}",
    "sub": lambda a, x, y: f"{x} - {y}",
    "mul": lambda a, x, y: f"{x} * {y}",
    "scale": lambda a, x: f"{x} * {a['factor']!r}",
    "gelu": lambda a, x: f"_gelu({x})",
    "gelu_tanh": lambda a, x: f"_gelu_tanh({x})",
    "quick_gelu": lambda a, x: f"{x} * _sigmoid(1.702 * {x})",
    "silu": lambda a, x: f"{x} * _sigmoid({x})",
    "relu": lambda a, x: f"np.maximum({x}, 0.0)",
    "tanh": lambda a, x: f"np.tanh({x})",
    "sigmoid": lambda a, x: f"_sigmoid({x})",
    "exp": lambda a, x: f"np.exp({x})",
    "softmax": lambda a, x: f"_softmax({x}, axis={a['axis']})",
    "l2_normalize": lambda a, x: (
        f"{x} / np.maximum(np.linalg.norm({x}, axis={a['axis']}, keepdims=True), 1e-12)"
    ),
    "matmul": lambda a, x, y: f"{x} @ np.swapaxes({y}, -1, -2)" if a["transpose_b"] else f"{x} @ {y}",
    "linear_fn": lambda a, x, w: f"{x} @ {w}.T",
    "attention": lambda a, q, k, v: (
        f"_attention({q}, {k}, {v}, heads={a['heads']}, kv_heads={a['kv_heads']}, "
        f"causal={a['causal']}, scale={a['scale']!r})"
    ),
    "rope": lambda a, x: f"_rope({x}, heads={a['heads']}, theta={a['theta']!r})",
    "positions": lambda a, x: f"np.arange({x}.shape[{a['axis']}], dtype=np.int64)",
    "concat": lambda a, *xs: f"np.concatenate([{', '.join(xs)}], axis={a['axis']})",
    "stack": lambda a, *xs: f"np.stack([{', '.join(xs)}], axis={a['axis']})",
    "slice": lambda a, x: _index(x, a["axis"], f"{a['start']}:{a['end']}"),
    "select": lambda a, x: _index(x, a["axis"], str(a["index"])),
    "transpose": lambda a, x: f"np.transpose({x}, {tuple(a['perm'])})",
    "unsqueeze": lambda a, x: f"np.expand_dims({x}, {tuple(sorted(a['axes']))})",
    "prepend": lambda a, x, t: f"np.concatenate([np.broadcast_to({t}, ({x}.shape[0],) + {t}.shape[1:]), {x}], axis=1)",
    "flatten_spatial": lambda a, x: f"{x}.reshape({x}.shape[0], {x}.shape[1], -1).transpose(0, 2, 1)",
    "unflatten_spatial": lambda a, x: (
        f"{x}.transpose(0, 2, 1).reshape({x}.shape[0], {x}.shape[2], {a['height']}, {a['width']})"
    ),
    "mean": lambda a, x: f"np.mean({x}, axis={a['axis']})",
    "gather_argmax": lambda a, x, ids: f"{x}[np.arange({x}.shape[0]), np.argmax({ids}, axis=-1)]",
    "upsample_nearest": lambda a, x: f"{x}.repeat({a['factor']}, axis=2).repeat({a['factor']}, axis=3)",
    "timestep_embedding": lambda a, t: (
        f"_timestep_embedding({t}, {a['dim']}, flip_sin_to_cos={a['flip_sin_to_cos']}, "
        f"freq_shift={a['freq_shift']!r}, max_period={a['max_period']!r})"
    ),
    "cast": lambda a, x: _cast(a["dtype"], x),
    "cross_entropy": lambda a, logits, labels: f"_cross_entropy({logits}, {labels})",
    "mse": lambda a, x, y: f"np.mean(np.square({x} - {y}))",
    "masked_cross_entropy": lambda a, logits, labels, mask: f"_masked_cross_entropy({logits}, {labels}, {mask})",
}

# Helper functions and layer classes, keyed by the name each defines. One is emitted
# when an emitted line, or another emitted helper, mentions its name.
HELPERS: dict[str, str] = {
    "_Linear": '''
class _Linear:
    """y = x W^T + b over the last axis; weight [out, in]."""

    def __init__(self, in_features, out_features, bias=True):
        self.weight = np.zeros((out_features, in_features))
        self.bias = np.zeros(out_features) if bias else None

    def __call__(self, x):
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias
''',
    "_Embedding": '''
class _Embedding:
    """Rows of the table at integer ids; weight [num, dim]."""

    def __init__(self, num, dim):
        self.weight = np.zeros((num, dim))

    def __call__(self, ids):
        return self.weight[ids]
''',
    "_LayerNorm": '''
class _LayerNorm:
    """(x - mean) / sqrt(var + eps) over the last axis (biased variance), then
    * weight + bias when affine."""

    def __init__(self, dim, eps, affine=True, bias=True):
        self.eps = eps
        self.weight = np.ones(dim) if affine else None
        self.bias = np.zeros(dim) if affine and bias else None

    def __call__(self, x):
        mean = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mean).mean(axis=-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y
''',
    "_RMSNorm": '''
class _RMSNorm:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""

    def __init__(self, dim, eps):
        self.eps = eps
        self.weight = np.ones(dim)

    def __call__(self, x):
        return x / np.sqrt(np.square(x).mean(axis=-1, keepdims=True) + self.eps) * self.weight
''',
    "_GroupNorm": '''
class _GroupNorm:
    """[B, C, H, W]: normalize each group of C/groups channels over its channels and
    positions together (biased variance), then * weight + bias per channel."""

    def __init__(self, groups, channels, eps):
        self.groups, self.eps = groups, eps
        self.weight = np.ones(channels)
        self.bias = np.zeros(channels)

    def __call__(self, x):
        b, c, h, w = x.shape
        g = x.reshape(b, self.groups, -1)
        mean = g.mean(axis=-1, keepdims=True)
        var = np.square(g - mean).mean(axis=-1, keepdims=True)
        y = ((g - mean) / np.sqrt(var + self.eps)).reshape(b, c, h, w)
        return y * self.weight[:, None, None] + self.bias[:, None, None]
''',
    "_Conv2d": '''
class _Conv2d:
    """2-D cross-correlation, NCHW, square kernel, zero padding; weight
    [out, in, k, k]. Each output pixel is the dot product of the weight with the
    k x k window of the padded input under it."""

    def __init__(self, in_channels, out_channels, kernel, stride=1, padding=0, bias=True):
        self.stride, self.padding = stride, padding
        self.weight = np.zeros((out_channels, in_channels, kernel, kernel))
        self.bias = np.zeros(out_channels) if bias else None

    def __call__(self, x):
        p, s, k = self.padding, self.stride, self.weight.shape[-1]
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        y = np.einsum("bchwij,ocij->bohw", windows, self.weight, optimize=True)
        return y if self.bias is None else y + self.bias[:, None, None]
''',
    "_sigmoid": '''
def _sigmoid(x):
    """1 / (1 + e^-x), written through tanh so that no input overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))
''',
    "_gelu": '''
def _gelu(x):
    """x * Phi(x), Phi the standard normal CDF; erfc(-x / sqrt 2) / 2 keeps the
    negative tail exact where 1 + erf would cancel."""
    return x * np.vectorize(math.erfc, otypes=[np.float64])(-x / math.sqrt(2.0)) / 2.0
''',
    "_gelu_tanh": '''
def _gelu_tanh(x):
    """GELU's tanh approximation."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
''',
    "_softmax": '''
def _softmax(x, axis):
    """e^x / sum(e^x) along `axis`, shifted by the maximum so nothing overflows."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)
''',
    "_log_softmax": '''
def _log_softmax(x, axis):
    """log(softmax(x)) along `axis`, as x - max - log(sum(e^(x - max)))."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
''',
    "_attention": '''
def _attention(q, k, v, heads, kv_heads, causal, scale):
    """Scaled dot-product attention on packed heads: q [B, Sq, H*D], k and v
    [B, Sk, KVH*D] -> [B, Sq, H*D]. Query head h reads key/value head
    h // (H / KVH) (grouped-query attention); causal masks key j > query i;
    scale None means 1 / sqrt(D)."""
    b, sq, sk = q.shape[0], q.shape[1], k.shape[1]
    d = q.shape[-1] // heads
    q = q.reshape(b, sq, heads, d).transpose(0, 2, 1, 3)
    k = np.repeat(k.reshape(b, sk, kv_heads, d).transpose(0, 2, 1, 3), heads // kv_heads, axis=1)
    v = np.repeat(v.reshape(b, sk, kv_heads, d).transpose(0, 2, 1, 3), heads // kv_heads, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(d) if scale is None else scale)
    if causal:
        scores = np.where(np.tril(np.ones((sq, sk), dtype=bool)), scores, -np.inf)
    out = _softmax(scores, axis=-1) @ v
    return out.transpose(0, 2, 1, 3).reshape(b, sq, heads * d)
''',
    "_rope": '''
def _rope(x, heads, theta):
    """Rotary position embedding on packed heads [B, S, H*D], positions 0..S-1,
    rotate-half convention: dims i and i + D/2 form a pair rotated by the angle
    position * theta^(-2i/D)."""
    b, s = x.shape[0], x.shape[1]
    d = x.shape[-1] // heads
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    angles = np.outer(np.arange(s), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)[:, None, :]
    x = x.reshape(b, s, heads, d)
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return (x * np.cos(angles) + rotated * np.sin(angles)).reshape(b, s, heads * d)
''',
    "_timestep_embedding": '''
def _timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, max_period):
    """Sinusoidal embedding of timesteps t [B] -> [B, dim], as diffusers defines it:
    frequency i = max_period^(-i / (dim/2 - freq_shift)), features [sin, cos] of
    t * frequency, or [cos, sin] when flipped."""
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half) / (half - freq_shift))
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None, :]
    if flip_sin_to_cos:
        return np.concatenate([np.cos(args), np.sin(args)], axis=-1)
    return np.concatenate([np.sin(args), np.cos(args)], axis=-1)
''',
    "_cross_entropy": '''
def _cross_entropy(logits, labels):
    """Mean over positions of -log softmax(logits)[label]: logits [..., C], labels [...]."""
    logp = _log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
    return -np.mean(logp[np.arange(logp.shape[0]), labels.reshape(-1)])
''',
    "_masked_cross_entropy": '''
def _masked_cross_entropy(logits, labels, mask):
    """Cross-entropy summed where mask is 1, divided by max(sum(mask), 1)."""
    logp = _log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
    picked = logp[np.arange(logp.shape[0]), labels.reshape(-1)]
    weight = mask.reshape(-1).astype(np.float64)
    return -np.sum(picked * weight) / max(np.sum(weight), 1.0)
''',
    "_round_to_bfloat16": '''
def _round_to_bfloat16(x):
    """x rounded to bfloat16 precision (to float32, then nearest even in the top 16
    bits); NumPy has no bfloat16 type, so the values stay float64."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(np.float64)
''',
}

RESERVED = {"np", "math", "zlib", "self", "layer", "Model", "CONFIG", "INPUTS", "OUTPUTS"} | set(HELPERS)

_NAME = re.compile(r"\b_[A-Za-z][A-Za-z0-9_]*\b")


class NumpyEmitter(ModuleEmitter):
    reserved = frozenset(RESERVED)
    base_class = ""
    call_method = "__call__"
    helper_sources = HELPERS

    def emit(self) -> str:
        out = self.out
        m = self.model
        body = self.emit_classes()
        emit_common_header(out, m, "NumPy")
        out("import math")
        out("import zlib")
        out("")
        out("import numpy as np")
        out("")
        out("# Reference semantics: float tensors are float64 while the model runs (weights are")
        out("# float64 copies of the canonical float32 values, `run` promotes float inputs), and")
        out("# `run` rounds each output to its declared dtype once, at the end.")
        out("")
        self.emit_helpers(out)
        out.lines.extend(body.lines)
        out(f"Model = {self.class_names[m.top]}")
        out("")
        emit_tables(out, m)
        out(f"_OUTPUT_DTYPES = {py_literal(output_dtypes(m))}")
        out(INIT_FUNCTIONS)
        out(EXAMPLE_FUNCTION)
        out(NUMPY_API)
        return format_python(out.text())

    def use(self, text: str) -> str:
        """Note the helpers `text` mentions (and theirs) for emission; `text` back."""
        todo = [n for n in _NAME.findall(text) if n in HELPERS]
        while todo:
            name = todo.pop()
            if name not in self.helpers:
                self.helpers.append(name)
                todo.extend(n for n in _NAME.findall(HELPERS[name]) if n in HELPERS and n != name)
        return text

    def emit_members(self, out: Lines, md: ModuleDef) -> None:
        for p in md.params.values():
            out(f"self.{p.name} = np.zeros({tuple(p.type.shape)})")
        for name, child in md.children.items():
            if isinstance(child, Layer):
                ctor = LAYERS.get(child.op)
                if ctor is None:
                    raise missing_layer_emitter(child.op, name, md, self.model)
                out(self.use(f"self.{name} = {ctor(child.attr_dict())}"))
            elif isinstance(child, Sub):
                out(f"self.{name} = {self.class_names[child.module]}()")
            else:
                out(f"self.{name} = [{self.class_names[child.module]}() for _ in range({child.count})]")
        if not md.params and not md.children:
            out("pass")

    def emit_node(self, out: Lines, md: ModuleDef, node: Node, ns: Namespace) -> None:
        args = [ns.name(o) for o in node.operands]
        if node.kind == "param":
            path = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in node.target.split("."))
            ns.bind(node.results[0], f"self{path}")
            return
        if node.kind == "call":
            child = md.children[node.target]
            res = [ns.name(r) for r in node.results]
            if isinstance(child, Repeat):
                rest = "".join(f", {a}" for a in args[1:])
                out(f"{res[0]} = {args[0]}")
                out(f"for layer in self.{node.target}:")
                with out.indent():
                    out(f"{res[0]} = layer({res[0]}{rest})")
            else:
                out(f"{', '.join(res)} = self.{node.target}({', '.join(args)})")
            return
        fn = OPS.get(node.op)
        if fn is None:
            raise missing_emitter("numpy", node, self.model)
        out(self.use(f"{ns.name(node.results[0])} = {fn(node.attrs, *args)}"))


def missing_layer_emitter(op: str, child: str, md: ModuleDef, model: Model) -> EmitError:
    """The error for a layer op with no constructor, at the node that calls the layer."""
    node = next((n for n in md.nodes if n.kind == "call" and n.target == child), None)
    loc = (node.loc if node else None) or md.loc or model.loc or Loc("<ir>")
    return EmitError([Diagnostic("error", loc, f"the numpy backend has no emitter for layer op '{op}'")])


def output_dtypes(model: Model) -> dict[str, str]:
    """Output name -> the NumPy dtype `run` rounds it to (bfloat16 values as float32)."""
    top = model.top_module
    return {
        name: "float32" if v.type.dtype is DType.bf16 else v.type.dtype.numpy
        for name, v in zip(top.output_names, top.outputs)
    }


def check_coverage() -> list[str]:
    """Registry ops with no numpy emitter (empty when the backend is complete)."""
    return [name for name, d in ops.REGISTRY.items() if name not in (LAYERS if d.is_layer else OPS)]


NUMPY_API = '''
def _owner(model, name):
    """(the object holding canonical parameter `name`, its attribute name)."""
    *path, attr = name.split(".")
    obj = model
    for p in path:
        obj = obj[int(p)] if p.isdigit() else getattr(obj, p)
    return obj, attr


def init(seed=0):
    """A Model holding the canonical initial weights for `seed`."""
    return load_canonical(init_arrays(seed))


def load_canonical(tensors):
    """A Model from a dict canonical name -> numpy array (PyTorch layout), holding
    float64 copies of the float32 values."""
    want = [name for name, _, _, _ in _INITS]
    if set(tensors) != set(want):
        missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
        raise KeyError(f"canonical weights do not match the model: missing {missing}, unexpected {extra}")
    model = Model()
    for name in want:
        owner, attr = _owner(model, name)
        value = np.asarray(tensors[name], dtype=np.float32)
        if value.shape != getattr(owner, attr).shape:
            raise ValueError(f"{name}: shape {value.shape} does not fit {getattr(owner, attr).shape}")
        setattr(owner, attr, value.astype(np.float64))
    return model


def to_canonical(state):
    """Dict canonical name -> float32 numpy array of a Model's weights (PyTorch layout)."""
    return {name: getattr(*_owner(state, name)).astype(np.float32) for name, _, _, _ in _INITS}


def run(state, inputs):
    """Outputs as numpy arrays for a dict of numpy inputs: float inputs are promoted
    to float64, each output is rounded to its declared dtype."""
    feed = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        feed[name] = value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value
    out = state(**feed)
    return {name: np.asarray(value).astype(_OUTPUT_DTYPES[name]) for name, value in out.items()}
'''


def lower_to_numpy(model: Model) -> str:
    return NumpyEmitter(model).emit()
