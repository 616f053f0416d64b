"""Printing specs: the canonical `.mg` layout, and YAML from any located tree.

One printer (`_Printer`) turns the DSL's concrete syntax (`dsl.Doc`) into text. The
formatter parses a file and prints it back (comments, blank lines and imports
kept); the converter builds a `Doc` from a located tree and prints it with the same
printer, which is why a converted file is already in canonical format.

Choosing how to spell a scalar is the one place this module consults the schema:
conversion must give the same *spec*, and whether `"512"` is text or a number
matters for some fields (an integer field refuses quoted text) and not for others
(a context window reads both), so the converter writes each value in the plainest
form that the spec builder reads the same way.
"""

from __future__ import annotations

import math
import re

import yaml

from metagen.diagnostics import CompileError, Diagnostic, DiagnosticSink
from metagen.frontend import schema as S
from metagen.frontend.dsl import (
    Block,
    Closer,
    Doc,
    Entry,
    Header,
    Item,
    ListV,
    Model,
    Scalar,
    Trivia,
    is_bare_key,
    is_bare_text,
    is_number_literal,
    parse_cst,
    quote,
)
from metagen.frontend.tree import LNode
from metagen.frontend.yaml_frontend import resolves_to_text

INDENT = "  "
WIDTH = 88  # an inline list or one-entry block longer than this is broken over lines
MAX_DEPTH = 64

# ---------------------------------------------------------------------------
# The printer


class _Printer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def prefix(self, trivia: Trivia, depth: int, first: bool) -> None:
        """Leading comments and the blank line before a statement, item or '}'."""
        for i, c in enumerate(trivia.leading):
            if c.blank_before and not (first and i == 0):
                self.blank()
            self.lines.append(INDENT * depth + c.text)
        if trivia.blank_before and not (first and not trivia.leading):
            self.blank()

    @staticmethod
    def trailing(trivia: Trivia) -> str:
        return f"  {trivia.trailing}" if trivia.trailing else ""

    # -- inline forms ------------------------------------------------------

    def inline(self, value, column: int) -> str | None:
        """`value` on one line starting at `column`, or None when it must be broken."""
        if isinstance(value, Scalar):
            return value.spelling
        if isinstance(value, ListV):
            if not value.close.trivia.empty:
                return None
            parts = []
            for item in value.items:
                if not item.trivia.empty or isinstance(item.value, Block):
                    return None
                part = self.inline(item.value, column)
                if part is None:
                    return None
                parts.append(part)
            text = "[" + ", ".join(parts) + "]"
        else:
            if not value.close.trivia.empty:
                return None
            if not value.entries:
                return "{}"
            if len(value.entries) != 1:
                return None
            entry = value.entries[0]
            if not entry.trivia.empty or isinstance(entry.value, Block):
                return None
            key = key_spelling(entry.key)
            inner = self.inline(entry.value, column + 3 + len(key))
            if inner is None:
                return None
            text = "{ " + key + " " + inner + " }"
        return text if column + len(text) <= WIDTH else None

    # -- statements ----------------------------------------------------------

    def entries(self, entries: list[Entry], depth: int) -> None:
        for i, e in enumerate(entries):
            self.prefix(e.trivia, depth, first=i == 0)
            head = INDENT * depth + key_spelling(e.key) + " "
            self.value(head, e.value, e.trivia, depth, suffix="")

    def value(self, head: str, value, trivia: Trivia, depth: int, suffix: str) -> None:
        """`head` followed by `value`, broken over lines when it does not fit."""
        text = self.inline(value, len(head))
        if text is not None:
            self.lines.append(head + text + suffix + self.trailing(trivia))
            return
        if isinstance(value, Block):
            self.lines.append(head + "{" + self.trailing(trivia))
            self.entries(value.entries, depth + 1)
            self.closer(value.close, "}", depth, suffix)
        else:
            self.lines.append(head + "[" + self.trailing(trivia))
            for i, item in enumerate(value.items):
                self.prefix(item.trivia, depth + 1, first=i == 0)
                self.value(INDENT * (depth + 1), item.value, item.trivia, depth + 1, suffix=",")
            self.closer(value.close, "]", depth, suffix)

    def closer(self, close: Closer, bracket: str, depth: int, suffix: str) -> None:
        for c in close.trivia.leading:
            if c.blank_before:
                self.blank()
            self.lines.append(INDENT * (depth + 1) + c.text)
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.lines.append(INDENT * depth + bracket + suffix + self.trailing(close.trivia))

    def doc(self, doc: Doc) -> str:
        prev_kind = None
        for i, stmt in enumerate(doc.stmts):
            kind = type(stmt)
            if i > 0 and (kind is not prev_kind or kind is Model):
                self.blank()
            self.prefix(stmt.trivia, 0, first=i == 0)
            if isinstance(stmt, Header):
                self.lines.append("metagen " + stmt.version.spelling + self.trailing(stmt.trivia))
            elif isinstance(stmt, Model):
                head = "model " + (stmt.name.spelling + " " if stmt.name is not None else "")
                block = stmt.block
                if not block.entries and block.close.trivia.empty:
                    self.lines.append(head + "{}" + self.trailing(stmt.trivia))
                else:
                    self.lines.append(head + "{" + self.trailing(stmt.trivia))
                    self.entries(block.entries, 1)
                    self.closer(block.close, "}", 0, "")
            else:
                self.lines.append("import " + quote(stmt.target) + self.trailing(stmt.trivia))
            prev_kind = kind
        for j, c in enumerate(doc.end.trivia.leading):
            if c.blank_before and (doc.stmts or j > 0):
                self.blank()
            self.lines.append(c.text)
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines) + "\n" if self.lines else ""


