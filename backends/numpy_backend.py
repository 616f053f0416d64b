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

from metagen.backends.pyemit import (
    BASE_OPS,
    SINE_POSITIONS_SOURCE,
    sine_positions_rule,
    COMMON_HELPERS,
    EXAMPLE_FUNCTION,
    INIT_FUNCTIONS,
    LayerRule,
    ModuleEmitter,
    Rule,
    emit_common_header,
    emit_generate,
    emit_tasks,
    emit_tables,
    format_python,
    py_literal,
    uncovered_ops,
)
from metagen.backends.sampling import sampler_source
from metagen.ir.graph import Model, ModuleDef, Param
from metagen.ir.types import DType

RESERVED = {"np", "math", "zlib", "self", "Model", "CONFIG", "INPUTS", "OUTPUTS"}

# ------------------------------------------------------------------ layer ops
# Each layer op is a small class (a helper: `_Linear`, ...) holding its parameters
# under their canonical names in the PyTorch layout.

LAYERS: dict[str, LayerRule] = {
    "linear": LayerRule(
        lambda c: f"{c.helper('Linear')}({c.a['in_features']}, {c.a['out_features']}, bias={c.a['bias']})"
    ),
    "embedding": LayerRule(lambda c: f"{c.helper('Embedding')}({c.a['num']}, {c.a['dim']})"),
    "layer_norm": LayerRule(
        lambda c: (
            f"{c.helper('LayerNorm')}({c.a['dim']}, eps={c.a['eps']!r}, affine={c.a['affine']}, bias={c.a['bias']})"
        )
    ),
    "rms_norm": LayerRule(lambda c: f"{c.helper('RMSNorm')}({c.a['dim']}, eps={c.a['eps']!r})"),
    "group_norm": LayerRule(
        lambda c: f"{c.helper('GroupNorm')}({c.a['groups']}, {c.a['channels']}, eps={c.a['eps']!r})"
    ),
    "conv2d": LayerRule(
        lambda c: (
            f"{c.helper('Conv2d')}({c.a['in_channels']}, {c.a['out_channels']}, {c.a['kernel']}, "
            f"stride={c.a['stride']}, padding={c.a['padding']}, bias={c.a['bias']})"
        )
    ),
    "batch_norm": LayerRule(lambda c: f"{c.helper('BatchNorm2d')}({c.a['channels']}, eps={c.a['eps']!r})"),
}

# ------------------------------------------------------------------ primitive ops
# The base table in `np` (its helper calls name the helpers below), with the forms
# chosen for the reference where they differ.


def _index(x: str, axis: int, item: str) -> str:
    """`x[..., item, ...]` with `item` at `axis` (negative axes count from the end)."""
    if axis >= 0:
        return f"{x}[{':, ' * axis}{item}]"
    return f"{x}[..., {item}{', :' * (-axis - 1)}]"


def _cast(c, x: str) -> str:
    dtype = DType(c.a["dtype"])
    if dtype is DType.bf16:
        return f"{c.helper('round_to_bfloat16')}({x})"
    if dtype.is_float:  # round to the type's precision, keep computing in float64
        return f"{x}.astype(np.{dtype.numpy}).astype(np.float64)"
    return f"{x}.astype(np.{dtype.numpy})"


OPS: dict[str, Rule] = {
    **BASE_OPS,
    "gelu": lambda c, x: f"{c.helper('gelu')}({x})",
    "gelu_tanh": lambda c, x: f"{c.helper('gelu_tanh')}({x})",
    "silu": lambda c, x: f"{x} * {c.call('sigmoid', x)}",
    "relu": lambda c, x: f"np.maximum({x}, 0.0)",
    "sigmoid": lambda c, x: f"{c.helper('sigmoid')}({x})",
    "softmax": lambda c, x: f"{c.helper('softmax')}({x}, axis={c.a['axis']})",
    "positions": lambda c, x: f"np.arange({x}.shape[{c.a['axis']}], dtype=np.int64)",
    "slice": lambda c, x: _index(x, c.a["axis"], f"{c.a['start']}:{c.a['end']}"),
    "select": lambda c, x: _index(x, c.a["axis"], str(c.a["index"])),
    "cast": _cast,
    "degree": lambda c, i, like: f"np.bincount({i}, minlength={like}.shape[0]).astype(np.float64)",
    "sine_positions_2d": sine_positions_rule('{t}'),
    "max_pool2d": lambda c, x: f"{c.helper('max_pool2d')}({x}, {c.a['kernel']}, {c.a['stride']}, {c.a['padding']})",
}

