"""What the Python emitters (torch, flax, numpy) share: a line buffer with indentation,
a namespace that makes every identifier legal and unique, the lowering-rule context
and the base op table each backend overrides, the class layout of a generated module,
the canonical-init table and the module-level API every generated file exposes."""

from __future__ import annotations

import builtins
import keyword
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import black

from metagen.backends.lowering import EmitError, LoweringContext, first_loc, missing_rule
from metagen.ir import names, ops
from metagen.ir.graph import Layer, Model, ModuleDef, Node, Param, Repeat, Sub, Value

__all__ = ["EmitError"]  # re-exported: the Python emitters' error is every backend's


class Namespace(names.Namespace):
    """Legal, unique Python identifiers: no keyword or builtin is ever given out."""

    def __init__(self, reserved: set[str] = frozenset()):
        super().__init__(set(reserved) | set(keyword.kwlist) | set(dir(builtins)))


class Lines:
    def __init__(self):
        self.lines: list[str] = []
        self.level = 0
        self.blocks: dict[str, str] = {}  # placeholder line -> verbatim block

    def __call__(self, text: str = "") -> None:
        self.lines.append(("    " * self.level + text) if text else "")

    def verbatim(self, block: str) -> None:
        """A top-level block of code already in black's layout (a runtime module's
        body; tests/test_runtime_layout.py keeps them so), set off by two blank lines
        on each side as black sets off a top-level function. `format_python(text,
        blocks)` puts it in after black, which never reads it: most of a training
        program is runtime code, and black's time is most of emitting one."""
        assert self.level == 0, "a verbatim block is top-level code"
        placeholder = f"_VERBATIM_BLOCK_{len(self.blocks)} = None"
        self.blocks[placeholder] = block.strip("\n")
        self.lines += ["", "", placeholder, "", ""]

    def indent(self):
        return _Indent(self)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class _Indent:
    def __init__(self, lines: Lines):
        self.l = lines

    def __enter__(self):
        self.l.level += 1

    def __exit__(self, *a):
        self.l.level -= 1


