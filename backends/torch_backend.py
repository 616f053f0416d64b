"""IR -> standalone PyTorch source.

The op table is the shared base (`pyemit.BASE_OPS`, NumPy's array API) with torch's
own spelling where it differs; each layer op maps to its `torch.nn` constructor.
Module definitions become `nn.Module` classes and `Repeat` children an
`nn.ModuleList` looped in `forward`.
"""

from __future__ import annotations

import functools

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
    decode_table,
    emit_generate,
    emit_tasks,
    emit_tables,
    format_python,
    readers,
)
from metagen.backends.sampling import sampler_source
from metagen.ir.graph import Layer, Model, Param, Sub
from metagen.ir.types import DType

RESERVED = {"torch", "nn", "F", "np", "math", "zlib", "self", "Model", "CONFIG", "INPUTS", "OUTPUTS", "logits_to_keep", "use_cache"}

# ------------------------------------------------------------------ layer ops

LAYERS: dict[str, LayerRule] = {
    "linear": LayerRule(lambda c: f"nn.Linear({c.a['in_features']}, {c.a['out_features']}, bias={c.a['bias']})"),
    "embedding": LayerRule(lambda c: f"nn.Embedding({c.a['num']}, {c.a['dim']})"),
    "layer_norm": LayerRule(
        lambda c: (
            f"nn.LayerNorm({c.a['dim']}, eps={c.a['eps']!r}, elementwise_affine={c.a['affine']}, bias={c.a['bias']})"
        )
    ),
    "rms_norm": LayerRule(lambda c: f"nn.RMSNorm({c.a['dim']}, eps={c.a['eps']!r})"),
    "group_norm": LayerRule(lambda c: f"nn.GroupNorm({c.a['groups']}, {c.a['channels']}, eps={c.a['eps']!r})"),
    "conv2d": LayerRule(
        lambda c: (
            f"nn.Conv2d({c.a['in_channels']}, {c.a['out_channels']}, {c.a['kernel']}, stride={c.a['stride']}, "
            f"padding={c.a['padding']}, bias={c.a['bias']})"
        )
    ),
    "batch_norm": LayerRule(
        lambda c: (
            f"{c.helper('BatchNorm2d')}({c.a['channels']}, eps={c.a['eps']!r}, momentum={c.a['momentum']!r}"
            + (", frozen=True)" if c.a["frozen"] else ")")
        )
    ),
}

# ------------------------------------------------------------------ primitive ops
# The base table, with torch's spelling where it differs (torch calls an axis `dim`,
# and has fused forms: scaled_dot_product_attention, F.normalize, F.cross_entropy).


def _attention(c, q, k, v, *bias):
    h, kvh, d = c.a["heads"], c.a["kv_heads"], c.a["head_dim"]
    extra = f", scale={c.a['scale']!r}" if c.a["scale"] is not None else ""
    extra += "".join(f", attn_mask={b}" for b in bias)
    gqa = ", enable_gqa=True" if kvh != h else ""
    if not c.a["split_kv"]:  # else already [B, KVH, S, D]
        k, v = (f"{t}.unflatten(-1, ({kvh}, {d})).transpose(1, 2)" for t in (k, v))
    return (
        f"F.scaled_dot_product_attention({q}.unflatten(-1, ({h}, {d})).transpose(1, 2), {k}, {v}, "
        f"is_causal={c.a['causal']}{gqa}{extra}).transpose(1, 2).flatten(2)"
    )


def _concat(c, *xs: str) -> str:
    """torch.cat; appending to a KV cache (a first operand whose length on the axis is
    the symbolic `past`) returns the new part itself when the cache is empty (a prompt,
    or a forward without cache), where torch.cat would copy it."""
    ax = c.a["axis"] % c.in_types[0].rank
    cat = f"torch.cat([{', '.join(xs)}], dim={c.a['axis']})"
    if len(xs) == 2 and c.in_types[0].shape[ax] == "past":
        return f"{cat} if {xs[0]}.shape[{ax}] else {xs[1]}"
    return cat


