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

from typing import Any, Callable

from metagen.backends.pyemit import (
    EXAMPLE_FUNCTION,
    INIT_FUNCTIONS,
    Lines,
    ModuleEmitter,
    Namespace,
    emit_common_header,
    emit_tables,
    format_python,
    missing_emitter,
    py_literal,
)
from metagen.ir import ops
from metagen.ir.graph import Layer, Model, ModuleDef, Node, Repeat, Sub, resolve_param

RESERVED = {
    "jax", "jnp", "nnx", "np", "math", "zlib", "self", "rngs", "Model", "CONFIG", "INPUTS", "OUTPUTS",
}

# ------------------------------------------------------------------ layer ops
# constructor: attrs -> nnx constructor expression (rngs in scope);
# apply: (attribute expression, operand) -> call expression;
# params: canonical local name -> (nnx variable name, layout kind).


def _linear_ctor(a):
    return f"nnx.Linear({a['in_features']}, {a['out_features']}, use_bias={a['bias']}, rngs=rngs)"


def _conv_ctor(a):
    p = a["padding"]
    return (
        f"nnx.Conv({a['in_channels']}, {a['out_channels']}, ({a['kernel']}, {a['kernel']}), "
        f"strides={a['stride']}, padding=(({p}, {p}), ({p}, {p})), use_bias={a['bias']}, rngs=rngs)"
    )


def _channels_last(layer: str, x: str) -> str:
    return f"jnp.transpose({layer}(jnp.transpose({x}, (0, 2, 3, 1))), (0, 3, 1, 2))"


LAYERS: dict[str, tuple[Callable[[dict[str, Any]], str], Callable[[str, str], str], dict[str, tuple[str, str]]]] = {
    "linear": (_linear_ctor, lambda l, x: f"{l}({x})", {"weight": ("kernel", "linear"), "bias": ("bias", "same")}),
    "embedding": (
        lambda a: f"nnx.Embed({a['num']}, {a['dim']}, rngs=rngs)",
        lambda l, x: f"{l}({x})",
        {"weight": ("embedding", "same")},
    ),
    "layer_norm": (
        lambda a: (
            f"nnx.LayerNorm({a['dim']}, epsilon={a['eps']!r}, use_scale={a['affine']}, "
            f"use_bias={a['affine'] and a['bias']}, use_fast_variance=False, rngs=rngs)"
        ),
        lambda l, x: f"{l}({x})",
        {"weight": ("scale", "same"), "bias": ("bias", "same")},
    ),
    "rms_norm": (
        lambda a: f"nnx.RMSNorm({a['dim']}, epsilon={a['eps']!r}, use_fast_variance=False, rngs=rngs)",
        lambda l, x: f"{l}({x})",
        {"weight": ("scale", "same")},
    ),
    "group_norm": (
        lambda a: (
            f"nnx.GroupNorm({a['channels']}, num_groups={a['groups']}, epsilon={a['eps']!r}, "
            f"use_fast_variance=False, rngs=rngs)"
        ),
        _channels_last,
        {"weight": ("scale", "same"), "bias": ("bias", "same")},
    ),
    "conv2d": (_conv_ctor, _channels_last, {"weight": ("kernel", "conv"), "bias": ("bias", "same")}),
}

# ------------------------------------------------------------------ primitive ops
# Each takes the node's attributes and its operands' Python names and returns an
# expression. Helpers (functions some ops need) are declared in HELPERS.

_JNP_DTYPES = {"f32": "jnp.float32", "f16": "jnp.float16", "bf16": "jnp.bfloat16", "i64": "_I64", "i32": "jnp.int32", "bool": "jnp.bool_"}


def _attention(a, q, k, v):
    scale = f", scale={a['scale']!r}" if a["scale"] is not None else ""
    return (
        f"_attention({q}, {k}, {v}, {a['heads']}, {a['kv_heads']}, {a['head_dim']}, "
        f"is_causal={a['causal']}{scale})"
    )


