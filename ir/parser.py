"""Reads the textual IR written by `printer.py` back into a `Model`.

The format is line-oriented, so the parser is a small table of line patterns; each
error names the line it is on. `parse_model(print_model(m))` prints back to the same
text (tested).
"""

from __future__ import annotations

import json
import re
from typing import Any

from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.ir import ops
from metagen.ir.builder import call_types
from metagen.ir.graph import Init, InputSpec, Layer, Model, ModuleDef, Node, Param, Repeat, Sub, Value
from metagen.ir.types import parse_type

_ID = r"[A-Za-z_][A-Za-z0-9_]*"


class _Fail(Exception):
    pass


class _Cursor:
    """The line being read, for error positions."""

    line = 0


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets and strings."""
    parts, depth, cur, quote, esc = [], 0, [], False, False
    for ch in text:
        if quote:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quote = False
            continue
        if ch == '"':
            quote = True
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def parse_attr(text: str) -> Any:
    text = text.strip()
    if text == "none":
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("["):
        return tuple(parse_attr(x) for x in _split_top(text[1:-1]))
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise _Fail(f"bad attribute value {text!r}") from None


def parse_attrs(text: str) -> dict[str, Any]:
    out = {}
    for part in _split_top(text):
        k, _, v = part.partition("=")
        out[k.strip()] = parse_attr(v)
    return out


def _parse_init(text: str) -> Init:
    m = re.fullmatch(rf"({_ID})(?:\((.*)\))?", text.strip())
    if not m:
        raise _Fail(f"bad init {text!r}")
    args = tuple((k, float(v)) for k, v in parse_attrs(m.group(2) or "").items())
    return Init(m.group(1), args)


def parse_model(text: str, path: str = "<mgir>") -> Model:
    lines = text.split("\n")
    state: dict[str, Any] = {"modules": {}}
    i = 0
    _Cursor.line = 0
    try:
        if not lines or not re.fullmatch(r"mgir [0-9]+", lines[0].strip()):
            raise _Fail("expected 'mgir <version>' on the first line")
        i = 1
        header: dict[str, Any] = {"inputs": [], "config": {}, "symbols": {}, "examples": {}, "embeddings": {}}
        while i < len(lines):
            line = lines[i].strip()
            if not line:
                i += 1
                continue
            if m := re.fullmatch(rf"model ({_ID}) \{{", line):
                header["name"] = m.group(1)
                i += 1
                while lines[i].strip() != "}":
                    _header_line(lines[i].strip(), header)
                    i += 1
                i += 1
            elif m := re.fullmatch(rf"module ({_ID}) \{{", line):
                mod, i = _parse_module(lines, i + 1, m.group(1), state["modules"], path)
                state["modules"][mod.name] = mod
            else:
                raise _Fail(f"unexpected line {line!r}")
        return Model(
            name=header["name"],
            spec_name=header["spec_name"],
            modules=state["modules"],
            top=header["top"],
            inputs=header["inputs"],
            config=header["config"],
            family=header["family"],
            symbols=header["symbols"],
            examples=header["examples"],
            embeddings=header["embeddings"],
        )
    except (_Fail, ops.OpError, KeyError, ValueError, IndexError) as exc:
        line = max(i, _Cursor.line)
        raise CompileError([Diagnostic("error", Loc(path, min(line, len(lines) - 1) + 1, 1), f"bad IR: {exc}")]) from None


def _header_line(line: str, header: dict) -> None:
    if m := re.fullmatch(r"spec_name (.*)", line):
        header["spec_name"] = json.loads(m.group(1))
    elif m := re.fullmatch(rf"family ({_ID})", line):
        header["family"] = m.group(1)
    elif m := re.fullmatch(rf"top ({_ID})", line):
        header["top"] = m.group(1)
    elif m := re.fullmatch(rf"symbol ({_ID}) (.*)", line):
        header["symbols"][m.group(1)] = json.loads(m.group(2))
    elif m := re.fullmatch(rf"example ({_ID}) = ([0-9]+)", line):
        header["examples"][m.group(1)] = int(m.group(2))
    elif m := re.fullmatch(rf"input ({_ID}(?:\.[A-Za-z0-9_]+)*) : (\S+\[[^\]]*\]) ({_ID})\((.*?)\) (\".*\")", line):
        a = parse_attrs(m.group(4))
        header["inputs"].append(
            InputSpec(m.group(1), parse_type(m.group(2)), m.group(3), a["low"], a["high"], json.loads(m.group(5)))
        )
    elif m := re.fullmatch(rf"embedding ({_ID}) = ({_ID})", line):
        header["embeddings"][m.group(1)] = m.group(2)
    elif m := re.fullmatch(rf"config ({_ID}) = (.*)", line):
        header["config"][m.group(1)] = json.loads(m.group(2))
    else:
        raise _Fail(f"unexpected model line {line!r}")


def _parse_module(lines: list[str], i: int, name: str, modules: dict[str, ModuleDef], path: str):
    m = ModuleDef(name)
    env: dict[str, Value] = {}
    while True:
        _Cursor.line = i
        line = lines[i].strip()
        loc = Loc(path, i + 1, 1)
        if line == "}":
            return m, i + 1
        if mm := re.fullmatch(r"doc (\".*\")", line):
            m.doc = json.loads(mm.group(1))
        elif mm := re.fullmatch(rf"param ({_ID}) : (\S+\[[^\]]*\]) = (.*)", line):
            m.params[mm.group(1)] = Param(mm.group(1), parse_type(mm.group(2)), _parse_init(mm.group(3)))
        elif mm := re.fullmatch(rf"layer ({_ID}) = ({_ID})\((.*)\)", line):
            attrs = ops.get(mm.group(2)).resolve_attrs(parse_attrs(mm.group(3)))
            m.children[mm.group(1)] = Layer(mm.group(2), tuple(attrs.items()))
        elif mm := re.fullmatch(rf"sub ({_ID}) = ({_ID})", line):
            m.children[mm.group(1)] = Sub(mm.group(2))
        elif mm := re.fullmatch(rf"repeat ({_ID}) = ({_ID}) \* ([0-9]+)(?: per_layer ([0-9]+))?", line):
            m.children[mm.group(1)] = Repeat(mm.group(2), int(mm.group(3)), int(mm.group(4) or 0))
        elif mm := re.fullmatch(r"func \((.*)\) \{", line):
            for part in _split_top(mm.group(1)):
                vm = re.fullmatch(rf"%({_ID}) : (.*)", part)
                if not vm:
                    raise _Fail(f"bad function argument {part!r}")
                v = Value(parse_type(vm.group(2)), vm.group(1))
                env[vm.group(1)] = v
                m.inputs.append(v)
            i += 1
            while not lines[i].strip().startswith("return"):
                _Cursor.line = i
                _parse_node(lines[i].strip(), m, env, modules, Loc(path, i + 1, 1))
                i += 1
            rest = lines[i].strip()[len("return") :].strip()
            for part in _split_top(rest):
                if "=" in part:
                    oname, _, ref = part.partition("=")
                    m.output_names.append(oname.strip())
                    part = ref.strip()
                m.outputs.append(_ref(env, part))
            i += 1
            if lines[i].strip() != "}":
                raise _Fail("expected '}' after return")
        else:
            raise _Fail(f"unexpected module line {line!r} at {loc}")
        i += 1


def _ref(env: dict[str, Value], text: str) -> Value:
    text = text.strip()
    if not text.startswith("%") or text[1:] not in env:
        raise _Fail(f"unknown value {text}")
    return env[text[1:]]


def _parse_node(line: str, m: ModuleDef, env: dict[str, Value], modules: dict[str, ModuleDef], loc: Loc) -> None:
    mm = re.fullmatch(r"(.*?) = (.*) : (.*)", line)
    if not mm:
        raise _Fail(f"bad node {line!r}")
    names = [x.strip()[1:] for x in _split_top(mm.group(1))]
    types = [parse_type(t) for t in _split_top(mm.group(3))]
    rhs = mm.group(2).strip()
    if pm := re.fullmatch(r"param (\S+)", rhs):
        node = Node("param", "param", [], {}, [], target=pm.group(1), loc=loc)
    elif cm := re.fullmatch(rf"call ({_ID})\((.*)\)", rhs):
        operands = [_ref(env, x) for x in _split_top(cm.group(2))]
        node = Node("call", "call", operands, {}, [], target=cm.group(1), loc=loc)
    elif om := re.fullmatch(rf"({_ID})\((.*?)\)(?: \{{(.*)\}})?", rhs):
        operands = [_ref(env, x) for x in _split_top(om.group(2))]
        attrs = ops.get(om.group(1)).resolve_attrs(parse_attrs(om.group(3) or ""))
        node = Node("op", om.group(1), operands, attrs, [], loc=loc)
    else:
        raise _Fail(f"bad node {line!r}")
    if len(names) != len(types):
        raise _Fail("result names and types differ in number")
    for n, t in zip(names, types):
        if n in env:
            raise _Fail(f"%{n} is defined twice")
        v = Value(t, n, node)
        env[n] = v
        node.results.append(v)
    m.nodes.append(node)