# Helper functions and layer classes: `name` defines `_name`. A helper is emitted when
# a rule asks for it, with the helpers its source calls.
HELPERS: dict[str, str] = {
    "sine_positions_2d": SINE_POSITIONS_SOURCE,
    **COMMON_HELPERS,
    "scatter_add": '''
def _scatter_add(src, index, rows):
    """out[index[e]] += src[e] into `rows` rows (zeros where no index points)."""
    out = np.zeros((rows,) + src.shape[1:], dtype=src.dtype)
    np.add.at(out, index, src)
    return out
''',
    "segment_softmax": '''
def _segment_softmax(scores, index, rows):
    """Softmax over the entries of scores that share an index, each segment's max subtracted."""
    top = np.full((rows,) + scores.shape[1:], -np.inf, dtype=scores.dtype)
    np.maximum.at(top, index, scores)
    e = np.exp(scores - top[index])
    total = np.zeros((rows,) + scores.shape[1:], dtype=scores.dtype)
    np.add.at(total, index, e)
    return e / total[index]
''',
    "Linear": '''
class _Linear:
    """y = x W^T + b over the last axis; weight [out, in]."""

    def __init__(self, in_features, out_features, bias=True):
        self.weight = np.zeros((out_features, in_features))
        self.bias = np.zeros(out_features) if bias else None

    def __call__(self, x):
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias
''',
    "Embedding": '''
class _Embedding:
    """Rows of the table at integer ids; weight [num, dim]."""

    def __init__(self, num, dim):
        self.weight = np.zeros((num, dim))

    def __call__(self, ids):
        return self.weight[ids]
''',
    "LayerNorm": '''
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
    "RMSNorm": '''
class _RMSNorm:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""

    def __init__(self, dim, eps):
        self.eps = eps
        self.weight = np.ones(dim)

    def __call__(self, x):
        return x / np.sqrt(np.square(x).mean(axis=-1, keepdims=True) + self.eps) * self.weight
''',
    "GroupNorm": '''
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
    "Conv2d": '''
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
    "BatchNorm2d": '''
class _BatchNorm2d:
    """Batch norm in inference form over [B, C, H, W]: per channel,
    (x - running_mean) / sqrt(running_var + eps) * weight + bias."""

    def __init__(self, channels, eps):
        self.eps = eps
        self.weight = np.ones(channels)
        self.bias = np.zeros(channels)
        self.running_mean = np.zeros(channels)
        self.running_var = np.ones(channels)

    def __call__(self, x):
        scale = self.weight / np.sqrt(self.running_var + self.eps)
        return (x - self.running_mean[:, None, None]) * scale[:, None, None] + self.bias[:, None, None]
''',
    "max_pool2d": '''
def _max_pool2d(x, kernel, stride, padding):
    """Max over each k x k window of [B, C, H, W] padded with -inf."""
    p = padding
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(-2, -1))
''',
    "sigmoid": '''
def _sigmoid(x):
    """1 / (1 + e^-x), written through tanh so that no input overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))
''',
    "gelu": '''
def _gelu(x):
    """x * Phi(x), Phi the standard normal CDF; erfc(-x / sqrt 2) / 2 keeps the
    negative tail exact where 1 + erf would cancel."""
    return x * np.vectorize(math.erfc, otypes=[np.float64])(-x / math.sqrt(2.0)) / 2.0
''',
    "gelu_tanh": '''
def _gelu_tanh(x):
    """GELU's tanh approximation."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
''',
    "softmax": '''
def _softmax(x, axis):
    """e^x / sum(e^x) along `axis`, shifted by the maximum so nothing overflows."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)
''',
    "log_softmax": '''
def _log_softmax(x, axis):
    """log(softmax(x)) along `axis`, as x - max - log(sum(e^(x - max)))."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
''',
    "attention": '''
