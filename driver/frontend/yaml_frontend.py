"""YAML (and JSON) text -> located tree, with positions for every key and value.

Only PyYAML's safe machinery is used (SafeLoader's composer and scalar resolver), so
no tag can construct a Python object. Aliases are expanded with a node budget, which
turns an alias bomb into a prompt diagnostic instead of an exponential walk.
"""

from __future__ import annotations

import yaml

from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.frontend.tree import LNode

MAX_NODES = 20_000
MAX_DEPTH = 64  # no spec section nests deeper than a handful of levels


def _loc(path: str, mark) -> Loc:
    return Loc(path, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, path: str, loader: yaml.SafeLoader):
        self.path = path
        self.loader = loader
        self.count = 0

    def fail(self, node, message: str):
        raise CompileError([Diagnostic("error", _loc(self.path, node.start_mark), message)])

    def build(self, node, depth: int = 0) -> LNode:
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(node, f"spec expands to more than {MAX_NODES} values (an alias bomb?); refusing to load it")
        if depth > MAX_DEPTH:
            self.fail(node, f"spec nests more than {MAX_DEPTH} levels deep; refusing to load it")
        loc = _loc(self.path, node.start_mark)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTION_TAGS:
            self.fail(node, f"unsupported YAML tag {node.tag!r}")
        if isinstance(node, yaml.MappingNode):
            items: dict[str, LNode] = {}
            key_locs: dict[str, Loc] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    self.fail(knode, "mapping keys must be plain names")
                key = knode.value
                if knode.tag == "tag:yaml.org,2002:merge":
                    self.fail(knode, "YAML merge keys ('<<') are not supported in specs")
                if key in items:
                    self.fail(knode, f'duplicate key "{key}" (first written at line {key_locs[key].line})')
                key_locs[key] = _loc(self.path, knode.start_mark)
                items[key] = self.build(vnode, depth + 1)
            return LNode(items, loc, key_locs)
        if isinstance(node, yaml.SequenceNode):
            return LNode([self.build(v, depth + 1) for v in node.value], loc)
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SAFE_TAGS:
                self.fail(node, f"unsupported YAML tag {node.tag!r}")
            try:
                value = self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                self.fail(node, f"bad scalar: {exc}")
            if not isinstance(value, (str, int, float, bool, type(None))):
                value = str(node.value)  # timestamps, binary: keep the text as written
            return LNode(value, loc, quoted=node.style in ("'", '"'))
        self.fail(node, "unsupported YAML node")


_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}

_SAFE_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


def _check_flow_depth(text: str, path: str) -> None:
    """Reject deeply nested `[`/`{` before PyYAML sees them: its scanner looks ahead
    over every open flow collection (quadratic) and its composer recurses (stack).
    A rough lexer (quotes and comments skipped) is enough for a guard."""
    depth = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        quote = None
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
                break
            elif ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    message = f"spec nests more than {MAX_DEPTH} levels deep; refusing to load it"
                    raise CompileError([Diagnostic("error", Loc(path, lineno, i + 1), message)])
            elif ch in "]}":
                depth = max(depth - 1, 0)


def _reader_loc(text: str, path: str, exc) -> Loc:
    pos = getattr(exc, "position", None)
    if not isinstance(pos, int):
        return Loc(path, 1, 1)
    before = text[:pos]
    return Loc(path, before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1)


def _reader_problem(exc) -> str:
    char = getattr(exc, "character", None)
    if isinstance(char, int):
        return f"character U+{char:04X} is not allowed in YAML text"
    return str(exc).splitlines()[0]


def parse_yaml(text: str, path: str) -> LNode:
    """Parse one YAML document into a located tree, or raise CompileError."""
    _check_flow_depth(text, path)
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects control characters up front
    except yaml.YAMLError as exc:
        raise CompileError([Diagnostic("error", _reader_loc(text, path, exc), f"malformed YAML: {_reader_problem(exc)}")]) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            loc = _loc(path, mark) if mark is not None else Loc(path, 1, 1)
            problem = exc.problem or "malformed YAML"
            if exc.context:
                problem = f"{exc.context}, {problem}"
            raise CompileError([Diagnostic("error", loc, f"malformed YAML: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise CompileError([Diagnostic("error", Loc(path, 1, 1), f"malformed YAML: {exc}")]) from None
        except RecursionError:
            # PyYAML composes recursively: thousands of nested brackets exhaust the stack
            loc = _loc(path, loader.get_mark())
            raise CompileError(
                [Diagnostic("error", loc, f"spec nests more than {MAX_DEPTH} levels deep; refusing to load it")]
            ) from None
        if node is None:
            raise CompileError([Diagnostic("error", Loc(path, 1, 1), "the spec is empty")])
        return _Builder(path, loader).build(node)
    finally:
        loader.dispose()