def key_spelling(key: str) -> str:
    return key if is_bare_key(key) else quote(key)


def print_doc(doc: Doc) -> str:
    return _Printer().doc(doc)


def format_mg(text: str, path: str, sink: DiagnosticSink) -> str:
    """The canonical layout of a `.mg` file: same statements, comments and imports.

    Only layout changes (indentation, one entry per line, spacing, string escapes,
    separators); every value keeps its spelling, so the spec it means is unchanged.
    Imports are not followed. Raises CompileError for a file that does not parse.
    """
    sink.add_source(path, text[1:] if text.startswith("\ufeff") else text)
    return print_doc(parse_cst(text, path))


# ---------------------------------------------------------------------------
# Located tree -> DSL

_FREE_TEXT = {("name",), ("description",)}
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_UNIT_KINDS = (S.PARAMS, S.BYTES, S.CONTEXT, S.LATENCY, S.RATE, S.DURATION, S.HARDWARE, S.DATA_SIZE)


def _child_field(parent: S.Field | None, key: str) -> S.Field | None:
    if parent is None or parent.kind != S.MAP:
        return None
    return parent.member(key)


def _scalar_field(f: S.Field | None) -> S.Field | None:
    """The field a scalar fills: a list field given one value means its item."""
    while f is not None and f.kind == S.LIST:
        f = f.item
    return f


def _float_text(x: float) -> str:
    """A DSL float literal: `repr` with a short exponent (1e-5, not 1e-05)."""
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def mg_scalar(node: LNode, f: S.Field | None, path: tuple[str, ...]) -> str:
    """The DSL spelling of one scalar: the plainest that builds the same spec."""
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float_text(v)
    text = str(v)
    kind = f.kind if f is not None else None
    if path in _FREE_TEXT:
        return quote(text)
    if kind in (S.INT, S.FLOAT):
        # Quoted text stays quoted: the builder refuses it where unquoted text is
        # read as a number, and either way the spec must come out the same.
        if node.quoted:
            return quote(text)
        if is_number_literal(text):  # text YAML did not read as a number ("1e3"); the builder does
            return str(int(text)) if re.fullmatch(r"[+-]?[0-9]+", text) else _float_text(float(text))
        return text if is_bare_text(text) else quote(text)  # text stays text ("１２" is no number)
    if kind == S.STR:
        return text if _WORD_RE.fullmatch(text) and is_bare_text(text) else quote(text)
    if kind in (S.PARAMS, S.CONTEXT) and re.fullmatch(r"[0-9]+", text):
        return text  # "1024" and 1024 are the same count
    if kind == S.ENUM or kind in _UNIT_KINDS:
        return text if is_bare_text(text) else quote(text)
    return quote(text) if node.quoted or not is_bare_text(text) else text


def _fail(node: LNode, message: str) -> CompileError:
    return CompileError([Diagnostic("error", node.loc, message)])


def _scalar(node: LNode, f: S.Field | None, path: tuple[str, ...]) -> Scalar:
    return Scalar(node.value, node.quoted, mg_scalar(node, _scalar_field(f), path), node.loc)


def _value(node: LNode, f: S.Field | None, path: tuple[str, ...], depth: int):
    if depth > MAX_DEPTH:
        raise _fail(node, f"the spec nests deeper than {MAX_DEPTH} levels")
    if node.is_map:
        entries = [
            Entry(k, _value(v, _child_field(f, k), path + (k,), depth + 1), node.key_locs.get(k, v.loc))
            for k, v in node.value.items()
        ]
        return Block(entries, node.loc, Closer(node.loc))
    if node.is_list:
        item_field = f.item if f is not None and f.kind == S.LIST else None
        items = [Item(_value(v, item_field, path + ("[]",), depth + 1), v.loc) for v in node.value]
        return ListV(items, node.loc, Closer(node.loc))
    return _scalar(node, f, path)