def _attention(q, k, v, heads, kv_heads, head_dim, is_causal, scale=None, split_kv=False, bias=None):
    """Scaled dot-product attention on packed heads: q [B, Sq, H*D], k and v
    [B, Sk, KVH*D] ([B, KVH, Sk, D] with split_kv) -> [B, Sq, H*D]. Query head h
    reads key/value head h // (H / KVH) (grouped-query attention); causal masks key
    j > query i; scale None means 1 / sqrt(D); bias [B, 1, Sq, Sk] is added to the scores."""
    b, sq, d = q.shape[0], q.shape[1], head_dim
    if not split_kv:
        k, v = (t.reshape(b, t.shape[1], kv_heads, d).transpose(0, 2, 1, 3) for t in (k, v))
    sk = k.shape[2]
    q = q.reshape(b, sq, heads, d).transpose(0, 2, 1, 3)
    k = np.repeat(k, heads // kv_heads, axis=1)
    v = np.repeat(v, heads // kv_heads, axis=1)
    scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(d) if scale is None else scale)
    if is_causal:
        scores = np.where(np.tril(np.ones((sq, sk), dtype=bool)), scores, -np.inf)
    if bias is not None:
        scores = scores + bias
    out = _softmax(scores, axis=-1) @ v
    return out.transpose(0, 2, 1, 3).reshape(b, sq, heads * d)
''',
    "attention_bias": '''
def _attention_bias(key_mask, x, causal, window):
    """Additive mask [B, 1, Sq, Sk] for queries that are the last Sq of the Sk
    positions: 0 where query i may see key j (key_mask 1; j <= i + Sk - Sq when
    causal; j > i + Sk - Sq - window when windowed), float32's lowest elsewhere."""
    sq, sk = x.shape[1], key_mask.shape[1]
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    allowed = (np.asarray(key_mask) != 0)[:, None, None, :]
    if causal:
        allowed = allowed & (j <= i)
    if window:
        allowed = allowed & (j > i - window)
    allowed = np.broadcast_to(allowed, (key_mask.shape[0], 1, sq, sk))
    return np.where(allowed, 0.0, float(np.finfo(np.float32).min))
''',
    "rope": '''
def _rope(x, heads, head_dim, theta, inv_freq=None, positions=None):
    """Rotary position embedding on packed heads [B, S, H*D], at positions 0..S-1
    or at position ids [B, S], rotate-half convention: dims i and i + D/2 form a
    pair rotated by the angle position * theta^(-2i/D), or position * inv_freq[i]
    when the frequencies are given (rescaled, e.g. Llama 3's)."""
    b, s, d = x.shape[0], x.shape[1], head_dim
    if inv_freq is None:
        inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    else:
        inv_freq = np.asarray(inv_freq, dtype=np.float64)
    pos = np.arange(s)[None, :] if positions is None else np.asarray(positions)
    angles = pos[..., None] * inv_freq
    angles = np.concatenate([angles, angles], axis=-1)[:, :, None, :]
    x = x.reshape(b, s, heads, d)
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return (x * np.cos(angles) + rotated * np.sin(angles)).reshape(b, s, heads * d)
''',
    "timestep_embedding": '''
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
    "cross_entropy": '''
def _cross_entropy(logits, labels):
    """Mean over positions of -log softmax(logits)[label]: logits [..., C], labels [...]."""
    logp = _log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
    return -np.mean(logp[np.arange(logp.shape[0]), labels.reshape(-1)])
''',
    "masked_cross_entropy": '''
def _masked_cross_entropy(logits, labels, mask):
    """Cross-entropy summed where mask is 1, divided by max(sum(mask), 1)."""
    logp = _log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
    picked = logp[np.arange(logp.shape[0]), labels.reshape(-1)]
    weight = mask.reshape(-1).astype(np.float64)
    return -np.sum(picked * weight) / max(np.sum(weight), 1.0)
''',
    "dice_loss": '''
def _dice_loss(logits, labels, smooth):
    """Soft Dice (V-Net): p = softmax over the class axis 1, y the one-hot labels;
    1 - mean over classes of (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth),
    each sum over the batch and every position."""
    p = _softmax(logits, axis=1)
    y = np.moveaxis(np.eye(logits.shape[1])[labels], -1, 1)
    axes = (0,) + tuple(range(2, logits.ndim))
    inter, total = np.sum(p * y, axis=axes), np.sum(p, axis=axes) + np.sum(y, axis=axes)
    return 1.0 - np.mean((2.0 * inter + smooth) / (total + smooth))
''',
    "round_to_bfloat16": '''
def _round_to_bfloat16(x):
    """x rounded to bfloat16 precision (to float32, then nearest even in the top 16
    bits); NumPy has no bfloat16 type, so the values stay float64."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).astype(np.float64)
''',
}

class NumpyEmitter(ModuleEmitter):
    backend = "numpy"
    lib = "np"
    ops = OPS
    layers = LAYERS
    helper_sources = HELPERS
    reserved = frozenset(RESERVED)
    base_class = ""
    call_method = "__call__"

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
        emit_generate(out, m, NUMPY_STEP)
        emit_tasks(out, m)
        out(sampler_source(m, "numpy"))
        return format_python(out.text())

    def param_member(self, p: Param) -> str:
        return f"np.zeros({tuple(p.type.shape)})"

    def sub_member(self, cls: str) -> str:
        return f"{cls}()"

    def repeat_member(self, cls: str, count: int) -> str:
        return f"[{cls}() for _ in range({count})]"

    def param_expr(self, md: ModuleDef, target: str) -> str:
        return "self" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in target.split("."))


def output_dtypes(model: Model) -> dict[str, str]:
    """Output name -> the NumPy dtype `run` rounds it to (bfloat16 values as float32)."""
    top = model.top_module
    return {
        name: "float32" if v.type.dtype is DType.bf16 else v.type.dtype.numpy
        for name, v in zip(top.output_names, top.outputs)
    }


def check_coverage() -> list[str]:
    """Registry ops with no numpy emitter (empty when the backend is complete)."""
    return uncovered_ops(OPS, LAYERS)


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


NUMPY_STEP = '''
def _decode_step(state, feed, cache):
    """One forward on the new tokens (float64, as `run`), the cache kept between steps."""
    out = state(**feed, **(cache or {}))
    cache = {past: out[present] for past, present in _DECODE["cache"]}
    return out[_DECODE["logits"]][..., -1, :].astype(np.float32), cache
'''


def lower_to_numpy(model: Model) -> str:
    return NumpyEmitter(model).emit()
