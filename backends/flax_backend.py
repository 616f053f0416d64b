"""IR -> standalone JAX/Flax source, written against `flax.nnx`.

Why nnx and not linen: Flax recommends nnx for new code, and its modules are plain
Python objects holding their variables, which mirrors the torch backend's
`nn.Module` tree one to one (a module definition becomes an `nnx.Module` class, a
`Repeat` an `nnx.List` looped in `__call__`, a tied weight is read through the
attribute path that owns it, so it stays one parameter).

Layers use nnx's own classes (`nnx.Linear`, `nnx.Embed`, `nnx.LayerNorm`,
`nnx.RMSNorm`, `nnx.GroupNorm`, `nnx.Conv`), with their native layouts: linear
kernels are `[in, out]`, conv kernels `[kh, kw, in, out]` on channels-last inputs
(the IR is NCHW, so conv and group norm transpose around the call), norm weights
are called `scale`. The generated `_PARAMS` table maps each canonical name to its
nnx path and layout kind; `load_canonical`/`to_canonical` convert with it.

Precision: `run` traces the model under `jax.default_matmul_precision("highest")`,
so its matmuls and convolutions run in full float32 (CONTRACT §5) without the module
touching JAX's global settings when imported; the norms use the two-pass variance
(`use_fast_variance=False`) as torch does.
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
from metagen.ir.graph import Model, ModuleDef, Param, resolve_param

RESERVED = {
    "jax", "jnp", "nnx", "np", "math", "zlib", "self", "rngs", "Model", "CONFIG", "INPUTS", "OUTPUTS",
}

# ------------------------------------------------------------------ layer ops
# Each layer is an nnx module built with `rngs` in scope; `params` maps the canonical
# local names to nnx's variable names and layout kinds (see `_PARAMS`).


def _linear_ctor(c):
    return f"nnx.Linear({c.a['in_features']}, {c.a['out_features']}, use_bias={c.a['bias']}, rngs=rngs)"


def _conv_ctor(c):
    p = c.a["padding"]
    return (
        f"nnx.Conv({c.a['in_channels']}, {c.a['out_channels']}, ({c.a['kernel']}, {c.a['kernel']}), "
        f"strides={c.a['stride']}, padding=(({p}, {p}), ({p}, {p})), use_bias={c.a['bias']}, rngs=rngs)"
    )


def _channels_last(c, layer: str, x: str) -> str:
    return f"jnp.transpose({layer}(jnp.transpose({x}, (0, 2, 3, 1))), (0, 3, 1, 2))"


LAYERS: dict[str, LayerRule] = {
    "linear": LayerRule(_linear_ctor, params={"weight": ("kernel", "linear"), "bias": ("bias", "same")}),
    "embedding": LayerRule(
        lambda c: f"nnx.Embed({c.a['num']}, {c.a['dim']}, rngs=rngs)",
        params={"weight": ("embedding", "same")},
    ),
    "layer_norm": LayerRule(
        lambda c: (
            f"nnx.LayerNorm({c.a['dim']}, epsilon={c.a['eps']!r}, use_scale={c.a['affine']}, "
            f"use_bias={c.a['affine'] and c.a['bias']}, use_fast_variance=False, rngs=rngs)"
        ),
        params={"weight": ("scale", "same"), "bias": ("bias", "same")},
    ),
    "rms_norm": LayerRule(
        lambda c: f"nnx.RMSNorm({c.a['dim']}, epsilon={c.a['eps']!r}, use_fast_variance=False, rngs=rngs)",
        params={"weight": ("scale", "same")},
    ),
    "group_norm": LayerRule(
        lambda c: (
            f"nnx.GroupNorm({c.a['channels']}, num_groups={c.a['groups']}, epsilon={c.a['eps']!r}, "
            f"use_fast_variance=False, rngs=rngs)"
        ),
        apply=_channels_last,
        params={"weight": ("scale", "same"), "bias": ("bias", "same")},
    ),
    "conv2d": LayerRule(
        _conv_ctor, apply=_channels_last, params={"weight": ("kernel", "conv"), "bias": ("bias", "same")}
    ),
    "batch_norm": LayerRule(
        lambda c: (
            f"{c.helper('BatchNorm2d')}({c.a['channels']}, eps={c.a['eps']!r}, momentum={c.a['momentum']!r}"
            + (", frozen=True)" if c.a["frozen"] else ")")
        ),
        params={name: (name, "same") for name in ("weight", "bias", "running_mean", "running_var")},
    ),
}

# ------------------------------------------------------------------ primitive ops
# The base table in `jnp`, with jax.nn / jax.lax where they are the idiom.

# int64 where JAX has it enabled, else int32: the module's and the loss program's `_I64`.
I64_LINE = '_I64 = jnp.int64 if jax.config.read("jax_enable_x64") else jnp.int32'
_JNP_DTYPES = {"f32": "jnp.float32", "f16": "jnp.float16", "bf16": "jnp.bfloat16", "i64": "_I64", "i32": "jnp.int32", "bool": "jnp.bool_"}

OPS: dict[str, Rule] = {
    **BASE_OPS,
    "gelu": lambda c, x: f"jax.nn.gelu({x}, approximate=False)",
    "gelu_tanh": lambda c, x: f"jax.nn.gelu({x}, approximate=True)",
    "silu": lambda c, x: f"jax.nn.silu({x})",
    "relu": lambda c, x: f"jax.nn.relu({x})",
    "sigmoid": lambda c, x: f"jax.nn.sigmoid({x})",
    "softmax": lambda c, x: f"jax.nn.softmax({x}, axis={c.a['axis']})",
    "slice": lambda c, x: f"jax.lax.slice_in_dim({x}, {c.a['start']}, {c.a['end']}, axis={c.a['axis']})",
    "select": lambda c, x: f"jax.lax.index_in_dim({x}, {c.a['index']}, axis={c.a['axis']}, keepdims=False)",
    "cast": lambda c, x: f"{x}.astype({_JNP_DTYPES[c.a['dtype']]})",
    "log_softmax": lambda c, x: f"jax.nn.log_softmax({x}, axis={c.a['axis']})",
    "leaky_relu": lambda c, x: f"jax.nn.leaky_relu({x}, {c.a['slope']!r})",
    "sine_positions_2d": sine_positions_rule('jnp.asarray({t}, dtype={x}.dtype)'),
    "max_pool2d": lambda c, x: (
        f"jax.lax.reduce_window({x}, -jnp.inf, jax.lax.max, (1, 1, {c.a['kernel']}, {c.a['kernel']}), "
        f"(1, 1, {c.a['stride']}, {c.a['stride']}), "
        f"((0, 0), (0, 0), ({c.a['padding']}, {c.a['padding']}), ({c.a['padding']}, {c.a['padding']})))"
    ),
}

HELPERS: dict[str, str] = {
    "sine_positions_2d": SINE_POSITIONS_SOURCE,
    "dice_loss": '''
def _dice_loss(logits, labels, smooth):
    """Soft Dice: 1 - mean over classes of (2 sum(p y) + s) / (sum(p) + sum(y) + s)."""
    p = jax.nn.softmax(logits, axis=1)
    y = jnp.moveaxis(jax.nn.one_hot(labels, logits.shape[1], dtype=p.dtype), -1, 1)
    axes = (0,) + tuple(range(2, logits.ndim))
    inter, total = jnp.sum(p * y, axis=axes), jnp.sum(p, axis=axes) + jnp.sum(y, axis=axes)
    return 1.0 - jnp.mean((2.0 * inter + smooth) / (total + smooth))
''',
    "BatchNorm2d": '''
class _BatchNorm2d(nnx.Module):
    """Batch norm over [B, C, H, W] (channels first, as the IR), written out so its
    training form is torch's: batch statistics with the biased variance, the running
    mean and unbiased variance moved by `momentum`. `model.train()` /
    `model.eval()` flip `use_running_average`; the running statistics are
    `nnx.BatchStat`s, so they are not `nnx.Param`s and not trained by gradient."""

    def __init__(self, channels, eps, momentum, frozen=False):
        self.eps, self.momentum, self.frozen = eps, momentum, frozen
        self.use_running_average = True
        kind = nnx.BatchStat if frozen else nnx.Param  # frozen (DETR): not trained, not counted
        self.weight = kind(jnp.ones((channels,), dtype=jnp.float32))
        self.bias = kind(jnp.zeros((channels,), dtype=jnp.float32))
        self.running_mean = nnx.BatchStat(jnp.zeros((channels,), dtype=jnp.float32))
        self.running_var = nnx.BatchStat(jnp.ones((channels,), dtype=jnp.float32))

    def __call__(self, x):
        if self.use_running_average or self.frozen:
            mean, var = self.running_mean[...], self.running_var[...]
        else:
            mean = jnp.mean(x, axis=(0, 2, 3))
            var = jnp.mean(jnp.square(x - mean[:, None, None]), axis=(0, 2, 3))
            n = x.size // x.shape[1]
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean[...] + m * jax.lax.stop_gradient(mean)
            unbiased = jax.lax.stop_gradient(var) * (n / max(n - 1, 1))
            self.running_var[...] = (1 - m) * self.running_var[...] + m * unbiased
        scale = self.weight[...] / jnp.sqrt(var + self.eps)
        return (x - mean[:, None, None]) * scale[:, None, None] + self.bias[...][:, None, None]
''',
    **COMMON_HELPERS,
    "scatter_add": '''
def _scatter_add(src, index, rows):
    """out[index[e]] += src[e] into `rows` rows (zeros where no index points)."""
    return jax.ops.segment_sum(src, index, num_segments=rows)
''',
    "segment_softmax": '''
def _segment_softmax(scores, index, rows):
    """Softmax over the entries of scores that share an index, each segment's max subtracted."""
    top = jax.lax.stop_gradient(jax.ops.segment_max(scores, index, num_segments=rows))
    e = jnp.exp(scores - top[index])
    return e / jax.ops.segment_sum(e, index, num_segments=rows)[index]
