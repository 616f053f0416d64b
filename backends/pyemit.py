"""What the torch and flax emitters share: a line buffer with indentation, a
namespace that makes every identifier legal and unique, helper-function collection,
the canonical-init table and the module-level API every generated file exposes."""

from __future__ import annotations

import builtins
import json
import keyword
import re
from abc import ABC, abstractmethod
from typing import Any, Callable

import black

from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.ir import names
from metagen.ir.graph import Model, ModuleDef, Node


class EmitError(CompileError):
    pass


def missing_emitter(backend: str, node: Node, model: Model) -> EmitError:
    loc = node.loc or model.loc or Loc("<ir>")
    return EmitError([Diagnostic("error", loc, f"the {backend} backend has no emitter for op '{node.op}'")])


class Namespace(names.Namespace):
    """Legal, unique Python identifiers: no keyword or builtin is ever given out."""

    def __init__(self, reserved: set[str] = frozenset()):
        super().__init__(set(reserved) | set(keyword.kwlist) | set(dir(builtins)))


class Lines:
    def __init__(self):
        self.lines: list[str] = []
        self.level = 0

    def __call__(self, text: str = "") -> None:
        self.lines.append(("    " * self.level + text) if text else "")

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


def format_python(src: str) -> str:
    """black's layout of `src`. The row tables (`_INITS`, flax's `_PARAMS`: one row per
    parameter, thousands for deep models) are laid out here instead: black's time grows
    faster than linearly in the size of one bracketed statement (20 s for a 768-layer
    GPT-2), and a row of plain literals needs only black's double quotes; a row too long
    for one line is laid out by black alone. Quotes or escapes inside a string send the
    table through black."""
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


# Canonical initial weights: numpy only, one generator per parameter seeded by
# (seed, crc32(name)), so every backend draws the same bits in any order.
INIT_FUNCTIONS = '''
def _draw(name, shape, scheme, args, seed):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    if scheme == "normal":
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(args["std"])
    if scheme == "trunc_normal":
        x = rng.standard_normal(shape, dtype=np.float32)
        return np.clip(x, -2.0, 2.0) * np.float32(args["std"])
    if scheme == "uniform":
        b = args["bound"]
        return rng.uniform(-b, b, size=shape).astype(np.float32)
    if scheme == "zeros":
        return np.zeros(shape, dtype=np.float32)
    if scheme == "ones":
        return np.ones(shape, dtype=np.float32)
    if scheme == "const":
        return np.full(shape, args["value"], dtype=np.float32)
    raise ValueError(f"unknown init scheme {scheme}")


def init_arrays(seed=0):
    """The canonical initial weights as numpy arrays, name -> array."""
    return {name: _draw(name, shape, scheme, args, seed) for name, shape, scheme, args in _INITS}
'''


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
        {"name": i.name, "kind": i.kind, "low": i.low, "high": i.high, "dtype": i.type.dtype.numpy}
        for i in model.inputs
    ]
    out(f"_INPUT_KINDS = {py_literal(specs)}")
    out("_INITS = [")
    with out.indent():
        for name, shape, scheme, args in init_table(model):
            out(f"({name!r}, {py_literal(list(shape))}, {scheme!r}, {py_literal(args)}),")
    out("]")


EXAMPLE_FUNCTION = '''
def example_inputs(batch_size=2, seed=0):
    """A dict of valid numpy inputs (token ids in range, standard-normal floats)."""
    rng = np.random.default_rng(seed)
    sizes = dict(_EXAMPLE_SIZES, batch=batch_size)
    out = {}
    for spec in _INPUT_KINDS:
        shape = tuple(d if isinstance(d, int) else sizes[d] for d in INPUTS[spec["name"]]["shape"])
        if spec["kind"] == "tokens":
            x = rng.integers(int(spec["low"]), int(spec["high"]), size=shape)
        elif spec["kind"] == "uniform":
            x = rng.uniform(spec["low"], spec["high"], size=shape)
        else:
            x = rng.standard_normal(shape)
        out[spec["name"]] = x.astype(spec["dtype"])
    return out
'''

EmitterFn = Callable[..., str]


class ModuleEmitter(ABC):
    """The class layout the torch and flax emitters share: one class per module
    definition, members built in `__init__`, the body written node by node in the
    call method, outputs returned as a dict (top module) or values. Subclasses say
    what the base class is, how members are constructed and how a node is written."""

    reserved: frozenset[str] = frozenset()
    base_class = ""
    init_signature = "self"
    call_method = "__call__"

    def __init__(self, model: Model):
        self.model = model
        self.out = Lines()
        self.helpers: list[str] = []
        self.class_ns = Namespace(set(self.reserved))
        self.class_names = {name: self.class_ns.name(hint=name) for name in model.modules}

    helper_sources: dict[str, str] = {}  # op -> helper function source, set by each backend

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

    @abstractmethod
    def emit_members(self, out: Lines, md: ModuleDef) -> None:
        """`__init__`'s body: parameters and children."""

    @abstractmethod
    def emit_node(self, out: Lines, md: ModuleDef, node: Node, ns: Namespace) -> None:
        """One node of the call method's body."""

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
            ns = Namespace(set(self.reserved) | set(self.class_names.values()))
            args = [ns.name(v) for v in md.inputs]
            out(f"def {self.call_method}(self, {', '.join(args)}):")
            with out.indent():
                for node in md.nodes:
                    self.emit_node(out, md, node, ns)
                if md.output_names:
                    items = ", ".join(f"{n!r}: {ns.name(v)}" for n, v in zip(md.output_names, md.outputs))
                    out(f"return {{{items}}}")
                else:
                    out(f"return {', '.join(ns.name(v) for v in md.outputs)}")
        out("")
        out("")
