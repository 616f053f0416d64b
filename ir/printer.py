"""The textual IR (`.mgir`): one printer, and `parser.py` reads it back.

Names are given here, not stored: each value prints as its hint made unique within
its module (`%h`, `%h_1`), so the same graph always prints the same text.
"""

from __future__ import annotations

import json
from typing import Any

from metagen.ir.graph import Layer, Model, ModuleDef, Repeat, Sub
from metagen.ir.names import Namespace

VERSION = "1"


def fmt_attr(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, tuple):
        return "[" + ", ".join(fmt_attr(x) for x in v) + "]"
    raise TypeError(f"cannot print attribute {v!r}")


def fmt_attrs(attrs: dict) -> str:
    return ", ".join(f"{k}={fmt_attr(v)}" for k, v in attrs.items())


def print_module(m: ModuleDef) -> list[str]:
    lines = [f"module {m.name} {{"]
    if m.doc:
        lines.append(f"  doc {json.dumps(m.doc, ensure_ascii=False)}")
    for p in m.params.values():
        lines.append(f"  param {p.name} : {p.type} = {p.init}")
    for name, c in m.children.items():
        if isinstance(c, Layer):
            lines.append(f"  layer {name} = {c.op}({fmt_attrs(c.attr_dict())})")
        elif isinstance(c, Sub):
            lines.append(f"  sub {name} = {c.module}")
        elif isinstance(c, Repeat):
            per_layer = f" per_layer {c.per_layer}" if c.per_layer else ""
            lines.append(f"  repeat {name} = {c.module} * {c.count}{per_layer}")
    namer = Namespace()
    args = ", ".join(f"%{namer(v)} : {v.type}" for v in m.inputs)
    lines.append(f"  func ({args}) {{")
    for n in m.nodes:
        res = ", ".join(f"%{namer(r)}" for r in n.results)
        types = ", ".join(str(r.type) for r in n.results)
        operands = ", ".join(f"%{namer(o)}" for o in n.operands)
        if n.kind == "param":
            rhs = f"param {n.target}"
        elif n.kind == "call":
            rhs = f"call {n.target}({operands})"
        else:
            attrs = fmt_attrs(n.attrs)
            rhs = f"{n.op}({operands})" + (f" {{{attrs}}}" if attrs else "")
        lines.append(f"    {res} = {rhs} : {types}")
    if m.output_names:
        outs = ", ".join(f"{name}=%{namer(v)}" for name, v in zip(m.output_names, m.outputs))
    else:
        outs = ", ".join(f"%{namer(v)}" for v in m.outputs)
    lines.append(f"    return {outs}")
    lines.append("  }")
    lines.append("}")
    return lines


def module_signature(m: ModuleDef) -> tuple:
    """Structure of a module without its name, for sharing identical definitions:
    two modules with equal signatures print identically up to their names."""
    index: dict[int, int] = {}
    for v in m.inputs:
        index[id(v)] = len(index)
    nodes = []
    for n in m.nodes:
        operands = tuple(index.get(id(o), -1) for o in n.operands)
        for r in n.results:
            index[id(r)] = len(index)
        nodes.append((n.kind, n.op, n.target, operands, tuple(n.attrs.items()), tuple(r.type for r in n.results)))
    return (
        m.doc,
        tuple(m.params.values()),
        tuple(m.children.items()),
        tuple(v.type for v in m.inputs),
        tuple(nodes),
        tuple(index.get(id(v), -1) for v in m.outputs),
        tuple(m.output_names),
    )


def print_model(model: Model) -> str:
    lines = [f"mgir {VERSION}"]
    lines.append(f"model {model.name} {{")
    lines.append(f"  spec_name {json.dumps(model.spec_name, ensure_ascii=False)}")
    lines.append(f"  family {model.family}")
    lines.append(f"  top {model.top}")
    for sym, meaning in model.symbols.items():
        lines.append(f"  symbol {sym} {json.dumps(meaning, ensure_ascii=False)}")
    for sym, size in model.examples.items():
        lines.append(f"  example {sym} = {size}")
    for i in model.inputs:
        lines.append(
            f"  input {i.name} : {i.type} {i.kind}(low={fmt_attr(float(i.low))}, high={fmt_attr(float(i.high))})"
            f" {json.dumps(i.doc, ensure_ascii=False)}"
        )
    for output, source in model.embeddings.items():
        lines.append(f"  embedding {output} = {source}")
    for k, v in model.config.items():
        lines.append(f"  config {k} = {json.dumps(v, ensure_ascii=False, sort_keys=True)}")
    lines.append("}")
    for m in model.modules.values():
        lines.append("")
        lines.extend(print_module(m))
    return "\n".join(lines) + "\n"