''',
    "attention": '''
def _attention(q, k, v, heads, kv_heads, head_dim, is_causal, scale=None, split_kv=False, bias=None):
    """Scaled dot-product attention on packed heads [B, S, H*D] (k and v [B, KVH, S, D]
    with split_kv), grouped-query when kv_heads < heads, plus an additive bias
    [B, 1, Sq, Sk] when given."""
    b, sq = q.shape[0], q.shape[1]
    if split_kv:
        k, v = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    sk = k.shape[1]
    out = jax.nn.dot_product_attention(
        q.reshape(b, sq, heads, head_dim),
        k.reshape(b, sk, kv_heads, head_dim),
        v.reshape(b, sk, kv_heads, head_dim),
        bias=bias,
        scale=scale,
        is_causal=is_causal,
        implementation="xla",
    )
    return out.reshape(b, sq, heads * head_dim)
''',
    "rope": '''
def _rope(x, heads, head_dim, theta, inv_freq=None, positions=None):
    """Rotary position embedding (rotate-half convention) on packed heads [B, S, H*D],
    at positions 0..S-1 or at position ids [B, S] (`inv_freq`: the frequencies when
    they are not theta's, e.g. rescaled)."""
    seq = x.shape[1]
    if inv_freq is None:
        inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    else:
        inv_freq = jnp.asarray(inv_freq, dtype=jnp.float32)
    pos = jnp.arange(seq, dtype=jnp.float32)[None, :] if positions is None else positions.astype(jnp.float32)
    freqs = pos[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos, sin = jnp.cos(emb).astype(x.dtype)[:, :, None, :], jnp.sin(emb).astype(x.dtype)[:, :, None, :]
    x = x.reshape(x.shape[0], seq, heads, head_dim)
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x * cos + rotated * sin).reshape(x.shape[0], seq, heads * head_dim)
''',
    "attention_bias": '''