def _unsqueeze(c, x: str) -> str:
    for ax in sorted(c.a["axes"]):
        x = f"{x}.unsqueeze({ax})"
    return x


OPS: dict[str, Rule] = {
    **BASE_OPS,
    "gelu": lambda c, x: f"F.gelu({x})",
    "gelu_tanh": lambda c, x: f'F.gelu({x}, approximate="tanh")',
    "silu": lambda c, x: f"F.silu({x})",
    "relu": lambda c, x: f"F.relu({x})",
    "sigmoid": lambda c, x: f"torch.sigmoid({x})",
    "softmax": lambda c, x: f"torch.softmax({x}, dim={c.a['axis']})",
    "l2_normalize": lambda c, x: f"F.normalize({x}, dim={c.a['axis']})",
    "matmul": lambda c, x, y: (
        f"torch.matmul({x}, {y}.transpose(-1, -2))" if c.a["transpose_b"] else f"torch.matmul({x}, {y})"
    ),
    "linear_fn": lambda c, x, w: f"F.linear({x}, {w})",
    "attention": _attention,
    "split_heads": lambda c, x: f"{x}.unflatten(-1, ({c.a['heads']}, {c.a['head_dim']})).transpose(1, 2)",
    "merge_heads": lambda c, x: f"{x}.transpose(1, 2).flatten(2)",
    "positions": lambda c, x: f"torch.arange({x}.shape[{c.a['axis']}], device={x}.device)",
    "concat": _concat,
    "stack": lambda c, *xs: f"torch.stack([{', '.join(xs)}], dim={c.a['axis']})",
    "slice": lambda c, x: f"{x}.narrow({c.a['axis']}, {c.a['start']}, {c.a['end'] - c.a['start']})",
    "select": lambda c, x: f"{x}.select({c.a['axis']}, {c.a['index']})",
    "transpose": lambda c, x: f"{x}.permute({', '.join(map(str, c.a['perm']))})",
    "unsqueeze": _unsqueeze,
    "prepend": lambda c, x, t: f"torch.cat([{t}.expand({x}.shape[0], -1, -1), {x}], dim=1)",
    "flatten_spatial": lambda c, x: f"{x}.flatten(2).transpose(1, 2)",
    "pad2d": lambda c, x: f"F.pad({x}, ({c.a['pads'][2]}, {c.a['pads'][3]}, {c.a['pads'][0]}, {c.a['pads'][1]}))",
    "unflatten_spatial": lambda c, x, like: f"{x}.transpose(1, 2).unflatten(2, {like}.shape[2:])",
    "merge_axes": lambda c, x: f"{x}.flatten({c.a['start']}, {c.a['start'] + c.a['count'] - 1})",
    "split_axis": lambda c, x, like: (
        f"{x}.unflatten({c.a['axis']}, ({''.join(f'{like}.shape[{i}], ' for i in c.a['like_axes'])}))"
    ),
    "expand_axis": lambda c, x, like: (
        f"{x}.unsqueeze({c.a['axis']}).expand(*{x}.shape[:{c.a['axis']}], {like}.shape[{c.a['like_axis']}], *{x}.shape[{c.a['axis']}:])"
    ),
    "mean": lambda c, x: f"{x}.mean(dim={c.a['axis']})",
    "gather_argmax": lambda c, x, ids: (
        f"{x}[torch.arange({x}.shape[0], device={x}.device), {ids}.argmax(dim=-1)]"
    ),
    "upsample_nearest": lambda c, x: f'F.interpolate({x}, scale_factor={c.a["factor"]}, mode="nearest")',
    "cast": lambda c, x: f"{x}.to(torch.{DType(c.a['dtype']).numpy})",  # torch spells dtypes as NumPy does
    "cross_entropy": lambda c, logits, labels: f"F.cross_entropy({logits}.flatten(0, -2), {labels}.flatten())",
    "mse": lambda c, x, y: f"F.mse_loss({x}, {y})",
    "dropout": lambda c, x: f"F.dropout({x}, {c.a['rate']!r}, self.training)",
    "huber": lambda c, x, y: f"F.huber_loss({x}, {y}, delta={c.a['delta']!r})",
    "log_softmax": lambda c, x: f"torch.log_softmax({x}, dim={c.a['axis']})",
    "take_along": lambda c, x, i: f"{x}.gather(-1, {i}.unsqueeze(-1)).squeeze(-1)",
    "clip": lambda c, x: f"torch.clamp({x}, {c.a['low']!r}, {c.a['high']!r})",
    "leaky_relu": lambda c, x: f"F.leaky_relu({x}, {c.a['slope']!r})",
    "degree": lambda c, i, like: f"torch.bincount({i}, minlength={like}.shape[0]).to(torch.float32)",
    "sine_positions_2d": sine_positions_rule('torch.from_numpy({t}).to(device={x}.device, dtype={x}.dtype)'),
    "max_pool2d": lambda c, x: (
        f"F.max_pool2d({x}, {c.a['kernel']}, stride={c.a['stride']}, padding={c.a['padding']})"
    ),
}


