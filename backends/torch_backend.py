"""IR -> standalone PyTorch source.

One table maps each primitive op to a one-line expression and each layer op to its
`torch.nn` constructor; module definitions become `nn.Module` classes and `Repeat`
children an `nn.ModuleList` looped in `forward`.
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
)
from metagen.ir.graph import Layer, Model, ModuleDef, Node, Repeat, Sub

RESERVED = {"torch", "nn", "F", "np", "math", "zlib", "self", "Model", "CONFIG", "INPUTS", "OUTPUTS"}

# ------------------------------------------------------------------ layer ops

LAYERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "linear": lambda a: f"nn.Linear({a['in_features']}, {a['out_features']}, bias={a['bias']})",
    "embedding": lambda a: f"nn.Embedding({a['num']}, {a['dim']})",
    "layer_norm": lambda a: (
        f"nn.LayerNorm({a['dim']}, eps={a['eps']!r}, elementwise_affine={a['affine']}, bias={a['bias']})"
    ),
    "rms_norm": lambda a: f"nn.RMSNorm({a['dim']}, eps={a['eps']!r})",
    "group_norm": lambda a: f"nn.GroupNorm({a['groups']}, {a['channels']}, eps={a['eps']!r})",
    "conv2d": lambda a: (
        f"nn.Conv2d({a['in_channels']}, {a['out_channels']}, {a['kernel']}, stride={a['stride']}, "
        f"padding={a['padding']}, bias={a['bias']})"
    ),
}

# ------------------------------------------------------------------ primitive ops
# Each takes the node's attributes and its operands' Python names and returns an
# expression. Helpers (functions some ops need) are declared in HELPERS.


def _attention(a, q, k, v):
    h, kvh, d = a["heads"], a["kv_heads"], a["head_dim"]
    extra = f", scale={a['scale']!r}" if a["scale"] is not None else ""
    gqa = ", enable_gqa=True" if kvh != h else ""
    return (
        f"F.scaled_dot_product_attention({q}.unflatten(-1, ({h}, {d})).transpose(1, 2), "
        f"{k}.unflatten(-1, ({kvh}, {d})).transpose(1, 2), {v}.unflatten(-1, ({kvh}, {d})).transpose(1, 2), "
        f"is_causal={a['causal']}{gqa}{extra}).transpose(1, 2).flatten(2)"
    )


OPS: dict[str, Callable[..., str]] = {
    "add": lambda a, x, y: f"{x} + {y}",
    "sub": lambda a, x, y: f"{x} - {y}",
    "mul": lambda a, x, y: f"{x} * {y}",
    "scale": lambda a, x: f"{x} * {a['factor']!r}",
    "gelu": lambda a, x: f"F.gelu({x})",
    "gelu_tanh": lambda a, x: f'F.gelu({x}, approximate="tanh")',
    "quick_gelu": lambda a, x: f"{x} * torch.sigmoid(1.702 * {x})",
    "silu": lambda a, x: f"F.silu({x})",
    "relu": lambda a, x: f"F.relu({x})",
    "tanh": lambda a, x: f"torch.tanh({x})",
    "sigmoid": lambda a, x: f"torch.sigmoid({x})",
    "exp": lambda a, x: f"torch.exp({x})",
    "softmax": lambda a, x: f"torch.softmax({x}, dim={a['axis']})",
    "l2_normalize": lambda a, x: f"F.normalize({x}, dim={a['axis']})",
    "matmul": lambda a, x, y: f"torch.matmul({x}, {y}.transpose(-1, -2))" if a["transpose_b"] else f"torch.matmul({x}, {y})",
    "linear_fn": lambda a, x, w: f"F.linear({x}, {w})",
    "attention": _attention,
    "rope": lambda a, x: f"_rope({x}, {a['heads']}, {a['head_dim']}, {a['theta']!r})",
    "positions": lambda a, x: f"torch.arange({x}.shape[{a['axis']}], device={x}.device)",
    "concat": lambda a, *xs: f"torch.cat([{', '.join(xs)}], dim={a['axis']})",
    "stack": lambda a, *xs: f"torch.stack([{', '.join(xs)}], dim={a['axis']})",
    "slice": lambda a, x: f"{x}.narrow({a['axis']}, {a['start']}, {a['end'] - a['start']})",
    "select": lambda a, x: f"{x}.select({a['axis']}, {a['index']})",
    "transpose": lambda a, x: f"{x}.permute({', '.join(map(str, a['perm']))})",
    "unsqueeze": lambda a, x: _unsqueeze(x, a["axes"]),
    "prepend": lambda a, x, t: f"torch.cat([{t}.expand({x}.shape[0], -1, -1), {x}], dim=1)",
    "flatten_spatial": lambda a, x: f"{x}.flatten(2).transpose(1, 2)",
    "unflatten_spatial": lambda a, x: f"{x}.transpose(1, 2).unflatten(2, ({a['height']}, {a['width']}))",
    "mean": lambda a, x: f"{x}.mean(dim={a['axis']})",
    "gather_argmax": lambda a, x, ids: f"{x}[torch.arange({x}.shape[0], device={x}.device), {ids}.argmax(dim=-1)]",
    "upsample_nearest": lambda a, x: f'F.interpolate({x}, scale_factor={a["factor"]}, mode="nearest")',
    "timestep_embedding": lambda a, t: (
        f"_timestep_embedding({t}, {a['dim']}, {a['flip_sin_to_cos']}, {a['freq_shift']!r}, {a['max_period']!r})"
    ),
    "cast": lambda a, x: f"{x}.to(torch.{_TORCH_DTYPES[a['dtype']]})",
    "cross_entropy": lambda a, logits, labels: f"F.cross_entropy({logits}.flatten(0, -2), {labels}.flatten())",
    "mse": lambda a, x, y: f"F.mse_loss({x}, {y})",
    "masked_cross_entropy": lambda a, logits, labels, mask: f"_masked_cross_entropy({logits}, {labels}, {mask})",
}

_TORCH_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "i64": "int64", "i32": "int32", "bool": "bool"}


def _unsqueeze(x: str, axes) -> str:
    for ax in sorted(axes):
        x = f"{x}.unsqueeze({ax})"
    return x


# Standard-library modules a helper needs beyond math and zlib.
HELPER_IMPORTS: dict[str, tuple[str, ...]] = {"rope": ("functools",)}

HELPERS: dict[str, str] = {
    "masked_cross_entropy": '''
def _masked_cross_entropy(logits, labels, mask):
    """Cross-entropy averaged over the positions where mask is 1."""
    per_token = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none")
    weight = mask.flatten().to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)
''',
    "rope": '''
@functools.lru_cache(maxsize=8)
def _rope_cos_sin(seq, head_dim, theta, device, dtype, inference):
    """cos and sin [seq, 1, head_dim], computed once per shape and shared by every layer
    (`inference` keeps tensors made under torch.inference_mode apart: autograd refuses them)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = torch.outer(torch.arange(seq, device=device).float(), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]