def _attention_bias(key_mask, x, causal, window):
    """Additive mask [B, 1, Sq, Sk]: 0 where a query may see a key, float32's lowest
    elsewhere; the queries are the last Sq of the Sk positions."""
    sq, sk = x.shape[1], key_mask.shape[1]
    i = jnp.arange(sq)[:, None] + (sk - sq)
    j = jnp.arange(sk)[None, :]
    allowed = (key_mask != 0)[:, None, None, :]
    if causal:
        allowed = allowed & (j <= i)
    if window:
        allowed = allowed & (j > i - window)
    allowed = jnp.broadcast_to(allowed, (key_mask.shape[0], 1, sq, sk))
    return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
''',
    "timestep_embedding": '''
def _timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, max_period):
    """Sinusoidal timestep embedding [B] -> [B, dim], as diffusers computes it."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
    freqs = jnp.exp(exponent / (half - freq_shift))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    return emb
''',
    "masked_cross_entropy": '''
def _masked_cross_entropy(logits, labels, mask):
    """Cross-entropy averaged over the positions where mask is 1."""
    logp = jax.nn.log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
    picked = jnp.take_along_axis(logp, labels.reshape(-1, 1).astype(jnp.int32), axis=-1)[:, 0]
    weight = mask.reshape(-1).astype(logp.dtype)
    return -jnp.sum(picked * weight) / jnp.maximum(jnp.sum(weight), 1.0)
''',
    "cross_entropy": '''
def _cross_entropy(logits, labels):
    """Mean cross-entropy of logits [..., C] against integer labels [...]."""
    logp = jax.nn.log_softmax(logits.reshape(-1, logits.shape[-1]), axis=-1)
    picked = jnp.take_along_axis(logp, labels.reshape(-1, 1).astype(jnp.int32), axis=-1)
    return -jnp.mean(picked)
''',
}


class FlaxEmitter(ModuleEmitter):
    backend = "flax"
    lib = "jnp"
    ops = OPS
    layers = LAYERS
    helper_sources = HELPERS
    reserved = frozenset(RESERVED)
    base_class = "nnx.Module"
    init_signature = "self, *, rngs: nnx.Rngs"
    call_method = "__call__"

    def emit(self) -> str:
        out = self.out
        m = self.model
        emit_common_header(out, m, "JAX/Flax (nnx)")
        out("import math")
        out("import zlib")
        out("")
        out("import jax")
        out("import jax.numpy as jnp")
        out("import numpy as np")
        out("from flax import nnx")
        out("")
        out(I64_LINE)
        out("")
        body = self.emit_classes()
        self.emit_helpers(out)
        out.lines.extend(body.lines)
        out(f"Model = {self.class_names[m.top]}")
        out("")
        emit_tables(out, m)
        out("_PARAMS = [")
        with out.indent():
            for name, path, kind in param_table(m):
                out(f"({name!r}, {py_literal(list(path))}, {kind!r}),")
        out("]")
        out(INIT_FUNCTIONS)
        out(EXAMPLE_FUNCTION)
        out(FLAX_API)
        emit_generate(out, m, FLAX_STEP)
        emit_tasks(out, m)
        out(sampler_source(m, "flax"))
        return format_python(out.text())

    def param_member(self, p: Param) -> str:
        shape = "".join(f"{d}, " for d in p.type.shape)
        return f"nnx.Param(jnp.zeros(({shape}), dtype=jnp.float32))"

    def sub_member(self, cls: str) -> str:
        return f"{cls}(rngs=rngs)"

    def repeat_member(self, cls: str, count: int) -> str:
        return f"nnx.List([{cls}(rngs=rngs) for _ in range({count})])"

    int64 = "_I64"

    def param_expr(self, md: ModuleDef, target: str) -> str:
        path, _ = nnx_param_path(self.model, md, target)
        return "self" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) + "[...]"


def nnx_param_path(model: Model, md: ModuleDef, dotted: str) -> tuple[tuple[str | int, ...], str]:
    """The nnx attribute path and layout kind of parameter `dotted` (a canonical
    path relative to module `md`)."""
    ref = resolve_param(model.modules, md, dotted, repeats=True)
    if ref.layer is None:
        return (*ref.steps, ref.name), "same"
    var, kind = LAYERS[ref.layer.op].params[ref.name]
    return (*ref.steps, var), kind


def param_table(model: Model) -> list[tuple[str, tuple[str | int, ...], str]]:
    """(canonical name, nnx path, layout kind) for every parameter, canonical order."""
    top = model.top_module
    out = []
    for name, _ in model.walk_params():
        path, kind = nnx_param_path(model, top, name)
        out.append((name, path, kind))
    return out


def check_coverage() -> list[str]:
    """Registry ops with no flax emitter (empty when the backend is complete)."""
    return uncovered_ops(OPS, LAYERS)


FLAX_API = '''
_TO_FLAX = {
    "same": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 3, 1, 0),
}
_TO_CANONICAL = {
    "same": lambda a: a,
    "linear": lambda a: a.T,
    "conv": lambda a: a.transpose(3, 2, 0, 1),
}


def _variable(model, path):
    obj = model
    for p in path:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    return obj


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def init(seed=0, dtype="float32"):
    """A Model holding the canonical initial weights for `seed`, as `dtype` (a key of DTYPES)."""
    return load_canonical(init_arrays(seed), dtype)


def load_canonical(tensors, dtype="float32"):
    """A Model from a dict canonical name -> numpy array (PyTorch layout), its weights as `dtype`."""
    to = DTYPES[dtype]
    want = {name for name, _, _ in _PARAMS}
    if set(tensors) != want:
        missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
        raise KeyError(f"canonical weights do not match the model: missing {missing}, unexpected {extra}")
    model = nnx.eval_shape(lambda: Model(rngs=nnx.Rngs(0)))
    for name, path, kind in _PARAMS:
        var = _variable(model, path)
        value = _TO_FLAX[kind](np.asarray(tensors[name], dtype=np.float32))
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{name}: shape {value.shape} does not fit {var.shape}")
        var.set_value(jnp.asarray(value, dtype=to))
    return model


def to_canonical(state):
    """Dict canonical name -> numpy array of a Model's weights (PyTorch layout)."""
    return {
        name: np.ascontiguousarray(_TO_CANONICAL[kind](_numpy(_variable(state, path)[...])))
        for name, path, kind in _PARAMS
    }