# Standard-library modules a helper needs beyond math and zlib.
HELPER_IMPORTS: dict[str, tuple[str, ...]] = {"rope": ("functools",)}

HELPERS: dict[str, str] = {
    "sine_positions_2d": SINE_POSITIONS_SOURCE,
    "dice_loss": '''
def _dice_loss(logits, labels, smooth):
    """Soft Dice: 1 - mean over classes of (2 sum(p y) + s) / (sum(p) + sum(y) + s)."""
    p = torch.softmax(logits, dim=1)
    y = F.one_hot(labels.long(), logits.shape[1]).movedim(-1, 1).to(p.dtype)
    axes = [0] + list(range(2, logits.dim()))
    inter, total = (p * y).sum(dim=axes), p.sum(dim=axes) + y.sum(dim=axes)
    return 1.0 - ((2.0 * inter + smooth) / (total + smooth)).mean()
''',
    "BatchNorm2d": '''
class _BatchNorm2d(nn.Module):
    """Batch norm over [B, C, H, W]: running statistics in eval mode; batch statistics
    in train mode, which also move the running ones (torch's update). Frozen (DETR's
    backbone): weight and bias are buffers too and the running statistics are always
    used. No num_batches_tracked: the state dict holds exactly the canonical names."""

    def __init__(self, channels, eps, momentum, frozen=False):
        super().__init__()
        self.eps, self.momentum, self.frozen = eps, momentum, frozen
        if frozen:
            self.register_buffer("weight", torch.ones(channels))
            self.register_buffer("bias", torch.zeros(channels))
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        train = self.training and not self.frozen
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, train, self.momentum, self.eps
        )
''',
    "attention_bias": '''
def _attention_bias(key_mask, x, causal, window):
    """Additive mask [B, 1, Sq, Sk]: 0 where a query may see a key, float32's lowest
    elsewhere; the queries are the last Sq of the Sk positions. In eager mode, when no
    key is padded and no window bites, no dense mask: None (every key visible) or
    torch's lower-right CausalBias, which SDPA runs as its causal kernel (skipping
    the masked blocks) instead of adding a [B, 1, Sq, Sk] tensor, as transformers does."""
    sq, sk = x.shape[1], key_mask.shape[1]
    if not torch.compiler.is_compiling() and (not window or sk <= window) and bool((key_mask != 0).all()):
        if not causal or sq == 1:
            return None
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(sq, sk)
    i = torch.arange(sq, device=x.device)[:, None] + (sk - sq)
    j = torch.arange(sk, device=x.device)[None, :]
    allowed = (key_mask != 0)[:, None, None, :]
    if causal:
        allowed = allowed & (j <= i)
    if window:
        allowed = allowed & (j > i - window)
    allowed = allowed.expand(key_mask.shape[0], 1, sq, sk)
    return torch.zeros(allowed.shape, dtype=torch.float32, device=x.device).masked_fill(
        ~allowed, torch.finfo(torch.float32).min
    )
''',
    **COMMON_HELPERS,
    "scatter_add": '''
def _scatter_add(src, index, rows):
    """out[index[e]] += src[e] into `rows` rows (zeros where no index points)."""
    out = torch.zeros((rows,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add(0, index, src)
''',
    "segment_softmax": '''
def _segment_softmax(scores, index, rows):
    """Softmax over the entries of scores that share an index, each segment's max subtracted."""
    shape = (rows,) + tuple(scores.shape[1:])
    spread = index.view((-1,) + (1,) * (scores.dim() - 1)).expand_as(scores)
    top = torch.full(shape, float("-inf"), dtype=scores.dtype, device=scores.device)
    top = top.scatter_reduce(0, spread, scores.detach(), reduce="amax", include_self=True)
    e = torch.exp(scores - top[index])
    total = torch.zeros(shape, dtype=scores.dtype, device=scores.device).index_add(0, index, e)
    return e / total[index]
''',
    "masked_cross_entropy": '''
def _masked_cross_entropy(logits, labels, mask):
    """Cross-entropy averaged over the positions where mask is 1."""
    per_token = F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="none")
    weight = mask.flatten().to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp(min=1.0)
''',
    "rope": '''
def _rope_cos_sin(seq, head_dim, theta, device, dtype, inv_freq=None):
    """cos and sin [seq, 1, head_dim] of the rotary angles (`inv_freq`: the frequencies
    when they are not theta's, e.g. rescaled)."""
    if inv_freq is None:
        exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
        inv_freq = 1.0 / (theta**exponent)
    else:
        inv_freq = torch.tensor(inv_freq, dtype=torch.float32, device=device)
    freqs = torch.outer(torch.arange(seq, device=device).float(), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype)[:, None, :], emb.sin().to(dtype)[:, None, :]


@functools.lru_cache(maxsize=8)
def _rope_cos_sin_cached(seq, head_dim, theta, device, dtype, inference, inv_freq=None):
    """_rope_cos_sin computed once per shape and shared by every layer in eager mode
    (`inference` keeps tensors made under torch.inference_mode apart: autograd refuses them)."""
    return _rope_cos_sin(seq, head_dim, theta, device, dtype, inv_freq)


def _rope_at(positions, head_dim, theta, dtype, inv_freq=None):
    """cos and sin [B, S, 1, head_dim] of the rotary angles at position ids [B, S]."""
    if inv_freq is None:
        exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
        inv_freq = 1.0 / (theta**exponent)
    else:
        inv_freq = torch.tensor(inv_freq, dtype=torch.float32, device=positions.device)
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype)[:, :, None, :], emb.sin().to(dtype)[:, :, None, :]


_ROPE_AT_LAST = [None]  # (key, position ids, cos, sin) of the last eager _rope_at_cached call


def _rope_at_cached(positions, head_dim, theta, dtype, inv_freq=None):
    """_rope_at computed once per forward in eager mode: every layer rotates q and k at
    the same position ids, so the last call's tables serve while the ids are equal
    (`inference`: tensors made under torch.inference_mode are kept apart, autograd
    refuses them)."""
    key = (tuple(positions.shape), positions.device, head_dim, theta, dtype, inv_freq, torch.is_inference_mode_enabled())
    last = _ROPE_AT_LAST[0]
    if last is not None and last[0] == key and torch.equal(last[1], positions):
        return last[2], last[3]
    cos, sin = _rope_at(positions, head_dim, theta, dtype, inv_freq)
    _ROPE_AT_LAST[0] = (key, positions.clone(), cos, sin)
    return cos, sin


def _rope(x, heads, head_dim, theta, inv_freq=None, positions=None):
    """Rotary position embedding (rotate-half convention) on packed heads [B, S, H*D],
    at positions 0..S-1 or at position ids [B, S]."""
    x = x.unflatten(-1, (heads, head_dim))
    if torch.compiler.is_compiling():
        # Traced into the graph (seq may be symbolic), in the form inductor fuses
        # (writes into slices, as below, cost it 7%).
        if positions is not None:
            cos, sin = _rope_at(positions, head_dim, theta, x.dtype, inv_freq)
        else:
            cos, sin = _rope_cos_sin(x.shape[1], head_dim, theta, x.device, x.dtype, inv_freq)
        x1, x2 = x.chunk(2, dim=-1)
        return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).flatten(2)
    if positions is not None:
        cos, sin = _rope_at_cached(positions, head_dim, theta, x.dtype, inv_freq)
    else:
        inference = torch.is_inference_mode_enabled()
        cos, sin = _rope_cos_sin_cached(x.shape[1], head_dim, theta, x.device, x.dtype, inference, inv_freq)
    # x * cos + rotate_half(x) * sin in two buffers' worth where that form takes four
    # and a half, each half's product with sin added into x * cos in place (the same
    # roundings, bit for bit; addcmul_ would fuse them).
    half = head_dim // 2
    out = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out.flatten(2)
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
    backend = "torch"
    lib = "torch"
    ops = OPS
    layers = LAYERS
    helper_sources = HELPERS
    reserved = frozenset(RESERVED)
    base_class = "nn.Module"
    call_method = "forward"

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
        emit_generate(out, m, TORCH_STEP.replace("KEEP", f", {self.KEEP}=1" if self.keep_node is not None else ""))
        emit_tasks(out, m)
        out(sampler_source(m, "torch"))
        return format_python(out.text())

    def member_prologue(self) -> list[str]:
        return ["super().__init__()"]

    # A decoder's `forward(..., logits_to_keep=n)` computes the logits of the last n
    # positions only (0: all), as transformers' generate() asks for one: a prompt's
    # other rows of the [positions x vocab] head are never read. Only where the logits
    # come from a position-wise head (a linear layer, or linear_fn on the tied
    # embedding) over [B, S, D] hidden states used nowhere else.
    KEEP = "logits_to_keep"

    @functools.cached_property
    def keep_node(self):
        """The top module's logits node when `logits_to_keep` applies, else None."""
        if decode_table(self.model) is None:
            return None
        md = self.model.modules[self.model.top]
        logits = md.outputs[0]
        node = next((n for n in md.nodes if n.results and n.results[0] is logits), None)
        if node is None or node.operands[0].type.rank != 3 or logits.type.rank != 3:
            return None
        child = md.children.get(node.target) if node.kind == "call" else None
        if not ((node.kind == "op" and node.op == "linear_fn") or (isinstance(child, Layer) and child.op == "linear")):
            return None
        h = node.operands[0]
        if any(o is h for n in md.nodes if n is not node for o in n.operands) or any(o is h for o in md.outputs):
            return None
        return node

    # A model with a KV cache takes `forward(..., use_cache=False)` as transformers'
    # models do: its present.* outputs are then None and no layer's keys and values
    # outlive the layer, so a forward that keeps no cache does not hold every layer's
    # buffers to its end (measured: ~290 MB and 65,000 page faults a Llama ~100M
    # forward at 8x256, a few percent of its time).
    CACHE = "use_cache"

    def top_params(self, ns, args: list[str]) -> list[str]:
        params = super().top_params(ns, args)
        extra = ([f"{self.KEEP}=0"] if self.keep_node is not None else []) + (
            [f"{self.CACHE}=True"] if decode_table(self.model) is not None else []
        )
        at = len(params) - (params[-1].startswith("**") if params else 0)
        return params[:at] + extra + params[at:]

    def collect_layer_outputs(self, md, outs: str) -> str:
        if md.name == self.model.top and decode_table(self.model) is not None:
            return f"{outs} += step if {self.CACHE} else [None] * len(step)"
        return super().collect_layer_outputs(md, outs)

    # A linear layer read only through slices of its last axis (a fused qkv
    # projection) is emitted, in a model with a KV cache, as one F.linear per slice on
    # the matching rows of its weight (views: the parameter stays one canonical
    # tensor): keys and values are then their own buffers, not strided views that
    # keep the whole fused output alive as long as the cache outputs live.
    @functools.cached_property
    def sliced_linears(self) -> dict:
        """{id(slice node): (member, start, end, bias, input)}; {id(linear node): None}."""
        found: dict = {}
        if decode_table(self.model) is None:
            return found
        for md in self.model.modules.values():
            read_by = readers(md)
            for n in md.nodes:
                child = md.children.get(n.target) if n.kind == "call" else None
                if not (isinstance(child, Layer) and child.op == "linear") or len(n.results) != 1:
                    continue
                r = n.results[0]
                users = read_by.get(id(r), [])
                last = (-1, r.type.rank - 1)
                if len(users) < 2 or not all(
                    u is not None and u.kind == "op" and u.op == "slice" and u.attrs.get("axis") in last for u in users
                ):
                    continue
                bias = bool(child.attr_dict().get("bias", False))
                found[id(n)] = None
                for u in users:
                    found[id(u)] = (n.target, u.attrs["start"], u.attrs["end"], bias, n.operands[0])
        return found

    # In place: an elementwise op writes into its first operand when that is a
    # temporary it alone reads (`gate = F.silu(gate, inplace=True)`, `h =
    # gate.mul_(up)`), as hand-written models do, instead of allocating a result of the
    # same shape. A temporary is a value made in this call method by an op whose
    # backward does not keep its result (a linear layer, add, sub, mul, silu), or a
    # child module's output made so there and read nowhere else in it; writes into it
    # are invisible to the caller and to autograd. The operand has the result's type (no
    # write broadcasts or changes dtype), and torch gives an out-of-place result its
    # first operand's layout, so every later op sees the values and strides of the
    # out-of-place form, bit for bit (writing into the second operand of a commutative
    # op would not: a channels-last conv output there changed the algorithm, and the
    # last bits, of the convolutions after it). Image tensors (rank 4) are never
    # written: a [B, C, 1, 1] conv output's strides are not those torch gives the
    # out-of-place sum, and group norm then took another path.
    INPLACE = {
        "add": lambda x, y: f"{x}.add_({y})",
        "mul": lambda x, y: f"{x}.mul_({y})",
        "sub": lambda x, y: f"{x}.sub_({y})",
        "silu": lambda x: f"F.silu({x}, inplace=True)",
    }
    FRESH_LAYERS = frozenset({"linear"})

    def fresh(self, md, v, fresh_outputs=None) -> bool:
        """Whether `v` is a new tensor of `md`'s making that no backward keeps
        (`fresh_outputs`: the children's, while they are being found)."""
        node = v.producer
        if node is None or not any(n is node for n in md.nodes):
            return False
        if node.kind == "op":
            return node.op in self.INPLACE
        child = md.children[node.target] if node.kind == "call" else None
        if isinstance(child, Layer):
            return child.op in self.FRESH_LAYERS and id(node) not in self.sliced_linears
        if isinstance(child, Sub):
            return node.results.index(v) in (fresh_outputs or self.fresh_outputs)[child.module]
        return False

    @functools.cached_property
    def fresh_outputs(self) -> dict[str, frozenset[int]]:
        """Per module, the indices of its outputs that are temporaries handed to the caller."""
        found: dict[str, frozenset[int]] = {}
        for name, md in self.model.modules.items():  # children first
            read_by = readers(md)
            found[name] = frozenset(
                i for i, o in enumerate(md.outputs) if len(read_by[id(o)]) == 1 and self.fresh(md, o, found)
            )
        return found

    def inplace(self, md, node, args: list[str]) -> str | None:
        """The in-place form of an elementwise node, when its first operand may be written."""
        if node.kind != "op" or node.op not in self.INPLACE:
            return None
        self.op_rule(node.op, self.node_context(md, node).loc)  # a missing rule is still reported
        v = node.operands[0]
        if v.type.rank <= 3 and len(self.readers[id(v)]) == 1 and v.type == node.results[0].type and self.fresh(md, v):
            return self.INPLACE[node.op](*args)
        return None

    def emit_node(self, out, md, node, ns) -> None:
        args = [ns.name(o) for o in node.operands]
        written = self.inplace(md, node, args)
        if written is not None:
            out(f"{self.result_names(node, ns)[0]} = {written}")
            return
        if md.name == self.model.top and node is self.keep_node:
            h = ns.name(node.operands[0])
            out(f"if {self.KEEP}:")
            with out.indent():
                out(f"{h} = {h}[:, -{self.KEEP} :]")
        sliced = self.sliced_linears.get(id(node), False)
        if sliced is None:  # the fused linear itself: its slices project instead
            return
        if sliced:
            member, start, end, bias, x = sliced
            b = f", self.{member}.bias[{start}:{end}]" if bias else ""
            out(f"{self.result_names(node, ns)[0]} = F.linear({ns.name(x)}, self.{member}.weight[{start}:{end}]{b})")
            return
        super().emit_node(out, md, node, ns)

    def param_member(self, p: Param) -> str:
        return f"nn.Parameter(torch.empty({', '.join(map(str, p.type.shape)) or '()'}))"

    def sub_member(self, cls: str) -> str:
        return f"{cls}()"

    def repeat_member(self, cls: str, count: int) -> str:
        return f"nn.ModuleList({cls}() for _ in range({count}))"

    def empty_cache(self, tokens: str, heads: int, head_dim: int) -> str:
        return f"{tokens}.new_zeros(({tokens}.shape[0], {heads}, 0, {head_dim}), dtype=torch.float32)"

    def ones_mask(self, tokens: str, past: str) -> str:
        return f"torch.ones(({tokens}.shape[0], {past} + {tokens}.shape[-1]), dtype=torch.int64, device={tokens}.device)"

    def mask_positions(self, mask: str, tokens: str) -> str:
        return f"({mask}.long().cumsum(-1) - 1).masked_fill({mask} == 0, 0)[:, -{tokens}.shape[-1] :]"


TORCH_API = '''
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def init(seed=0, dtype="float32"):
    """A Model holding the canonical initial weights for `seed`, as `dtype` (a key of DTYPES)."""
    return load_canonical(init_arrays(seed), dtype)


def load_canonical(tensors, dtype="float32"):
    """A Model from a dict canonical name -> numpy array (PyTorch layout), its weights as `dtype`."""
    with torch.device("meta"):
        model = Model()
    to = DTYPES[dtype]
    state = {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).to(to) for name, value in tensors.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _numpy(t):
    """numpy has no bfloat16: lower precisions come back as float32 (exactly)."""
    t = t.detach().cpu()
    return t.float().numpy() if t.dtype in (torch.bfloat16, torch.float16) else t.numpy()


def to_canonical(state):
    """Dict canonical name -> numpy array of a Model's weights."""
    return {name: _numpy(t) for name, t in state.state_dict().items()}


def run(state, inputs):
    """Outputs as numpy arrays for a dict of numpy inputs (float inputs in the weights' dtype)."""
    dtype = next(state.parameters(), torch.empty(0)).dtype
    feed = {}
    for name, value in inputs.items():
        t = torch.from_numpy(np.asarray(value))
        feed[name] = t.to(dtype) if t.is_floating_point() else t
    with torch.no_grad():
        out = state(**feed)
    return {name: _numpy(value) for name, value in out.items()}
'''


TORCH_STEP = '''
def _decode_step(state, feed, cache):
    """One forward on the new tokens, the cache kept as torch tensors between steps."""
    device = next(state.parameters()).device
    inputs = {name: torch.from_numpy(np.asarray(value)).to(device) for name, value in feed.items()}
    with torch.no_grad():
        out = state(**inputs, **(cache or {})KEEP)
    cache = {past: out[present] for past, present in _DECODE["cache"]}
    return out[_DECODE["logits"]][..., -1, :].float().cpu().numpy(), cache
'''


def lower_to_torch(model: Model) -> str:
    return TorchEmitter(model).emit()