def tree_to_doc(tree: LNode, path: str = "<converted>") -> Doc:
    """The DSL statements that say what `tree` says."""
    if not tree.is_map:
        raise _fail(tree, "only a mapping of sections can be written as a .mg spec")
    rest = dict(tree.value)
    stmts = []
    version = rest.get("metagen_version")
    if (
        version is not None
        and not version.is_map
        and not version.is_list
        and version.value is not None
        and not isinstance(version.value, bool)
    ):
        del rest["metagen_version"]
        text = str(version.value)  # what the builder makes of a number in a text field
        spelling = text if (is_bare_text(text) or is_bare_key(text)) else quote(text)  # header words are text
        stmts.append(Header(Scalar(text, False, spelling, version.loc), tree.loc))
    name = rest.get("name")
    name_scalar = None
    if name is not None and isinstance(name.value, (str, int, float)) and not isinstance(name.value, bool):
        del rest["name"]
        text = str(name.value)
        name_scalar = Scalar(text, True, quote(text), name.loc)
    body = LNode(rest, tree.loc, tree.key_locs)
    block = _value(body, S.SPEC, (), 0)
    stmts.append(Model(name_scalar, block, tree.loc))
    return Doc(path, stmts, Closer(tree.loc))


def tree_to_mg(tree: LNode) -> str:
    """Canonical DSL text for a located tree (e.g. one read from YAML)."""
    return print_doc(tree_to_doc(tree))


# ---------------------------------------------------------------------------
# Located tree -> YAML

_YAML11 = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
_YAML_PLAIN_RE = re.compile(r"[A-Za-z0-9_./+\-][A-Za-z0-9_./+\- ]*")


def _yaml_plain_ok(text: str) -> bool:
    if not _YAML_PLAIN_RE.fullmatch(text) or text != text.strip():
        return False
    if text.startswith("-") and (len(text) == 1 or text[1] == " "):
        return False
    # plain only where MetaGen's reader and a YAML 1.1 reader (PyYAML's safe_load: "010"
    # is 8 there, "2001-02-03" a date) both read text
    return resolves_to_text(text) and _YAML11.resolve(yaml.ScalarNode, text, (True, False)) == _STR_TAG


def yaml_quote(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable() and (
            0x20 <= code < 0x7F or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code >= 0x10000
        ):
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _yaml_float(x: float) -> str:
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    text = repr(x)
    if "e" in text:
        mantissa, exponent = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[0] not in "+-":
            exponent = "+" + exponent
        text = f"{mantissa}e{exponent}"
    return text


def yaml_scalar(node: LNode, f: S.Field | None) -> str:
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _yaml_float(v)
    text = str(v)
    kind = f.kind if f is not None else None
    if kind in (S.INT, S.FLOAT) and not node.quoted:
        return text if _yaml_plain_ok(text) else yaml_quote(text)
    if node.quoted or not _yaml_plain_ok(text):
        return yaml_quote(text)
    return text


def _yaml_key(key: str) -> str:
    return key if _yaml_plain_ok(key) and not key.startswith(("-", ".")) else yaml_quote(key)


def _yaml_flat(node: LNode) -> bool:
    return node.is_list and all(not (v.is_map or v.is_list) for v in node.value)


def _yaml_lines(node: LNode, f: S.Field | None, indent: int, depth: int) -> list[str]:
    """Block-style lines of a map or list at `indent` spaces."""
    if depth > MAX_DEPTH:
        raise _fail(node, f"the spec nests deeper than {MAX_DEPTH} levels")
    pad = " " * indent
    lines: list[str] = []
    if node.is_map:
        for k, v in node.value.items():
            cf = _child_field(f, k)
            head = pad + _yaml_key(k) + ":"
            if (v.is_map and v.value) or (v.is_list and v.value and not _yaml_flat(v)):
                lines.append(head)
                lines.extend(_yaml_lines(v, cf, indent + 2, depth + 1))
            else:
                lines.append(head + " " + _yaml_inline(v, cf))
        return lines
    item_field = f.item if f is not None and f.kind == S.LIST else None
    for v in node.value:
        if (v.is_map and v.value) or (v.is_list and v.value and not _yaml_flat(v)):
            sub = _yaml_lines(v, item_field, indent + 2, depth + 1)
            lines.append(pad + "- " + sub[0][indent + 2 :])
            lines.extend(sub[1:])
        else:
            lines.append(pad + "- " + _yaml_inline(v, item_field))
    return lines


def _yaml_inline(node: LNode, f: S.Field | None) -> str:
    if node.is_map:
        return "{}"  # only empty maps are written inline
    if node.is_list:
        item_field = f.item if f is not None and f.kind == S.LIST else None
        return "[" + ", ".join(_yaml_inline(v, item_field) for v in node.value) + "]"
    return yaml_scalar(node, _scalar_field(f))


def tree_to_yaml(tree: LNode) -> str:
    """YAML text for a located tree: keys in written order, text quoted where needed."""
    if tree.is_map and tree.value:
        return "\n".join(_yaml_lines(tree, S.SPEC, 0, 0)) + "\n"
    if tree.is_list and tree.value:
        return "\n".join(_yaml_lines(tree, None, 0, 0)) + "\n"
    return _yaml_inline(tree, S.SPEC if tree.is_map else None) + "\n"