OPS: dict[str, Callable[..., str]] = {
    "add": lambda a, x, y: f"{x} + {y}",
    "sub": lambda a, x, y: f"{x} - {y}",
    "mul": lambda a, x, y: f"{x} * {y}",
    "scale": lambda a, x: f"{x} * {a['factor']!r}",
    "gelu": lambda a, x: f"jax.nn.gelu({x}, approximate=False)",
    "gelu_tanh": lambda a, x: f"jax.nn.gelu({x}, approximate=True)",
    "quick_gelu": lambda a, x: f"{x} * jax.nn.sigmoid(1.702 * {x})",
    "silu": lambda a, x: f"jax.nn.silu({x})",
    "relu": lambda a, x: f"jax.nn.relu({x})",
    "tanh": lambda a, x: f"jnp.tanh({x})",
    "sigmoid": lambda a, x: f"jax.nn.sigmoid({x})",
    "exp": lambda a, x: f"jnp.exp({x})",
    "softmax": lambda a, x: f"jax.nn.softmax({x}, axis={a['axis']})",
    "l2_normalize": lambda a, x: (
        f"{x} / jnp.maximum(jnp.linalg.norm({x}, axis={a['axis']}, keepdims=True), 1e-12)"
    ),
    "matmul": lambda a, x, y: (
        f"jnp.matmul({x}, jnp.swapaxes({y}, -1, -2))" if a["transpose_b"] else f"jnp.matmul({x}, {y})"
    ),
    "linear_fn": lambda a, x, w: f"jnp.matmul({x}, {w}.T)",
    "attention": _attention,
    "rope": lambda a, x: f"_rope({x}, {a['heads']}, {a['head_dim']}, {a['theta']!r})",
    "positions": lambda a, x: f"jnp.arange({x}.shape[{a['axis']}])",
    "concat": lambda a, *xs: f"jnp.concatenate([{', '.join(xs)}], axis={a['axis']})",
    "stack": lambda a, *xs: f"jnp.stack([{', '.join(xs)}], axis={a['axis']})",
    "slice": lambda a, x: f"jax.lax.slice_in_dim({x}, {a['start']}, {a['end']}, axis={a['axis']})",
    "select": lambda a, x: f"jax.lax.index_in_dim({x}, {a['index']}, axis={a['axis']}, keepdims=False)",
    "transpose": lambda a, x: f"jnp.transpose({x}, ({''.join(f'{p}, ' for p in a['perm'])}))",
    "unsqueeze": lambda a, x: f"jnp.expand_dims({x}, ({''.join(f'{p}, ' for p in sorted(a['axes']))}))",
    "prepend": lambda a, x, t: (
        f"jnp.concatenate([jnp.broadcast_to({t}, ({x}.shape[0],) + {t}.shape[1:]), {x}], axis=1)"
    ),
    "flatten_spatial": lambda a, x: f"jnp.transpose({x}.reshape({x}.shape[0], {x}.shape[1], -1), (0, 2, 1))",
    "unflatten_spatial": lambda a, x: (
        f"jnp.transpose({x}, (0, 2, 1)).reshape({x}.shape[0], {x}.shape[2], {a['height']}, {a['width']})"
    ),
    "mean": lambda a, x: f"jnp.mean({x}, axis={a['axis']})",
    "gather_argmax": lambda a, x, ids: f"{x}[jnp.arange({x}.shape[0]), jnp.argmax({ids}, axis=-1)]",
    "upsample_nearest": lambda a, x: (
        f"jnp.repeat(jnp.repeat({x}, {a['factor']}, axis=2), {a['factor']}, axis=3)"
    ),
    "timestep_embedding": lambda a, t: (
        f"_timestep_embedding({t}, {a['dim']}, {a['flip_sin_to_cos']}, {a['freq_shift']!r}, {a['max_period']!r})"
    ),
    "cast": lambda a, x: f"{x}.astype({_JNP_DTYPES[a['dtype']]})",
    "cross_entropy": lambda a, logits, labels: f"_cross_entropy({logits}, {labels})",
    "mse": lambda a, x, y: f"jnp.mean(jnp.square({x} - {y}))",
    "masked_cross_entropy": lambda a, logits, labels, mask: f"_masked_cross_entropy({logits}, {labels}, {mask})",
}

