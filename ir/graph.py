"""Modules, nodes and values: the graph a model is.

A `Model` is a tree of `ModuleDef`s (which become classes in generated code). Each
module declares its own parameters, its children (a parametric `Layer` op such as
`linear`, a `Sub` module, or a `Repeat` of N identical modules applied in sequence)
and a body: an ordered list of `Node`s in SSA form. Values have no names; the
printer and each backend name them (`hint` only suggests a readable name).

Canonical weight names fall out of the tree: the child path plus the parameter's
local name, with the layer index for `Repeat` (`blocks.3.attn.q_proj.weight`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from metagen.diagnostics import Loc
from metagen.ir.types import TensorType


@dataclass(frozen=True)
class Init:
    """How a parameter's initial value is drawn (numpy, per-parameter seeded)."""

    scheme: str  # normal | trunc_normal | uniform | zeros | ones | const
    args: tuple[tuple[str, float], ...] = ()

    def arg(self, name: str, default: float | None = None) -> float:
        for k, v in self.args:
            if k == name:
                return v
        if default is None:
            raise KeyError(name)
        return default

    def __str__(self) -> str:
        if not self.args:
            return self.scheme
        return f"{self.scheme}({', '.join(f'{k}={_num(v)}' for k, v in self.args)})"


def _num(v: float) -> str:
    return repr(float(v))


def normal(std: float) -> Init:
    return Init("normal", (("std", float(std)),))


def uniform(bound: float) -> Init:
    return Init("uniform", (("bound", float(bound)),))


def const(value: float) -> Init:
    return Init("const", (("value", float(value)),))


ZEROS = Init("zeros")
ONES = Init("ones")


@dataclass(frozen=True)
class Param:
    """A parameter: local name, concrete shape, dtype and init scheme. A `buffer` is
    state that is not trained by gradient (batch norm's running statistics): it is
    part of the canonical weights (every backend loads and saves it under its
    canonical name) but not of the parameter count, as torch counts `parameters()`."""

    name: str
    type: TensorType
    init: Init
    buffer: bool = False

    @property
    def numel(self) -> int:
        return self.type.numel()

    @property
    def counted(self) -> int:
        """Elements this contributes to the parameter count (0 for a buffer)."""
        return 0 if self.buffer else self.type.numel()


class Value:
    """An SSA value: a module input or a node result."""

    __slots__ = ("type", "hint", "producer")

    def __init__(self, type: TensorType, hint: str = "", producer: "Node | None" = None):
        self.type = type
        self.hint = hint
        self.producer = producer

    def __repr__(self) -> str:
        return f"Value({self.hint or '?'}: {self.type})"


@dataclass
class Node:
    """One operation. `kind` is 'op' (a primitive), 'call' (a child module or
    layer, `target` its attribute name) or 'param' (read parameter `target`, a
    dotted path inside this module, e.g. `wte.weight` for a tied head).

    `loc` is the source location that caused the node (the spec key a family built
    it for, or the `.mgir` line it was parsed from), for diagnostics; the printer
    does not write it, so the IR text does not depend on where the spec lives."""

    kind: str
    op: str
    operands: list[Value]
    attrs: dict[str, Any]
    results: list[Value]
    target: str = ""
    loc: Loc | None = None


@dataclass(frozen=True)
class Layer:
    """A parametric primitive used as a child (linear, embedding, norms, conv)."""

    op: str
    attrs: tuple[tuple[str, Any], ...]

    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)


@dataclass(frozen=True)
class Sub:
    module: str  # ModuleDef name


@dataclass(frozen=True)
class Repeat:
    """`count` instances of one module applied in sequence: the first operand
    threads through, the others are passed unchanged to every instance."""

    module: str
    count: int


Child = Layer | Sub | Repeat


@dataclass
class ModuleDef:
    name: str
    params: dict[str, Param] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    inputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)  # top module only
    doc: str = ""
    loc: Loc | None = None


@dataclass(frozen=True)
class InputSpec:
    """What a model input is, so example inputs are valid: `kind` is 'tokens'
    (integers in [0, high)), 'normal' (standard normal floats) or 'uniform'
    (floats in [low, high))."""

    name: str
    type: TensorType
    kind: str
    low: float = 0.0
    high: float = 0.0
    doc: str = ""


