"""The IR verifier: run by the pass manager between passes and on parsed IR."""

from __future__ import annotations

import keyword
import re

from metagen.ir import ops
from metagen.ir.builder import call_types
from metagen.ir.graph import Layer, Model, ParamPathError, Repeat, Sub, resolve_param

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class VerifyError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def verify_model(model: Model) -> None:
    """Raise VerifyError listing every inconsistency found."""
    problems: list[str] = []
    if model.top not in model.modules:
        raise VerifyError([f"top module {model.top} is not defined"])
    seen: list[str] = []
    for name, m in model.modules.items():
        where = f"module {name}"
        for member in list(m.params) + list(m.children):
            if not _IDENT.match(member) or keyword.iskeyword(member):
                problems.append(f"{where}: member name {member!r} is not an identifier")
        for cname, child in m.children.items():
            if isinstance(child, (Sub, Repeat)) and child.module not in seen:
                problems.append(f"{where}: child {cname} uses {child.module}, which is not defined before it")
            if isinstance(child, Layer):
                try:
                    ops.get(child.op).resolve_attrs(child.attr_dict())
                except ops.OpError as exc:
                    problems.append(f"{where}: layer {cname}: {exc}")
        defined = {id(v) for v in m.inputs}
        for i, node in enumerate(m.nodes):
            at = f"{where}, node {i} ({node.op if node.kind == 'op' else node.kind + ' ' + node.target})"
            for o in node.operands:
                if id(o) not in defined:
                    problems.append(f"{at}: uses a value before it is defined")
            try:
                if node.kind == "param":
                    want = [resolve_param(model.modules, m, node.target).param.type]
                elif node.kind == "call":
                    want = call_types(model.modules, m, node.target, [o.type for o in node.operands])
                else:
                    want = ops.infer(node.op, node.attrs, [o.type for o in node.operands])
            except (ops.OpError, ParamPathError, KeyError) as exc:
                problems.append(f"{at}: {exc}")
                continue
            got = [r.type for r in node.results]
            if want != got:
                problems.append(f"{at}: result types {list(map(str, got))} but the op gives {list(map(str, want))}")
            for r in node.results:
                defined.add(id(r))
        for v in m.outputs:
            if id(v) not in defined:
                problems.append(f"{where}: returns an undefined value")
        seen.append(name)
    top = model.modules[model.top]
    if len(top.output_names) != len(top.outputs):
        problems.append("the top module must name each of its outputs")
    if [i.type for i in model.inputs] != [v.type for v in top.inputs]:
        problems.append("model inputs do not match the top module's arguments")
    names = [i.name for i in model.inputs] + list(top.output_names)
    if len(set(names)) != len(names):
        problems.append("input and output names must be unique")
    if problems:
        raise VerifyError(problems)