HELPERS: dict[str, str] = {
    "attention": '''
def _attention(q, k, v, heads, kv_heads, head_dim, is_causal, scale=None):
    """Scaled dot-product attention on packed heads [B, S, H*D], grouped-query when
    kv_heads < heads."""
    b, sq, sk = q.shape[0], q.shape[1], k.shape[1]
    out = jax.nn.dot_product_attention(
        q.reshape(b, sq, heads, head_dim),
        k.reshape(b, sk, kv_heads, head_dim),
        v.reshape(b, sk, kv_heads, head_dim),
        scale=scale,
        is_causal=is_causal,
        implementation="xla",
    )
    return out.reshape(b, sq, heads * head_dim)
''',
    "rope": '''
def _rope(x, heads, head_dim, theta):
    """Rotary position embedding (rotate-half convention) on packed heads [B, S, H*D]."""
    seq = x.shape[1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = jnp.outer(jnp.arange(seq, dtype=jnp.float32), inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos, sin = jnp.cos(emb).astype(x.dtype)[:, None, :], jnp.sin(emb).astype(x.dtype)[:, None, :]
    x = x.reshape(x.shape[0], seq, heads, head_dim)
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x * cos + rotated * sin).reshape(x.shape[0], seq, heads * head_dim)
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
    reserved = frozenset(RESERVED)
    base_class = "nnx.Module"
    init_signature = "self, *, rngs: nnx.Rngs"
    call_method = "__call__"
    helper_sources = HELPERS

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
        out('_I64 = jnp.int64 if jax.config.read("jax_enable_x64") else jnp.int32')
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
        return format_python(out.text())

    def emit_members(self, out: Lines, md: ModuleDef) -> None:
        for p in md.params.values():
            shape = "".join(f"{d}, " for d in p.type.shape)
            out(f"self.{p.name} = nnx.Param(jnp.zeros(({shape}), dtype=jnp.float32))")
        for name, child in md.children.items():
            if isinstance(child, Layer):
                out(f"self.{name} = {LAYERS[child.op][0](child.attr_dict())}")
            elif isinstance(child, Sub):
                out(f"self.{name} = {self.class_names[child.module]}(rngs=rngs)")
            else:
                sub = self.class_names[child.module]
                out(f"self.{name} = nnx.List([{sub}(rngs=rngs) for _ in range({child.count})])")
        if not md.params and not md.children:
            out("pass")

    def emit_node(self, out: Lines, md: ModuleDef, node: Node, ns: Namespace) -> None:
        args = [ns.name(o) for o in node.operands]
        if node.kind == "param":
            path, _ = nnx_param_path(self.model, md, node.target)
            attr = "self" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
            ns.bind(node.results[0], f"{attr}[...]")
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
            elif isinstance(child, Layer):
                out(f"{res[0]} = {LAYERS[child.op][1](f'self.{node.target}', args[0])}")
            else:
                out(f"{', '.join(res)} = self.{node.target}({', '.join(args)})")
            return
        fn = OPS.get(node.op)
        if fn is None:
            raise missing_emitter("flax", node, self.model)
        if node.op in HELPERS and node.op not in self.helpers:
            self.helpers.append(node.op)
        out(f"{ns.name(node.results[0])} = {fn(node.attrs, *args)}")


def nnx_param_path(model: Model, md: ModuleDef, dotted: str) -> tuple[tuple[str | int, ...], str]:
    """The nnx attribute path and layout kind of parameter `dotted` (a canonical
    path relative to module `md`)."""
    ref = resolve_param(model.modules, md, dotted, repeats=True)
    if ref.layer is None:
        return (*ref.steps, ref.name), "same"
    var, kind = LAYERS[ref.layer.op][2][ref.name]
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
    missing = []
    for name, d in ops.REGISTRY.items():
        if d.is_layer and name not in LAYERS:
            missing.append(name)
        elif not d.is_layer and name not in OPS:
            missing.append(name)
    return missing


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


def init(seed=0):
    """A Model holding the canonical initial weights for `seed`."""
    return load_canonical(init_arrays(seed))


def load_canonical(tensors):
    """A Model from a dict canonical name -> numpy array (PyTorch layout)."""
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
        var.set_value(jnp.asarray(value))
    return model


def to_canonical(state):
    """Dict canonical name -> numpy array of a Model's weights (PyTorch layout)."""
    return {
        name: np.ascontiguousarray(_TO_CANONICAL[kind](np.asarray(_variable(state, path)[...])))
        for name, path, kind in _PARAMS
    }


@nnx.jit
def _forward(model, inputs):
    with jax.default_matmul_precision("highest"):
        return model(**inputs)


def run(state, inputs):
    """Outputs as numpy arrays for a dict of numpy inputs (jit-compiled, cached)."""
    out = _forward(state, {name: jnp.asarray(value) for name, value in inputs.items()})
    return {name: np.asarray(value) for name, value in out.items()}
'''


def lower_to_flax(model: Model) -> str:
    return FlaxEmitter(model).emit()