def _numpy(x):
    """Lower precisions come back as float32 (exactly), as from the torch module."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype in (jnp.bfloat16, jnp.float16) else x


def _apply(graphdef, params, rest, inputs):
    with jax.default_matmul_precision("highest"):
        model = nnx.merge(graphdef, params, rest)
        return model(**inputs), nnx.split(model, nnx.Param, ...)[2]


_apply_jit = jax.jit(_apply, static_argnums=0)


def _forward(model, inputs):
    """The jitted forward on a pure split of the model: the parameters go in and do not
    come back (`nnx.jit` returns the whole state, which costs a copy of every weight per
    call); the other state (batch-norm statistics) does, and is written back."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    out, rest = _apply_jit(graphdef, params, rest, inputs)
    nnx.update(model, rest)
    return out


def run(state, inputs):
    """Outputs as numpy arrays for a dict of numpy inputs (jit-compiled, cached; float
    inputs in the weights' dtype)."""
    dtype = _variable(state, _PARAMS[0][1])[...].dtype if _PARAMS else jnp.float32
    feed = {}
    for name, value in inputs.items():
        x = jnp.asarray(value)
        feed[name] = x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    out = _forward(state, feed)
    return {name: _numpy(value) for name, value in out.items()}
'''


FLAX_STEP = '''
def _decode_step(state, feed, cache):
    """One forward on the new tokens, the cache kept as jax arrays between steps (run
    eagerly: the cache grows every step, so a jitted forward would recompile each time)."""
    inputs = {name: jnp.asarray(value) for name, value in feed.items()}
    with jax.default_matmul_precision("highest"):
        out = state(**inputs, **(cache or {}))
    cache = {past: out[present] for past, present in _DECODE["cache"]}
    return np.asarray(out[_DECODE["logits"]][..., -1, :], dtype=np.float32), cache
'''


def lower_to_flax(model: Model) -> str:
    return FlaxEmitter(model).emit()