@dataclass
class Model:
    name: str  # class name of the top module
    spec_name: str  # the spec's free-text name
    modules: dict[str, ModuleDef]  # in definition order, dependencies first
    top: str
    inputs: list[InputSpec]
    config: dict[str, Any]
    family: str
    symbols: dict[str, str] = field(default_factory=dict)  # symbol -> meaning
    examples: dict[str, int] = field(default_factory=dict)  # symbol -> size for example inputs
    loc: Loc | None = None

    @property
    def top_module(self) -> ModuleDef:
        return self.modules[self.top]

    @property
    def output_names(self) -> list[str]:
        return self.top_module.output_names

    def walk_params(self) -> Iterator[tuple[str, Param]]:
        """Every parameter with its canonical name, in definition order."""
        yield from _walk(self, self.top, "")

    def buffer_names(self) -> set[str]:
        """Canonical names of the buffers (state outside the parameter count)."""
        return {name for name, p in self.walk_params() if p.buffer}

    def param_count(self) -> int:
        """Exact parameter count, from the IR alone (nothing is allocated)."""
        return sum(n for _, n in self.module_param_counts(self.top))

    def module_param_counts(self, module: str) -> list[tuple[str, int]]:
        """(child path, parameter count) for each direct child and own parameter."""
        m = self.modules[module]
        out = [(name, p.counted) for name, p in m.params.items()]
        for cname, child in m.children.items():
            out.append((cname, self.child_param_count(child)))
        return out

    def child_param_count(self, child: Child) -> int:
        from metagen.ir import ops

        if isinstance(child, Layer):
            return sum(p.counted for p in ops.layer_params(child).values())
        count = child.count if isinstance(child, Repeat) else 1
        return count * sum(n for _, n in self.module_param_counts(child.module))


def _walk(model: Model, module: str, prefix: str) -> Iterator[tuple[str, Param]]:
    from metagen.ir import ops

    m = model.modules[module]
    for name, p in m.params.items():
        yield prefix + name, p
    for cname, child in m.children.items():
        if isinstance(child, Layer):
            for pname, p in ops.layer_params(child).items():
                yield f"{prefix}{cname}.{pname}", p
        elif isinstance(child, Sub):
            yield from _walk(model, child.module, f"{prefix}{cname}.")
        else:
            for i in range(child.count):
                yield from _walk(model, child.module, f"{prefix}{cname}.{i}.")


class ParamPathError(ValueError):
    pass


@dataclass(frozen=True)
class ParamRef:
    """Where a dotted parameter path leads. `steps` are the member names (and, through a
    Repeat, the integer indices) from the starting module to the parameter's owner;
    `layer` is that owner when it is a layer (None for a module's own parameter);
    `name` is the parameter's name in its owner."""

    steps: tuple[str | int, ...]
    layer: Layer | None
    name: str
    param: Param


def resolve_param(modules: dict[str, ModuleDef], m: ModuleDef, path: str, *, repeats: bool = False) -> ParamRef:
    """The one parameter-path resolver (builder, verifier, backends). A `param` node's
    path may not enter a Repeat (its blocks are not attributes); a canonical name
    (`walk_params`) does, with `repeats=True`."""
    from metagen.ir import ops

    steps: list[str | int] = []
    head, _, rest = path.partition(".")
    while rest:
        child = m.children.get(head)
        if isinstance(child, Layer):
            params = ops.layer_params(child)
            if rest not in params:
                raise ParamPathError(f"layer {head} has no parameter '{rest}'")
            return ParamRef((*steps, head), child, rest, params[rest])
        if child is None or (isinstance(child, Repeat) and not repeats):
            raise ParamPathError(f"cannot read parameter '{path}' in {m.name}")
        steps.append(head)
        if isinstance(child, Repeat):
            index, _, rest = rest.partition(".")
            if not index.isdigit() or int(index) >= child.count:
                raise ParamPathError(f"'{path}': {head} has no block {index!r}")
            steps.append(int(index))
        m = modules[child.module]
        head, _, rest = rest.partition(".")
    if head not in m.params:
        raise ParamPathError(f"{m.name} has no parameter '{head}'")
    return ParamRef(tuple(steps), None, head, m.params[head])