def py_literal(v: Any) -> str:
    """A Python literal for config values (json-compatible data); strings are
    escaped by repr, so spec text can never become code."""
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(py_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{py_literal(str(k))}: {py_literal(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as a literal")


def source_text(text: str) -> str:
    """User text for a docstring or a comment of generated Python: the one way spec text
    enters generated source outside a literal. Backslashes and double quotes are
    escaped and every non-printable character (newlines, U+2028, ESC, lone surrogates)
    becomes its escape sequence, so the result is one printable line that cannot end a
    triple-quoted string or a comment, and a docstring holding it reads back as `text` itself."""
    out = []
    for ch in text:
        if ch == "\\" or ch == '"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def format_python(src: str, blocks: dict[str, str] | None = None) -> str:
    """black's layout of `src`. The row tables (`_INITS`, flax's `_PARAMS`: one row per
    parameter, thousands for deep models) are laid out here instead: black's time grows
    faster than linearly in the size of one bracketed statement (20 s for a 768-layer
    GPT-2), and a row of plain literals needs only black's double quotes; a row too long
    for one line is laid out by black alone. Quotes or escapes inside a string send the
    table through black. `blocks` are `Lines.verbatim`'s: code in black's layout that
    black need not read."""
    if blocks:
        out = format_python(src)
        for placeholder, block in blocks.items():
            if out.count(f"\n{placeholder}\n") != 1:
                raise AssertionError(f"black moved the placeholder {placeholder}")
            out = out.replace(f"\n{placeholder}\n", f"\n{block}\n")
        return out
    tables, rest = {}, src
    for name in ROW_TABLES:
        laid, without = _split_row_table(rest, name)
        if laid is not None:
            tables[name], rest = laid, without
    out = black.format_str(rest, mode=BLACK_MODE)
    for name, laid in tables.items():
        placeholder = f"{name} = []\n"
        if out.count(placeholder) != 1:
            return black.format_str(src, mode=BLACK_MODE)
        out = out.replace(placeholder, laid)
    return out


BLACK_MODE = black.Mode(line_length=100)
ROW_TABLES = ("_INITS", "_PARAMS")


def _split_row_table(src: str, name: str) -> tuple[str | None, str]:
    """(the table `name = [rows]` in black's layout, src with `name = []` in its place),
    or (None, src) when black must see the table itself."""
    opener = f"\n{name} = [\n"
    start = src.find(opener)
    if start < 0 or src.count(opener) != 1 or src.count(f"{name} = []\n"):
        return None, src
    start += 1
    end = src.find("\n]\n", start)
    if end < 0:
        return None, src
    rows = src[start + len(opener) - 1 : end].split("\n")
    if rows == [""]:
        return None, src
    laid = []
    for row in rows:
        if not (row.startswith("    (") and row.endswith("),")) or '"' in row or "\\" in row or not row.isascii():
            return None, src
        laid.append(row.replace("'", '"'))
    long = [i for i, row in enumerate(laid) if len(row) > BLACK_MODE.line_length]
    if long:  # black splits each long row on its own, whatever its neighbours: one call for all
        split = black.format_str("_t = [\n" + "\n".join(laid[i] for i in long) + "\n]\n", mode=BLACK_MODE)
        parts = re.split(r"\n(?=    \()", split[len("_t = [\n") : -len("\n]\n")])
        if len(parts) != len(long):
            return None, src
        for i, part in zip(long, parts):
            laid[i] = part
    return "\n".join([f"{name} = [", *laid, "]\n"]), src[:start] + f"{name} = []\n" + src[end + len("\n]\n") :]


def init_table(model: Model) -> list[tuple[str, tuple[int, ...], str, dict[str, float]]]:
    return [(name, tuple(p.type.shape), p.init.scheme, dict(p.init.args)) for name, p in model.walk_params()]


# Canonical initial weights (the code every generated module embeds): see init_code.py.
from metagen.backends.init_code import INIT_FUNCTIONS  # noqa: E402,F401


# DETR's sine position table (the source every backend embeds or runs): see init_code.py.
from metagen.backends.init_code import SINE_POSITIONS_SOURCE  # noqa: E402,F401


def sine_positions_rule(wrap: str) -> Rule:
    """The `sine_positions_2d` rule of a Python backend: the helper's table through `wrap`
    (a format string with {t} for the numpy table and {x} for the operand)."""

    def rule(c, x):
        h, w = c.in_types[0].shape[2], c.in_types[0].shape[3]
        table = f"{c.helper('sine_positions_2d')}({h}, {w}, {c.a['features']}, {c.a['temperature']!r}, {c.a['scale']!r})"
        return wrap.format(t=table, x=x)

    return rule


def emit_common_header(out: Lines, model: Model, backend: str) -> None:
    out(f'"""{backend} model for \'{source_text(model.spec_name)}\'.')
    out("")
    out("Generated by MetaGen from the spec; edit the spec, not this file.")
    out('"""')


def emit_tables(out: Lines, model: Model) -> None:
    """CONFIG, INPUTS, OUTPUTS, the init table and example_inputs()."""
    out(f"CONFIG = {py_literal(model.config)}")
    inputs = {
        i.name: {"shape": [d for d in i.type.shape], "dtype": i.type.dtype.numpy}
        for i in model.inputs
    }
    out(f"INPUTS = {py_literal(inputs)}")
    out(f"OUTPUTS = {py_literal(list(model.output_names))}")
    out(f"_EXAMPLE_SIZES = {py_literal(dict(model.examples))}")
    specs = [
        {"name": i.name, "kind": i.kind, "low": i.low, "high": i.high, "dtype": i.type.dtype.numpy, "optional": i.optional}
        for i in model.inputs
    ]
    out(f"_INPUT_KINDS = {py_literal(specs)}")
    out("_INITS = [")
    with out.indent():
        for name, shape, scheme, args in init_table(model):
            out(f"({name!r}, {py_literal(list(shape))}, {scheme!r}, {py_literal(args)}),")
    out("]")


EXAMPLE_FUNCTION = '''
def _size(dim, sizes):
    """A dim's value: an int, a symbol, or a sum of them ("past+seq")."""
    if isinstance(dim, int):
        return dim
    return sum(int(t) if t.isdigit() else sizes[t] for t in dim.split("+"))


def example_inputs(batch_size=2, seed=0):
    """A dict of valid numpy inputs (token ids in range, standard-normal floats, an
    attention mask of ones with the positions it gives)."""
    rng = np.random.default_rng(seed)
    sizes = dict(_EXAMPLE_SIZES, batch=batch_size)
    out = {}
    for spec in _INPUT_KINDS:
        shape = tuple(_size(d, sizes) for d in INPUTS[spec["name"]]["shape"])
        if spec["kind"] == "tokens":
            x = rng.integers(int(spec["low"]), int(spec["high"]), size=shape)
        elif spec["kind"] == "mask":
            x = np.ones(shape)
        elif spec["kind"] == "positions":
            x = np.tile(np.arange(shape[-1]) + sizes.get("past", 0), shape[:-1] + (1,))
        elif spec["kind"] == "uniform":
            x = rng.uniform(spec["low"], spec["high"], size=shape)
        else:
            x = rng.standard_normal(shape)
        out[spec["name"]] = x.astype(spec["dtype"])
    return out
'''

def decode_table(model: Model) -> dict | None:
    """How a decoding loop feeds a model with a KV cache: its token, mask and
    positions inputs, each past input with the output that becomes it next step,
    and the logits output; None when the model has no cache inputs."""
    past = [i.name for i in model.inputs if i.kind == "cache"]
    if not past:
        return None
    kinds = {i.kind: i.name for i in reversed(model.inputs)}
    present = list(model.output_names[1 : 1 + len(past)])
    return {
        "tokens": model.inputs[0].name,
        "mask": kinds["mask"],
        "positions": kinds["positions"],
        "cache": [[p, q] for p, q in zip(past, present)],
        "logits": model.output_names[0],
    }


# Text generation, in numpy, shared by every backend (the generated modules embed
# it; `metagen generate` runs it over onnxruntime): `step(feed, cache)` runs the
# model on the new tokens and returns the last position's logits as numpy and the
# cache for the next step. Token choice and randomness are numpy's, so every backend
# picks the same tokens for the same logits and seed.
GENERATE_FUNCTIONS = '''
def _softmax_np(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _choose(logits, rng, do_sample, temperature, top_k, top_p):
    """The next token along the last axis: argmax, or a draw after temperature,
    top-k and top-p (nucleus) filtering, as transformers' logits processors apply them."""
    logits = np.asarray(logits, dtype=np.float64)
    if not do_sample:
        return np.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k > 0:
        kth = np.sort(logits, axis=-1)[..., -min(top_k, logits.shape[-1])][..., None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        probs = _softmax_np(np.take_along_axis(logits, order, axis=-1))
        drop = np.cumsum(probs, axis=-1) - probs >= top_p  # the mass before a token already reaches top_p
        drop[..., 0] = False
        np.put_along_axis(logits, order, np.where(drop, -np.inf, np.take_along_axis(logits, order, axis=-1)), axis=-1)
    cdf = np.cumsum(_softmax_np(logits), axis=-1)
    u = rng.random(logits.shape[:-1])[..., None] * cdf[..., -1:]
    return np.minimum(np.sum(cdf < u, axis=-1), logits.shape[-1] - 1)


def _generate(step, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, seed):
    """Prompt in, prompt plus new tokens out (int64, along the last axis). Rows may be
    left-padded (attention_mask 0); positions come from the mask. A row that emits
    eos_token_id gets pad_token_id (default: eos_token_id) after it; generation stops
    when every row has."""
    ids = np.asarray(input_ids, dtype=np.int64)
    batch = ids.shape[0]
    mask = np.ones((batch, ids.shape[-1]), np.int64) if attention_mask is None else np.asarray(attention_mask, np.int64)
    positions = np.where(mask == 0, 0, np.cumsum(mask, axis=-1) - 1)
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    rng = np.random.default_rng(seed)
    done = np.zeros(batch, dtype=bool)
    feed = {_DECODE["tokens"]: ids, _DECODE["mask"]: mask, _DECODE["positions"]: positions}
    cache, out = None, [ids]
    for _ in range(max_new_tokens):
        logits, cache = step(feed, cache)
        new = _choose(logits, rng, do_sample, temperature, top_k, top_p).astype(np.int64)
        if eos_token_id is not None:
            rows = done.reshape((batch,) + (1,) * (new.ndim - 1))
            new = np.where(rows, pad_token_id, new)
            done |= np.all(new == eos_token_id, axis=tuple(range(1, new.ndim)))
        out.append(new[..., None])
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=-1)
        positions = positions[:, -1:] + 1
        feed = {_DECODE["tokens"]: new[..., None], _DECODE["mask"]: mask, _DECODE["positions"]: positions}
        if done.all():
            break
    return np.concatenate(out, axis=-1)
'''


GENERATE_API = '''
def generate(state, input_ids, attention_mask=None, max_new_tokens=32, do_sample=False, temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, pad_token_id=None, seed=0):
    """Greedy or sampled continuation of input_ids (int64 [batch, prompt], left padding
    allowed through attention_mask) with the KV cache: int64 [batch, prompt + new].
    Sampling draws from numpy's generator seeded with `seed`, so every backend gives
    the same tokens."""
    return _generate(
        lambda feed, cache: _decode_step(state, feed, cache),
        input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, seed,
    )
'''


EMBED_API = '''
def embed(state, inputs):
    """L2-normalized embeddings of the given inputs: embedding output -> [batch, dim],
    for each output whose input is given. Other required inputs get a placeholder
    batch of one (a CLIP text batch needs no image)."""
    placeholder = example_inputs(batch_size=1)
    feed = dict(inputs)
    for spec in _INPUT_KINDS:
        if spec["name"] not in feed and not spec["optional"]:
            feed[spec["name"]] = placeholder[spec["name"]]
    out = run(state, feed)
    return {name: out[name] for name, source in _EMBEDDINGS.items() if source in inputs}
'''

ZERO_SHOT_API = '''
def zero_shot(state, images, text_ids, attention_mask=None):
    """Per-image class probabilities [images, classes]: the softmax over the class
    texts (one row of text_ids per class) of the scaled image-text similarities."""
    feed = {_EMBEDDINGS["image_embeds"]: images, _EMBEDDINGS["text_embeds"]: text_ids}
    if attention_mask is not None:
        feed["attention_mask"] = attention_mask
    logits = np.asarray(run(state, feed)["logits_per_image"], dtype=np.float64)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
'''


def emit_tasks(out: "Lines", model: Model) -> None:
    """The task helpers a model's outputs support: `embed` for models with
    embedding outputs, `zero_shot` for text-image models."""
    if not model.embeddings:
        return
    out(f"_EMBEDDINGS = {py_literal(model.embeddings)}")
    out(EMBED_API)
    if {"text_embeds", "image_embeds"} <= set(model.embeddings) and "logits_per_image" in model.output_names:
        out(ZERO_SHOT_API)


def emit_generate(out: "Lines", model: Model, step_source: str) -> None:
    """The decoding loop and `generate` for a model with a KV cache, given the
    backend's `_decode_step(state, feed, cache)`."""
    table = decode_table(model)
    if table is None:
        return
    out(f"_DECODE = {py_literal(table)}")
    out(GENERATE_FUNCTIONS)
    out(step_source)
    out(GENERATE_API)


Rule = Callable[..., str]  # rule(ctx, *operand_expressions) -> expression


@dataclass
class PyContext(LoweringContext):
    """A Python rule's context: the node's attributes, types and location, plus the
    emitting backend's array namespace, its helper functions and its other rules."""

    emitter: "ModuleEmitter | None" = None

    @property
    def lib(self) -> str:
        """The array namespace the base rules write (`np`, `jnp`, `torch`)."""
        return self.emitter.lib

    def helper(self, name: str) -> str:
        """The function defined by the backend's helper `name` (`_<name>`), which the
        generated module then contains."""
        self.emitter.use_helper(name, self.loc)
        return f"_{name}"

    def call(self, op: str, *operands: str) -> str:
        """`op`'s expression in this backend, for a rule written in terms of another."""
        return self.emitter.op_rule(op, self.loc)(self, *operands)


@dataclass(frozen=True)
class LayerRule:
    """How a backend builds and applies a layer op (a parametric child: linear,
    embedding, norms, conv). `construct(ctx)` is the member's constructor expression;
    `apply(ctx, member, *operands)` its call (default `member(*operands)`); `params`
    maps each canonical local parameter name to the backend's variable name and layout
    kind, for backends whose variables are not named canonically."""

    construct: Rule
    apply: Rule | None = None
    params: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def _tuple_literal(items) -> str:
    return f"({''.join(f'{i}, ' for i in items)})"


# The base op table, written against the NumPy array API in the backend's namespace
# (`c.lib`): a backend's table is `{**BASE_OPS, ...its overrides}` (cf. tinygrad's
# renderers). Ops whose code is a helper function call it by name; each backend
# supplies the helper's source.
BASE_OPS: dict[str, Rule] = {
    "add": lambda c, x, y: f"{x} + {y}",
    "sub": lambda c, x, y: f"{x} - {y}",
    "mul": lambda c, x, y: f"{x} * {y}",
    "div": lambda c, x, y: f"{x} / {y}",
    "scale": lambda c, x: f"{x} * {c.a['factor']!r}",
    "quick_gelu": lambda c, x: f"{x} * {c.call('sigmoid', f'1.702 * {x}')}",
    "tanh": lambda c, x: f"{c.lib}.tanh({x})",
    "exp": lambda c, x: f"{c.lib}.exp({x})",
    "l2_normalize": lambda c, x: (
        f"{x} / {c.lib}.maximum({c.lib}.linalg.norm({x}, axis={c.a['axis']}, keepdims=True), 1e-12)"
    ),
    "matmul": lambda c, x, y: (
        f"{c.lib}.matmul({x}, {c.lib}.swapaxes({y}, -1, -2))" if c.a["transpose_b"] else f"{c.lib}.matmul({x}, {y})"
    ),
    "linear_fn": lambda c, x, w: f"{c.lib}.matmul({x}, {w}.T)",
    "attention": lambda c, q, k, v, *bias: (
        f"{c.helper('attention')}({q}, {k}, {v}, {c.a['heads']}, {c.a['kv_heads']}, {c.a['head_dim']}, "
        f"is_causal={c.a['causal']}"
        + (f", scale={c.a['scale']!r}" if c.a["scale"] is not None else "")
        + (", split_kv=True" if c.a["split_kv"] else "")
        + "".join(f", bias={b}" for b in bias)
        + ")"
    ),
    "attention_bias": lambda c, mask, x: (
        f"{c.helper('attention_bias')}({mask}, {x}, {c.a['causal']}, {c.a['window']})"
    ),
    "split_heads": lambda c, x: (
        f"{c.lib}.transpose({x}.reshape({x}.shape[0], {x}.shape[1], {c.a['heads']}, {c.a['head_dim']}), (0, 2, 1, 3))"
    ),
    "merge_heads": lambda c, x: (
        f"{c.lib}.transpose({x}, (0, 2, 1, 3)).reshape({x}.shape[0], {x}.shape[2], "
        f"{c.in_types[0].shape[1] * c.in_types[0].shape[3]})"
    ),
    "rope": lambda c, x, *positions: (
        f"{c.helper('rope')}({x}, {c.a['heads']}, {c.a['head_dim']}, {c.a['theta']!r}"
        + ("" if c.a["scaling"] == "none" else f", inv_freq={_tuple_literal([float(f) for f in ops.rope_inv_freq(c.a)])}")
        + "".join(f", positions={p}" for p in positions)
        + ")"
    ),
    "positions": lambda c, x: f"{c.lib}.arange({x}.shape[{c.a['axis']}])",
    "concat": lambda c, *xs: f"{c.lib}.concatenate([{', '.join(xs)}], axis={c.a['axis']})",
    "stack": lambda c, *xs: f"{c.lib}.stack([{', '.join(xs)}], axis={c.a['axis']})",
    "transpose": lambda c, x: f"{c.lib}.transpose({x}, {_tuple_literal(c.a['perm'])})",
    "unsqueeze": lambda c, x: f"{c.lib}.expand_dims({x}, {_tuple_literal(sorted(c.a['axes']))})",
    "prepend": lambda c, x, t: (
        f"{c.lib}.concatenate([{c.lib}.broadcast_to({t}, ({x}.shape[0],) + {t}.shape[1:]), {x}], axis=1)"
    ),
    "flatten_spatial": lambda c, x: f"{c.lib}.transpose({x}.reshape({x}.shape[0], {x}.shape[1], -1), (0, 2, 1))",
    "unflatten_spatial": lambda c, x, like: (
        f"{c.lib}.transpose({x}, (0, 2, 1)).reshape({x}.shape[0], {x}.shape[2], {like}.shape[2], {like}.shape[3])"
    ),
    "pad2d": lambda c, x: (
        f"{c.lib}.pad({x}, ((0, 0), (0, 0), ({c.a['pads'][0]}, {c.a['pads'][1]}), ({c.a['pads'][2]}, {c.a['pads'][3]})))"
    ),
    "merge_axes": lambda c, x: (
        f"{x}.reshape({x}.shape[:{c.a['start']}] + (-1,) + {x}.shape[{c.a['start'] + c.a['count']}:])"
    ),
    "split_axis": lambda c, x, like: (
        f"{x}.reshape({x}.shape[:{c.a['axis']}] + ({''.join(f'{like}.shape[{i}], ' for i in c.a['like_axes'])})"
        f" + {x}.shape[{c.a['axis']} + 1:])"
    ),
    "expand_axis": lambda c, x, like: (
        f"{c.lib}.broadcast_to({c.lib}.expand_dims({x}, {c.a['axis']}), "
        f"{x}.shape[:{c.a['axis']}] + ({like}.shape[{c.a['like_axis']}],) + {x}.shape[{c.a['axis']}:])"
    ),
    "require_multiple": lambda c, x: (
        f"{c.helper('require_multiple')}({x}, {_tuple_literal(c.a['axes'])}, {c.a['multiple']}, {c.a['what']!r})"
    ),
    "mean": lambda c, x: f"{c.lib}.mean({x}, axis={c.a['axis']})",
    "gather_argmax": lambda c, x, ids: f"{x}[{c.lib}.arange({x}.shape[0]), {c.lib}.argmax({ids}, axis=-1)]",
    "upsample_nearest": lambda c, x: (
        f"{c.lib}.repeat({c.lib}.repeat({x}, {c.a['factor']}, axis=2), {c.a['factor']}, axis=3)"
    ),
    "timestep_embedding": lambda c, t: (
        f"{c.helper('timestep_embedding')}({t}, {c.a['dim']}, {c.a['flip_sin_to_cos']}, "
        f"{c.a['freq_shift']!r}, {c.a['max_period']!r})"
    ),
    "cross_entropy": lambda c, logits, labels: f"{c.helper('cross_entropy')}({logits}, {labels})",
    "mse": lambda c, x, y: f"{c.lib}.mean({c.lib}.square({x} - {y}))",
    "masked_cross_entropy": lambda c, logits, labels, mask: (
        f"{c.helper('masked_cross_entropy')}({logits}, {labels}, {mask})"
    ),
    "dropout": lambda c, x: x,  # inference; the torch backend drops while training
    "div": lambda c, x, y: f"{x} / {y}",
    "sqrt": lambda c, x: f"{c.lib}.sqrt({x} + {c.a['eps']!r})" if c.a["eps"] else f"{c.lib}.sqrt({x})",
    "reshape": lambda c, x: f"{x}.reshape({_tuple_literal(c.a['shape'])})",
    "frames": lambda c, x: (
        f"{x}[..., {c.lib}.arange({c.out_types[0].shape[-2]})[:, None] * {c.a['step']} + {c.lib}.arange({c.a['size']})]"
    ),
    "log_softmax": lambda c, x: (
        f"{x} - {c.lib}.max({x}, axis={c.a['axis']}, keepdims=True) - {c.lib}.log({c.lib}.sum({c.lib}.exp({x} - "
        f"{c.lib}.max({x}, axis={c.a['axis']}, keepdims=True)), axis={c.a['axis']}, keepdims=True))"
    ),
    "take_along": lambda c, x, i: f"{c.lib}.take_along_axis({x}, {i}[..., None], axis=-1)[..., 0]",
    "clip": lambda c, x: f"{c.lib}.clip({x}, {c.a['low']!r}, {c.a['high']!r})",
    "minimum": lambda c, x, y: f"{c.lib}.minimum({x}, {y})",
    "gather_rows": lambda c, x, i: f"{x}[{i}]",
    "degree": lambda c, i, like: f"{c.lib}.bincount({i}, length={like}.shape[0]).astype({c.lib}.float32)",
    "scatter_add": lambda c, s, i, like: f"{c.helper('scatter_add')}({s}, {i}, {like}.shape[0])",
    "segment_softmax": lambda c, s, i, like: f"{c.helper('segment_softmax')}({s}, {i}, {like}.shape[0])",
    "leaky_relu": lambda c, x: f"{c.lib}.where({x} >= 0, {x}, {c.a['slope']!r} * {x})",
    "huber": lambda c, x, y: (
        f"{c.lib}.mean({c.lib}.where({c.lib}.abs({x} - {y}) <= {c.a['delta']!r}, 0.5 * {c.lib}.square({x} - {y}), "
        f"{c.a['delta']!r} * ({c.lib}.abs({x} - {y}) - {0.5 * c.a['delta']!r})))"
    ),
    "dice_loss": lambda c, logits, labels: f"{c.helper('dice_loss')}({logits}, {labels}, {c.a['smooth']!r})",
}


# Helpers every Python backend shares (they touch only `x.shape`): a backend's
# table is `{**COMMON_HELPERS, ...its own}`.
COMMON_HELPERS: dict[str, str] = {
    "require_multiple": '''
def _require_multiple(x, axes, multiple, what):
    """x, after checking that its dims at `axes` are multiples of `multiple`."""
    if any(int(x.shape[a]) % multiple for a in axes):
        dims = " x ".join(str(int(x.shape[a])) for a in axes)
        raise ValueError(f"{what}: got {dims}, not multiples of {multiple}")
    return x
''',
}


_HELPER_CALL = re.compile(r"\b_([A-Za-z][A-Za-z0-9_]*)\b")


def uncovered_ops(ops_table: Mapping[str, Any], layers_table: Mapping[str, Any]) -> list[str]:
    """Registry ops a backend's tables have no rule for (empty when it is complete)."""
    from metagen.ir import ops

    return [name for name, d in ops.REGISTRY.items() if name not in (layers_table if d.is_layer else ops_table)]


def readers(md: ModuleDef) -> dict[int, list[Node | None]]:
    """By value id, what reads each value of `md`: a node per operand it is, None per
    output it is."""
    found: dict[int, list[Node | None]] = {}
    for n in md.nodes:
        for o in n.operands:
            found.setdefault(id(o), []).append(n)
    for o in md.outputs:
        found.setdefault(id(o), []).append(None)
    return found


class ModuleEmitter(ABC):
    """The class layout the Python emitters share: one class per module definition,
    members built in `__init__`, the body written node by node in the call method,
    outputs returned as a dict (top module) or values. A backend gives its tables
    (`ops`, `layers`, `helper_sources`), its array namespace, and how a member is
    declared and a parameter read."""

    backend = ""  # its name in diagnostics
    lib = ""  # the array namespace the base rules write
    ops: Mapping[str, Rule] = {}
    layers: Mapping[str, LayerRule] = {}
    helper_sources: Mapping[str, str] = {}  # helper name -> function source defining `_<name>`
    reserved: frozenset[str] = frozenset()
    base_class = ""
    init_signature = "self"
    call_method = "__call__"

    def __init__(self, model: Model):
        self.model = model
        self.out = Lines()
        self.helpers: list[str] = []
        # Helper functions and the `Repeat` loop variable share the module's namespace.
        self.reserved = frozenset(self.reserved) | {f"_{h}" for h in self.helper_sources} | {"layer"}
        self.class_ns = Namespace(set(self.reserved))
        self.class_names = {name: self.class_ns.name(hint=name) for name in model.modules}

    # ------------------------------------------------------------ what a backend says

    def member_prologue(self) -> list[str]:
        """Lines that open every `__init__`."""
        return []

    @abstractmethod
    def param_member(self, p: Param) -> str:
        """The expression a parameter member is initialised with."""

    @abstractmethod
    def sub_member(self, cls: str) -> str:
        """The expression a child module member is initialised with."""

    @abstractmethod
    def repeat_member(self, cls: str, count: int) -> str:
        """The expression a `Repeat` member (a list of `count` modules) is initialised with."""

    def param_expr(self, md: ModuleDef, target: str) -> str:
        """How the call method reads parameter `target` (a dotted path in `md`)."""
        return f"self.{target}"

    # ------------------------------------------------------------ rules

    def op_rule(self, op: str, loc) -> Rule:
        rule = self.ops.get(op)
        if rule is None:
            raise missing_rule(self.backend, "op", op, loc)
        return rule

    def layer_rule(self, op: str, loc) -> LayerRule:
        rule = self.layers.get(op)
        if rule is None:
            raise missing_rule(self.backend, "layer op", op, loc)
        return rule

    def use_helper(self, name: str, loc) -> None:
        """Emit helper `name`, and the helpers its source calls (`_<other>` mentioned)."""
        if name not in self.helper_sources:
            raise missing_rule(self.backend, "helper function", name, loc)
        todo = [name]
        while todo:
            h = todo.pop()
            if h not in self.helpers:
                self.helpers.append(h)
                todo += [m for m in _HELPER_CALL.findall(self.helper_sources[h]) if m in self.helper_sources]

    def node_context(
        self, md: ModuleDef, node: Node, attrs: Mapping[str, Any] | None = None, operands: tuple[str, ...] = ()
    ) -> PyContext:
        return PyContext(
            op_name=node.op,
            a=node.attrs if attrs is None else attrs,
            operands=operands,
            in_types=tuple(o.type for o in node.operands),
            out_types=tuple(r.type for r in node.results),
            loc=first_loc(node.loc, md.loc, self.model.loc),
            emitter=self,
        )

    def layer_context(self, md: ModuleDef, name: str, layer: Layer) -> PyContext:
        """A layer member's context: its attributes, and the types and location of the
        first node that calls it (a member is declared once, however often it is called)."""
        call = next((n for n in md.nodes if n.kind == "call" and n.target == name), None)
        if call is None:
            return PyContext(op_name=layer.op, a=layer.attr_dict(), loc=first_loc(md.loc, self.model.loc), emitter=self)
        ctx = self.node_context(md, call, layer.attr_dict())
        ctx.op_name = layer.op
        return ctx

    # ------------------------------------------------------------ optional inputs

    def top_params(self, ns: Namespace, args: list[str]) -> list[str]:
        """The top call method's parameters: an input named by an identifier is a
        parameter of that name (None by default when optional); the others (a KV
        cache's `past_key_values.0.key`) are keyword arguments gathered in a dict."""
        params, extra = [], False
        for spec, arg in zip(self.model.inputs, args):
            if spec.name == arg:
                params.append(f"{arg}=None" if spec.optional else arg)
            elif spec.optional:
                extra = True
            else:
                raise ValueError(f"input '{spec.name}' must be optional or an identifier")
        if extra:
            self.extra = ns.name(hint="cache")
            params.append(f"**{self.extra}")
        return params

    def emit_defaults(self, out: Lines, ns: Namespace, args: list[str]) -> None:
        """Read the gathered keyword inputs, refuse unknown ones, and fill in the
        optional inputs not given: caches first (empty), then the mask (all ones over
        the cache and the new tokens), then the positions (from the mask)."""
        specs = list(zip(self.model.inputs, args))
        gathered = [(spec, arg) for spec, arg in specs if spec.name != arg]
        if gathered:
            names = "{" + ", ".join(repr(spec.name) for spec, _ in gathered) + "}"
            unknown = ns.name(hint="unknown")
            out(f"{unknown} = set({self.extra}) - {names}")
            out(f"if {unknown}:")
            with out.indent():
                out(f'raise TypeError(f"unexpected inputs {{sorted({unknown})}}")')
            for spec, arg in gathered:
                out(f"{arg} = {self.extra}.get({spec.name!r})")
        # The mask's and caches' batch and length: the first token input's (a
        # diffusion model's prompt comes after its latents).
        tokens = next((arg for spec, arg in specs if spec.kind == "tokens"), args[0])
        caches = [(spec, arg) for spec, arg in specs if spec.kind == "cache"]
        mask = next((arg for spec, arg in specs if spec.kind == "mask"), None)
        for spec, arg in caches:
            out(f"if {arg} is None:")
            with out.indent():
                out(f"{arg} = {self.empty_cache(tokens, spec.type.shape[1], spec.type.shape[3])}")
        for spec, arg in specs:
            if spec.kind == "mask":
                past = f"{caches[0][1]}.shape[2]" if caches else "0"
                out(f"if {arg} is None:")
                with out.indent():
                    out(f"{arg} = {self.ones_mask(tokens, past)}")
            elif spec.kind == "positions":
                out(f"if {arg} is None:")
                with out.indent():
                    out(f"{arg} = {self.mask_positions(mask, tokens)}")

    def empty_cache(self, tokens: str, heads: int, head_dim: int) -> str:
        return f"{self.lib}.zeros(({tokens}.shape[0], {heads}, 0, {head_dim}), dtype={self.lib}.float32)"

    def ones_mask(self, tokens: str, past: str) -> str:
        return f"{self.lib}.ones(({tokens}.shape[0], {past} + {tokens}.shape[-1]), dtype={self.int64})"

    def mask_positions(self, mask: str, tokens: str) -> str:
        """Position ids as transformers' generate() derives them from a (left-padded)
        mask: the count of tokens before each one; padding gets 0."""
        lib = self.lib
        return f"{lib}.where({mask} == 0, 0, {lib}.cumsum({mask}, axis=-1) - 1)[:, -{tokens}.shape[-1] :]"

    int64 = "np.int64"

    # ------------------------------------------------------------ emission

    def emit_classes(self) -> Lines:
        """Every module's class, dependencies first; fills `self.helpers`."""
        body = Lines()
        for md in self.model.modules.values():
            self.emit_module(body, md)
        return body

    def emit_helpers(self, out: Lines) -> None:
        """The helper functions the emitted classes call."""
        for h in sorted(self.helpers):
            out(self.helper_sources[h].strip("\n"))
            out("")

    def emit_members(self, out: Lines, md: ModuleDef) -> None:
        """`__init__`'s body: parameters and children."""
        lines = list(self.member_prologue())
        for p in md.params.values():
            lines.append(f"self.{p.name} = {self.param_member(p)}")
        for name, child in md.children.items():
            if isinstance(child, Layer):
                ctx = self.layer_context(md, name, child)
                lines.append(f"self.{name} = {self.layer_rule(child.op, ctx.loc).construct(ctx)}")
            elif isinstance(child, Sub):
                lines.append(f"self.{name} = {self.sub_member(self.class_names[child.module])}")
            else:
                lines.append(f"self.{name} = {self.repeat_member(self.class_names[child.module], child.count)}")
        for line in lines or ["pass"]:
            out(line)

    # ------------------------------------------------------------ names and liveness
    # A value is released when its name is rebound, so a result takes the name of a
    # value of the same hint that nothing reads any more (`x = x + h`, `h =
    # self.mlp_norm(x)`), as hand-written models rebind `hidden_states`. Fresh SSA
    # names for every result kept each function's temporaries alive to its return: a
    # Llama ~100M forward at 8x256 then page-faulted twice as often (the allocator gave
    # back and re-faulted the memory of the larger live set, layer after layer).

    def begin_body(self, md: ModuleDef, ns: Namespace, args: list[str]) -> None:
        """Before a call method's nodes: where each value is last read, what reads it,
        and the values the inputs' names hold."""
        self.last_use = {id(o): i for i, n in enumerate(md.nodes) for o in n.operands}
        self.last_use.update({id(o): len(md.nodes) for o in md.outputs})
        self.readers = readers(md)
        self.holders = dict(zip(args, md.inputs))  # name -> the value it holds now
        self.at = -1

    def result_names(self, node: Node, ns: Namespace, lenders: Sequence[Value] | None = None) -> list[str]:
        """Names of the node's results: each takes a name of its hint whose value is no
        longer read, after this node or (an operand in `lenders`, all by default)
        after it reads it; else a fresh one."""
        lenders = {id(o) for o in (node.operands if lenders is None else lenders)}
        mine = {id(r) for r in node.results}
        for r in node.results:
            if id(r) in ns.names:
                continue
            pattern = re.compile(re.escape(names.sanitize(r.hint) or "v") + r"(_\d+)?")
            free = sorted(
                (name for name, v in self.holders.items() if pattern.fullmatch(name) and id(v) not in mine
                 and (self.last_use.get(id(v), -1) < self.at or (self.last_use[id(v)] == self.at and id(v) in lenders))),
                key=lambda name: (len(name), name),
            )
            if free:
                ns.bind(r, free[0])
            self.holders[ns.name(r)] = r
        return [ns.name(r) for r in node.results]

    def emit_node(self, out: Lines, md: ModuleDef, node: Node, ns: Namespace) -> None:
        """One node of the call method's body."""
        args = [ns.name(o) for o in node.operands]
        if node.kind == "param":
            ns.bind(node.results[0], self.param_expr(md, node.target))
            return
        if node.kind == "call":
            child = md.children[node.target]
            # A loop reads its other operands every iteration: only the threaded one lends its name.
            res = self.result_names(node, ns, node.operands[:1] if isinstance(child, Repeat) else None)
            member = f"self.{node.target}"
            if isinstance(child, Repeat) and child.per_layer:
                k = child.per_layer
                shared = len(args) - child.count * k
                per, outs = ns.name(hint="per_layer"), ns.name(hint="layer_outputs")
                index = ns.name(hint="i")
                rest = "".join(f", {a}" for a in args[1:shared])
                if res[0] != args[0]:
                    out(f"{res[0]} = {args[0]}")
                out(f"{per} = [{', '.join(args[shared:])}]")
                out(f"{outs} = []")
                out(f"for {index}, layer in enumerate({member}):")
                with out.indent():
                    out(f"{res[0]}, *step = layer({res[0]}{rest}, *{per}[{k} * {index} : {k} * {index} + {k}])")
                    out(self.collect_layer_outputs(md, outs))
                out(f"{', '.join(res[1:])}, = {outs}")
                return
            if isinstance(child, Repeat):
                rest = "".join(f", {a}" for a in args[1:])
                if res[0] != args[0]:
                    out(f"{res[0]} = {args[0]}")
                out(f"for layer in {member}:")
                with out.indent():
                    out(f"{res[0]} = layer({res[0]}{rest})")
                return
            if isinstance(child, Layer):
                ctx = self.node_context(md, node, child.attr_dict(), tuple(args))
                ctx.op_name = child.op
                rule = self.layer_rule(child.op, ctx.loc)
                if rule.apply is not None:
                    out(f"{res[0]} = {rule.apply(ctx, member, *args)}")
                    return
            out(f"{', '.join(res)} = {member}({', '.join(args)})")
            return
        ctx = self.node_context(md, node, operands=tuple(args))
        rule = self.op_rule(node.op, ctx.loc)
        text = rule(ctx, *args)
        out(f"{self.result_names(node, ns)[0]} = {text}")

    def collect_layer_outputs(self, md: ModuleDef, outs: str) -> str:
        """The loop line that gathers one layer's per-layer outputs (its KV cache)."""
        return f"{outs} += step"

    def emit_module(self, out: Lines, md: ModuleDef) -> None:
        out(f"class {self.class_names[md.name]}({self.base_class}):")
        with out.indent():
            if md.doc:
                out(f"{md.doc!r}")
                out("")
            out(f"def __init__({self.init_signature}):")
            with out.indent():
                self.emit_members(out, md)
            out("")
            ns = Namespace(set(self.reserved) | set(self.class_names.values()) | {"step"})
            args = [ns.name(v) for v in md.inputs]
            top = md.name == self.model.top
            out(f"def {self.call_method}(self, {', '.join(self.top_params(ns, args) if top else args)}):")
            with out.indent():
                if top:
                    self.emit_defaults(out, ns, args)
                self.begin_body(md, ns, args)
                for self.at, node in enumerate(md.nodes):
                    self.emit_node(out, md, node, ns)
                if md.output_names:
                    items = ", ".join(f"{n!r}: {ns.name(v)}" for n, v in zip(md.output_names, md.outputs))
                    out(f"return {{{items}}}")
                else:
                    out(f"return {', '.join(ns.name(v) for v in md.outputs)}")
        out("")
        out("")
