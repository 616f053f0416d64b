"""Helpers for building modules: emit nodes with their types inferred on the spot."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from metagen.diagnostics import Loc
from metagen.ir import ops
from metagen.ir.graph import Init, InputSpec, Layer, Model, ModuleDef, Node, Param, Repeat, Sub, Value, resolve_param
from metagen.ir.types import DType, TensorType


class ModuleBuilder:
    """Builds one `ModuleDef`. Children must be defined (in the `ModelBuilder`)
    before they are called, so every call's result type is known."""

    def __init__(self, model: "ModelBuilder", name: str, doc: str = "", loc: Loc | None = None):
        self.model = model
        self.m = ModuleDef(name, doc=doc, loc=loc)
        self.loc = loc

    def input(self, hint: str, type: TensorType) -> Value:
        v = Value(type, hint)
        self.m.inputs.append(v)
        return v

    def param(self, name: str, shape: tuple[int, ...], init: Init, hint: str = "") -> Value:
        if name in self.m.params or name in self.m.children:
            raise ValueError(f"duplicate member '{name}' in {self.m.name}")
        self.m.params[name] = Param(name, TensorType(DType.f32, tuple(shape)), init)
        return self.get_param(name, hint or name)

    def get_param(self, path: str, hint: str = "") -> Value:
        t = resolve_param(self.model.modules, self.m, path).param.type
        v = Value(t, hint or path.replace(".", "_"))
        n = Node("param", "param", [], {}, [v], target=path, loc=self.loc)
        v.producer = n
        self.m.nodes.append(n)
        return v

    def layer(self, name: str, op: str, **attrs: Any) -> str:
        d = ops.get(op)
        if not d.is_layer:
            raise ValueError(f"op '{op}' has no parameters; emit it with .op()")
        full = d.resolve_attrs(attrs)
        self._add_child(name, Layer(op, tuple(full.items())))
        return name

    def sub(self, name: str, module: ModuleDef) -> str:
        self._add_child(name, Sub(self.model.define(module)))
        return name

    def repeat(self, name: str, module: ModuleDef, count: int, per_layer: int = 0) -> str:
        if count < 1:
            raise ValueError("repeat count must be >= 1")
        self._add_child(name, Repeat(self.model.define(module), count, per_layer))
        return name

    def _add_child(self, name, child) -> None:
        if name in self.m.children or name in self.m.params:
            raise ValueError(f"duplicate member '{name}' in {self.m.name}")
        self.m.children[name] = child

    def call(self, child: str, *args: Value, hint: str = "") -> Value:
        results = self.call_multi(child, *args, hint=hint)
        if len(results) != 1:
            raise ValueError(f"call {child} returns {len(results)} values")
        return results[0]

    def call_multi(self, child: str, *args: Value, hint: str = "") -> list[Value]:
        types = self.model.call_types(self.m, child, [a.type for a in args])
        results = [Value(t, hint) for t in types]
        n = Node("call", "call", list(args), {}, results, target=child, loc=self.loc)
        for r in results:
            r.producer = n
        self.m.nodes.append(n)
        return results

    def op(self, name: str, *args: Value, hint: str = "", **attrs: Any) -> Value:
        d = ops.get(name)
        if d.is_layer:
            raise ValueError(f"op '{name}' has parameters; declare it with .layer()")
        full = d.resolve_attrs(attrs)
        types = ops.infer(name, full, [a.type for a in args])
        results = [Value(t, hint) for t in types]
        n = Node("op", name, list(args), full, results, loc=self.loc)
        for r in results:
            r.producer = n
        self.m.nodes.append(n)
        return results[0]

    def ret(self, *values: Value, names: list[str] | None = None) -> ModuleDef:
        self.m.outputs = list(values)
        self.m.output_names = list(names or [])
        return self.m


class ModelBuilder:
    """Collects module definitions, sharing identical ones under one class name.

    `loc` is the source location new modules (and so their nodes) carry unless they
    are given one: a family points it at the spec key that caused what it builds
    next (`with mb.at(loc): ...`), so a diagnostic from a pass or a backend names
    the user's line. Locations stay in memory; the IR text does not print them."""

    def __init__(self, loc: Loc | None = None):
        self.modules: dict[str, ModuleDef] = {}
        self._by_signature: dict[tuple, str] = {}
        self.loc = loc

    def module(self, name: str, doc: str = "", loc: Loc | None = None) -> ModuleBuilder:
        return ModuleBuilder(self, name, doc, loc or self.loc)

    @contextmanager
    def at(self, loc: Loc | None) -> Iterator[None]:
        """Modules begun inside the block carry `loc`."""
        saved = self.loc
        self.loc = loc or saved
        try:
            yield
        finally:
            self.loc = saved

    def define(self, m: ModuleDef) -> str:
        """Register a module; a structurally identical one already defined is reused."""
        from metagen.ir.printer import module_signature

        sig = module_signature(m)
        if sig in self._by_signature:
            return self._by_signature[sig]
        name = m.name
        k = 1
        while name in self.modules:
            name = f"{m.name}{k}"
            k += 1
        m.name = name
        self.modules[name] = m
        self._by_signature[sig] = name
        return name

    def call_types(self, m: ModuleDef, child_name: str, arg_types: list[TensorType]) -> list[TensorType]:
        return call_types(self.modules, m, child_name, arg_types)

    def finish(self, top: ModuleDef, *, name: str, spec_name: str, inputs: list[InputSpec], config: dict, family: str, symbols: dict[str, str], examples: dict[str, int] | None = None, loc: Loc | None = None, embeddings: dict[str, str] | None = None) -> Model:
        top_name = self.define(top)
        return Model(
            name=name,
            spec_name=spec_name,
            modules=dict(self.modules),
            top=top_name,
            inputs=inputs,
            config=config,
            family=family,
            symbols=symbols,
            examples=dict(examples or {}),
            loc=loc or self.loc,
            embeddings=dict(embeddings or {}),
        )


def call_types(modules: dict[str, ModuleDef], m: ModuleDef, child_name: str, arg_types: list[TensorType]) -> list[TensorType]:
    """Result types of calling child `child_name` of `m` with `arg_types`."""
    child = m.children.get(child_name)
    if child is None:
        raise ops.OpError(f"{m.name} has no child '{child_name}'")
    if isinstance(child, Layer):
        return ops.infer(child.op, child.attr_dict(), arg_types)
    target = modules[child.module]
    want = [v.type for v in target.inputs]
    outs = [v.type for v in target.outputs]
    k = child.per_layer if isinstance(child, Repeat) else 0
    if k:  # per-instance inputs and outputs, instance by instance
        if k >= len(want):
            raise ops.OpError(f"repeat {child_name}: {target.name} has no input besides its {k} per-layer ones")
        want = want[:-k] + want[-k:] * child.count
    if want != list(arg_types):
        raise ops.OpError(
            f"call {child_name}: {target.name} takes ({', '.join(map(str, want))}), "
            f"got ({', '.join(map(str, arg_types))})"
        )
    if isinstance(child, Repeat):
        if not outs or outs[0] != want[0] or (len(outs) > 1 and not k):
            raise ops.OpError(f"repeat {child_name}: {target.name} must map its first input's type to itself")
        outs = outs[:1] + outs[1:] * child.count
    return outs
