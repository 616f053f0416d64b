"""YAML (and JSON) text -> located tree, with positions for every key and value.

Only PyYAML's composer is used; scalars are resolved and constructed here, by the
spec language's own grammar (`units.read_numeral`: decimal ASCII numbers only, the
same as `.mg` and `-D`; no YAML 1.1 octal `010`, sexagesimal `1:30` or implicit
timestamps), so no tag can construct a Python object and no scalar can raise
anything but a located diagnostic. Aliases are expanded under budgets of values and
bytes, which turns an alias bomb into a prompt diagnostic instead of an exponential
walk or a gigabyte string.
"""

from __future__ import annotations

import re

import yaml

from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.frontend import units
from metagen.frontend.tree import MAX_DEPTH, MAX_SPEC_BYTES, MAX_VALUES, LNode


class SpecLoader(yaml.SafeLoader):
    """SafeLoader with the spec language's implicit scalar types."""

    yaml_implicit_resolvers: dict = {}


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_BOOL_TAG, _NULL_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
_STR_TAG, _TIMESTAMP_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:timestamp"
_BOOLS = {w: True for w in ("true", "yes", "on")} | {w: False for w in ("false", "no", "off")}
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$")
_NULLS = ("~", "null", "Null", "NULL", "")
_INF_NAN_RE = re.compile(r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
# The resolver's patterns; `units.read_numeral` is what decides (leading zeros are text)
SpecLoader.add_implicit_resolver(_BOOL_TAG, _BOOL_RE, list("yYnNtTfFoO"))
SpecLoader.add_implicit_resolver(_NULL_TAG, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
SpecLoader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
SpecLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(r"^[-+]?(?:(?:(?:0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)
SpecLoader.add_implicit_resolver(_FLOAT_TAG, _INF_NAN_RE, list("-+."))
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def resolves_to_text(text: str) -> bool:
    """Whether `text`, written plain (unquoted) in YAML, reads back as this text."""
    return SpecLoader.resolve(SpecLoader, yaml.ScalarNode, text, (True, False)) == _STR_TAG


def _loc(path: str, mark) -> Loc:
    return Loc(path, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, path: str, fixed_loc: Loc | None = None):
        self.path = path
        self.fixed_loc = fixed_loc  # `-D` values: every node is at the option
        self.count = 0
        self.chars = 0

    def loc(self, node) -> Loc:
        return self.fixed_loc or _loc(self.path, node.start_mark)

    def fail(self, node, message: str):
        raise CompileError([Diagnostic("error", self.loc(node), message)])

    def text(self, node) -> str:
        """A key's or string's text, counted against the byte budget."""
        value = node.value
        self.chars += len(value)
        if self.chars > MAX_SPEC_BYTES:
            self.fail(node, "spec expands to more than 4 MiB of text (aliases of long strings?); refusing to load it")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # "\ud800": an escape that names half a character
            self.fail(node, f"string holds a lone surrogate (U+{ord(value[exc.start]):04X}), which is not a character")
        return value

    def build(self, node, depth: int = 0) -> LNode:
        self.count += 1
        if self.count > MAX_VALUES:
            self.fail(node, f"spec expands to more than {MAX_VALUES} values (an alias bomb?); refusing to load it")
        if depth > MAX_DEPTH:
            self.fail(node, f"spec nests more than {MAX_DEPTH} levels deep; refusing to load it")
        loc = self.loc(node)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _COLLECTION_TAGS:
            self.fail(node, f"unsupported YAML tag {node.tag!r}")
        if isinstance(node, yaml.MappingNode):
            items: dict[str, LNode] = {}
            key_locs: dict[str, Loc] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    self.fail(knode, "mapping keys must be plain names")
                key = self.text(knode)
                if knode.tag == "tag:yaml.org,2002:merge":
                    self.fail(knode, "YAML merge keys ('<<') are not supported in specs")
                if key in items:
                    self.fail(knode, f'duplicate key "{key}" (first written at line {key_locs[key].line})')
                key_locs[key] = self.loc(knode)
                items[key] = self.build(vnode, depth + 1)
            return LNode(items, loc, key_locs)
        if isinstance(node, yaml.SequenceNode):
            return LNode([self.build(v, depth + 1) for v in node.value], loc)
        if isinstance(node, yaml.ScalarNode):
            return LNode(self.scalar(node), loc, quoted=node.style in ("'", '"'))
        self.fail(node, "unsupported YAML node")

    def scalar(self, node):
        """The value of a scalar node: the one place YAML text becomes a value."""
        tag, text = node.tag, self.text(node)
        if tag == _STR_TAG:
            return text
        if tag == _TIMESTAMP_TAG:  # only with an explicit `!!timestamp`; kept as written
            if not _is_timestamp(text):
                self.fail(node, f"bad scalar: {_shown(text)} is not a timestamp (write e.g. 2001-12-14 or 2001-12-14T21:59:43Z)")
            return text
        if tag == _BOOL_TAG:
            if text.lower() not in _BOOLS:
                self.fail(node, f"bad scalar: {_shown(text)} is not a boolean (write true or false)")
            return _BOOLS[text.lower()]
        if tag == _NULL_TAG:
            if text not in _NULLS:
                self.fail(node, f"bad scalar: {_shown(text)} is not null")
            return None
        if tag in (_INT_TAG, _FLOAT_TAG):
            if tag == _FLOAT_TAG and _INF_NAN_RE.match(text):
                return float(text.replace(".", "", 1))
            try:
                value = units.read_numeral(text)
            except units.UnitError as exc:
                self.fail(node, str(exc))
            if value is None or (tag == _INT_TAG and not isinstance(value, int)):
                what = "an integer" if tag == _INT_TAG else "a number"
                self.fail(node, f"bad scalar: {_shown(text)} is not {what} (write decimal digits){units.leading_zero_hint(text)}")
            return float(value) if tag == _FLOAT_TAG else value
        self.fail(node, f"unsupported YAML tag {tag!r}")


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _is_timestamp(text: str) -> bool:
    if not yaml.constructor.SafeConstructor.timestamp_regexp.match(text):
        return False
    node = yaml.ScalarNode(_TIMESTAMP_TAG, text)
    try:
        yaml.constructor.SafeConstructor().construct_yaml_timestamp(node)
    except (ValueError, OverflowError):  # 2001-02-30, an offset of 25 hours
        return False
    return True


_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


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
    return _offset_loc(text, path, pos) if isinstance(pos, int) else Loc(path, 1, 1)


def _offset_loc(text: str, path: str, pos: int) -> Loc:
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
        loader = SpecLoader(text)  # the reader rejects control characters up front
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
        except (ValueError, OverflowError):  # the scanner's chr() on "\U00110000"
            at = text.rfind("\\", 0, loader.get_mark().index + 1)  # the escape's backslash
            loc = _offset_loc(text, path, at) if at >= 0 else _loc(path, loader.get_mark())
            raise CompileError([Diagnostic("error", loc, "malformed YAML: an escape names no character (the largest is \\U0010FFFF)")]) from None
        except RecursionError:
            # PyYAML composes recursively: thousands of nested brackets exhaust the stack
            loc = _loc(path, loader.get_mark())
            raise CompileError(
                [Diagnostic("error", loc, f"spec nests more than {MAX_DEPTH} levels deep; refusing to load it")]
            ) from None
        if node is None:
            raise CompileError([Diagnostic("error", Loc(path, 1, 1), "the spec is empty")])
        return _Builder(path).build(node)
    finally:
        loader.dispose()


def parse_override(text: str, loc: Loc) -> LNode | None:
    """The value of `-D key=TEXT`, read by the same rules as a scalar in a spec file
    (so `-D description=2001-02-03` is text, and `-D layers=1:30` is not 90). None
    when TEXT is not well-formed YAML (it is then taken as plain text); a value
    that is well-formed but wrong (`!!int abc`, a 400-digit number) raises
    CompileError at `loc`."""
    try:
        _check_flow_depth(text, loc.path)
        loader = SpecLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except CompileError:
        raise CompileError([Diagnostic("error", loc, f"spec nests more than {MAX_DEPTH} levels deep; refusing to load it")]) from None
    except (ValueError, OverflowError):  # chr() on "\U00110000": well-formed, names no character
        raise CompileError([Diagnostic("error", loc, "an escape names no character (the largest is \\U0010FFFF)")]) from None
    except (yaml.YAMLError, RecursionError):
        return None
    if node is None:
        return LNode("", loc, quoted=True)
    return _Builder(loc.path, fixed_loc=loc).build(node)