def _rope(x, heads, head_dim, theta):
    """Rotary position embedding (rotate-half convention) on packed heads [B, S, H*D]."""
    cos, sin = _rope_cos_sin(x.shape[1], head_dim, theta, x.device, x.dtype, torch.is_inference_mode_enabled())
    x = x.unflatten(-1, (heads, head_dim))
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x * cos + rotated * sin).flatten(2)
''',
    "timestep_embedding": '''
def _timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, max_period):
    """Sinusoidal timestep embedding [B] -> [B, dim], as diffusers computes it."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb
''',
}


class TorchEmitter(ModuleEmitter):
    reserved = frozenset(RESERVED)
    base_class = "nn.Module"
    call_method = "forward"
    helper_sources = HELPERS

    def emit(self) -> str:
        out = self.out
        m = self.model
        body = self.emit_classes()
        emit_common_header(out, m, "PyTorch")
        for name in sorted({"math", "zlib"}.union(*(HELPER_IMPORTS.get(h, ()) for h in self.helpers))):
            out(f"import {name}")
        out("")
        out("import numpy as np")
        out("import torch")
        out("import torch.nn.functional as F")
        out("from torch import nn")
        out("")
        self.emit_helpers(out)
        out.lines.extend(body.lines)
        out(f"Model = {self.class_names[m.top]}")
        out("")
        emit_tables(out, m)
        out(INIT_FUNCTIONS)
        out(EXAMPLE_FUNCTION)
        out(TORCH_API)
        return format_python(out.text())

    def emit_members(self, out: Lines, md: ModuleDef) -> None:
        out("super().__init__()")
        for p in md.params.values():
            out(f"self.{p.name} = nn.Parameter(torch.empty({', '.join(map(str, p.type.shape)) or '()'}))")
        for name, child in md.children.items():
            if isinstance(child, Layer):
                out(f"self.{name} = {LAYERS[child.op](child.attr_dict())}")
            elif isinstance(child, Sub):
                out(f"self.{name} = {self.class_names[child.module]}()")
            else:
                out(f"self.{name} = nn.ModuleList({self.class_names[child.module]}() for _ in range({child.count}))")

    def emit_node(self, out: Lines, md: ModuleDef, node: Node, ns: Namespace) -> None:
        args = [ns.name(o) for o in node.operands]
        if node.kind == "param":
            ns.bind(node.results[0], f"self.{node.target}")
            return
        if node.kind == "call":
            child = md.children[node.target]
            res = [ns.name(r) for r in node.results]
            if isinstance(child, Repeat):
                x = args[0]
                rest = "".join(f", {a}" for a in args[1:])
                out(f"{res[0]} = {x}")
                out(f"for layer in self.{node.target}:")
                with out.indent():
                    out(f"{res[0]} = layer({res[0]}{rest})")
            else:
                out(f"{', '.join(res)} = self.{node.target}({', '.join(args)})")
            return
        fn = OPS.get(node.op)
        if fn is None:
            raise missing_emitter("torch", node, self.model)
        if node.op in HELPERS and node.op not in self.helpers:
            self.helpers.append(node.op)
        out(f"{ns.name(node.results[0])} = {fn(node.attrs, *args)}")


TORCH_API = '''
def init(seed=0):
    """A Model holding the canonical initial weights for `seed`."""
    return load_canonical(init_arrays(seed))


def load_canonical(tensors):
    """A Model from a dict canonical name -> numpy array (PyTorch layout)."""
    with torch.device("meta"):
        model = Model()
    state = {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for name, value in tensors.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def to_canonical(state):
    """Dict canonical name -> numpy array of a Model's weights."""
    return {name: t.detach().cpu().numpy() for name, t in state.state_dict().items()}


def run(state, inputs):
    """Outputs as numpy arrays for a dict of numpy inputs."""
    with torch.no_grad():
        out = state(**{name: torch.from_numpy(np.asarray(value)) for name, value in inputs.items()})
    return {name: value.detach().cpu().numpy() for name, value in out.items()}
'''


def lower_to_torch(model: Model) -> str:
    return TorchEmitter(model).emit()
