"""The IR verifier: run by the pass manager between passes and on parsed IR."""

from __future__ import annotations

import keyword
import re

from metagen.diagnostics import Loc
from metagen.ir import ops
from metagen.ir.builder import call_types
from metagen.ir.graph import Layer, Model, ParamPathError, Repeat, Sub, resolve_param

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class VerifyError(ValueError):
    """`problems` as text; `locs[i]` is where problem i came from in the user's spec
    (the node's or module's location), or None."""

    def __init__(self, problems: list[str], locs: list[Loc | None] | None = None):
        self.problems = problems
        self.locs = locs if locs is not None else [None] * len(problems)
        super().__init__("; ".join(problems))


def verify_model(model: Model) -> None:
    """Raise VerifyError listing every inconsistency found."""
    problems: list[str] = []
    locs: list[Loc | None] = []
    here: Loc | None = model.loc  # the location of what is being checked

    def add(text: str) -> None:
        problems.append(text)
        locs.append(here)

    if model.top not in model.modules:
        raise VerifyError([f"top module {model.top} is not defined"])
    seen: list[str] = []
    for name, m in model.modules.items():
        where = f"module {name}"
        here = m.loc or model.loc
        for member in list(m.params) + list(m.children):
            if not _IDENT.match(member) or keyword.iskeyword(member):
                add(f"{where}: member name {member!r} is not an identifier")
        for cname, child in m.children.items():
            if isinstance(child, (Sub, Repeat)) and child.module not in seen:
                add(f"{where}: child {cname} uses {child.module}, which is not defined before it")
            if isinstance(child, Layer):
                try:
                    ops.get(child.op).resolve_attrs(child.attr_dict())
                except ops.OpError as exc:
                    add(f"{where}: layer {cname}: {exc}")
        defined = {id(v) for v in m.inputs}
        for i, node in enumerate(m.nodes):
            here = node.loc or m.loc or model.loc
            at = f"{where}, node {i} ({node.op if node.kind == 'op' else node.kind + ' ' + node.target})"
            for o in node.operands:
                if id(o) not in defined:
                    add(f"{at}: uses a value before it is defined")
            try:
                if node.kind == "param":
                    want = [resolve_param(model.modules, m, node.target).param.type]
                elif node.kind == "call":
                    want = call_types(model.modules, m, node.target, [o.type for o in node.operands])
                else:
                    want = ops.infer(node.op, node.attrs, [o.type for o in node.operands])
            except (ops.OpError, ParamPathError, KeyError) as exc:
                add(f"{at}: {exc}")
                continue
            got = [r.type for r in node.results]
            if want != got:
                add(f"{at}: result types {list(map(str, got))} but the op gives {list(map(str, want))}")
            for r in node.results:
                defined.add(id(r))
        here = m.loc or model.loc
        for v in m.outputs:
            if id(v) not in defined:
                add(f"{where}: returns an undefined value")
        seen.append(name)
    here = model.loc
    top = model.modules[model.top]
    if len(top.output_names) != len(top.outputs):
        add("the top module must name each of its outputs")
    if [i.type for i in model.inputs] != [v.type for v in top.inputs]:
        add("model inputs do not match the top module's arguments")
    names = [i.name for i in model.inputs] + list(top.output_names)
    if len(set(names)) != len(names):
        add("input and output names must be unique")
    if problems:
        raise VerifyError(problems, locs)
