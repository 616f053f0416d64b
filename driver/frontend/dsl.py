"""The `.mg` DSL: text -> concrete syntax (kept for the formatter) -> located tree.

The grammar lives in `grammar/metagen.lark` and is parsed by Lark (LALR, contextual
lexer, positions on every node). This module adds what a grammar cannot say well:

- a postlexer that makes new lines and ';' statement separators (and list
  separators inside `[...]`), and reports unbalanced brackets where they are;
- syntax errors in words ("expected a value after 'latency'"), never Lark's
  terminal names, at the line and column of the offending token;
- the concrete syntax tree (`Doc`) with comments and blank lines attached to the
  statements they belong to, which `dsl_format` prints back canonically;
- `import "base.mg"`: the imported spec is deep-merged under the importing one
  (blocks merge key by key; scalars and lists replace; `null` clears).

The result is the same located tree (`LNode`) the YAML frontend makes, so the spec
builder gives both syntaxes one meaning.
"""

from __future__ import annotations

import bisect
import os
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple, Union

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from metagen.diagnostics import CompileError, Diagnostic, DiagnosticSink, Loc
from metagen.frontend import units
from metagen.frontend.tree import MAX_DEPTH, MAX_IMPORT_DEPTH, MAX_SPEC_BYTES, MAX_VALUES, LNode

# ---------------------------------------------------------------------------
# Scalars

_ATOM_RE = re.compile(r"""[^\s{}\[\],;#"'=:]+""")
_QUANTITY_RE = re.compile(r"""[+-]?\.?[0-9][^\s{}\[\],;#"'=:]*[ \t]+[^\W\d_][^\s{}\[\],;#"'=:]*""")
_WORDS = {"true": True, "false": False, "null": None}


def classify_atom(text: str) -> Any:
    """The value of a bare word: integer, float, true/false, null, or the text itself.
    Numbers follow the grammar every frontend shares (`units.read_numeral`: "010"
    is text); a numeral of more than 100 digits raises `units.UnitError`."""
    if text in _WORDS:
        return _WORDS[text]
    number = units.read_numeral(text)
    return text if number is None else number


def is_bare_text(text: str) -> bool:
    """Whether `text` can be written without quotes and still read back as this text."""
    if _ATOM_RE.fullmatch(text):
        return text not in _WORDS and not units.is_numeral(text)
    return bool(_QUANTITY_RE.fullmatch(text)) and "\t" not in text and "  " not in text


def is_number_literal(text: str) -> bool:
    """Whether a bare `text` reads as a number (with the value `float(text)` gives)."""
    try:
        return units.read_numeral(text) is not None
    except units.UnitError:
        return False


def is_bare_key(text: str) -> bool:
    return bool(_ATOM_RE.fullmatch(text))


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0", "/": "/"}
_ESCAPE_OUT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quote(text: str) -> str:
    """`text` as a double-quoted DSL string; only what must be escaped is."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPE_OUT:
            out.append(_ESCAPE_OUT[ch])
        elif not ch.isprintable():
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _decode_string(tok: Token, path: str, errors: list[Diagnostic]) -> str:
    body = tok.value[1:-1]
    out: list[str] = []
    i = 0

    def bad(offset: int, message: str) -> None:
        errors.append(Diagnostic("error", Loc(path, tok.line, tok.column + 1 + offset), message))

    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]  # the grammar guarantees a character after a backslash
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
            continue
        if esc in "uU":
            width = 4 if esc == "u" else 8
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                bad(i, f"'\\{esc}' must be followed by {width} hex digits")
                i += 2
                continue
            code = int(digits, 16)
            i += 2 + width
            if 0xD800 <= code <= 0xDBFF and body[i : i + 2] == "\\u":
                low = body[i + 2 : i + 6]
                if (
                    len(low) == 4
                    and all(c in "0123456789abcdefABCDEF" for c in low)
                    and 0xDC00 <= int(low, 16) <= 0xDFFF
                ):
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                    i += 6
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                bad(i - 2 - width, f"'\\{esc}{digits}' is not a character")
                continue
            out.append(chr(code))
            continue
        bad(i, f"unknown escape '\\{esc}' in a string; write a backslash as '\\\\'")
        i += 2
    return "".join(out)


# ---------------------------------------------------------------------------
# Concrete syntax: what the formatter needs to print a file back


@dataclass
class Comment:
    text: str
    blank_before: bool = False


@dataclass
class Trivia:
    """Comments and spacing that belong to one statement, item or closing bracket."""

    leading: list[Comment] = field(default_factory=list)
    trailing: str | None = None
    blank_before: bool = False

    @property
    def empty(self) -> bool:
        return not self.leading and self.trailing is None


@dataclass
class Scalar:
    value: Any
    quoted: bool
    spelling: str  # canonical source text
    loc: Loc


@dataclass
class Closer:
    loc: Loc
    trivia: Trivia = field(default_factory=Trivia)


@dataclass
class Item:
    value: "Value"
    loc: Loc
    trivia: Trivia = field(default_factory=Trivia)


@dataclass
class ListV:
    items: list[Item]
    loc: Loc
    close: Closer


@dataclass
class Entry:
    key: str
    value: "Value"
    loc: Loc  # of the key
    trivia: Trivia = field(default_factory=Trivia)


@dataclass
class Block:
    entries: list[Entry]
    loc: Loc
    close: Closer


Value = Union[Scalar, ListV, Block]


@dataclass
class Header:
    version: Scalar
    loc: Loc
    trivia: Trivia = field(default_factory=Trivia)


@dataclass
class Import:
    target: str
    target_loc: Loc
    loc: Loc
    trivia: Trivia = field(default_factory=Trivia)


@dataclass
class Model:
    name: Scalar | None
    block: Block
    loc: Loc
    trivia: Trivia = field(default_factory=Trivia)


Stmt = Union[Header, Import, Model]


@dataclass
class Doc:
    path: str
    stmts: list[Stmt]
    end: Closer  # comments after the last statement

    @property
    def header(self) -> Header | None:
        return next((s for s in self.stmts if isinstance(s, Header)), None)

    @property
    def imports(self) -> list[Import]:
        return [s for s in self.stmts if isinstance(s, Import)]

    @property
    def model(self) -> Model | None:
        return next((s for s in self.stmts if isinstance(s, Model)), None)


# ---------------------------------------------------------------------------
# Lexing and parsing


class DslSyntaxError(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__(diagnostics[0].message)
        self.diagnostics = diagnostics


_CLOSER_OF = {"LBRACE": "}", "LSQB": "]"}
_VALUE_TOKENS = frozenset({"ATOM", "STRING", "QUANTITY", "LBRACE", "LSQB"})
_OPENING_FOR = {"RBRACE": "LBRACE", "RSQB": "LSQB"}


class _PostLexer:
    """Statement and list separators from new lines; bracket balance with positions."""

    always_accept = ("NL", "SEMI", "COMMA")  # a "," after a new line in a list is absorbed here

    def __init__(self) -> None:
        self.path = "<input>"
        self.text = ""
        self.history: list[Token] = []  # the last tokens handed to the parser
        self.stack: list[Token] = []  # open brackets

    @property
    def prev(self) -> Token | None:
        return self.history[-1] if self.history else None

    def _emit(self, tok: Token) -> Token:
        self.history = self.history[-2:] + [tok]
        return tok

    def _indent_of(self, line: int) -> int:
        src = self._lines[line - 1] if 0 < line <= len(self._lines) else ""
        return len(src) - len(src.lstrip(" \t"))

    def _first_on_line(self, tok: Token) -> bool:
        src = self._lines[tok.line - 1] if 0 < tok.line <= len(self._lines) else ""
        return src[: tok.column - 1].strip() == ""

    def process(self, stream):
        self._lines = self.text.split("\n")
        self.stack = stack = []
        suspicious: list[tuple[Token, Token]] = []  # pairs closed at a different indentation
        self.history = []
        values = 0
        for tok in stream:
            kind = tok.type
            is_key = (
                stack and stack[-1].type == "LBRACE" and self.prev is not None and self.prev.type in ("LBRACE", "_SEP")
            )
            if kind in _VALUE_TOKENS and not is_key:  # values as YAML counts them: keys are not values
                values += 1
                if values > MAX_VALUES:  # before Lark builds a tree of a million items
                    raise DslSyntaxError(
                        [self._diag(tok, f"spec holds more than {MAX_VALUES} values; refusing to load it")]
                    )
            top = stack[-1].type if stack else None
            if kind in ("NL", "SEMI"):
                if top == "LSQB":
                    if kind == "SEMI":
                        yield self._emit(tok)
                    elif self.prev is not None and self.prev.type not in ("LSQB", "COMMA"):
                        yield self._emit(Token.new_borrow_pos("COMMA", "\n", tok))
                    continue
                if self.prev is None or self.prev.type in ("LBRACE", "_SEP"):
                    continue
                yield self._emit(Token.new_borrow_pos("_SEP", tok.value, tok))
                continue
            if kind == "COMMA" and self.prev is not None and self.prev.type == "COMMA" and self.prev.value == "\n":
                self.history[-1] = tok  # `a` NEWLINE `, b`: the new line already separated them
                continue
            if kind in _CLOSER_OF:
                if len(stack) >= MAX_DEPTH:
                    raise DslSyntaxError([self._diag(tok, f"nesting deeper than {MAX_DEPTH} levels is not supported")])
                stack.append(tok)
            elif kind in _OPENING_FOR:
                if not stack:
                    raise DslSyntaxError([self._diag(tok, f"unmatched '{tok.value}': nothing is open here")])
                opener = stack.pop()
                if opener.type != _OPENING_FOR[kind]:
                    raise DslSyntaxError(
                        [
                            self._diag(
                                tok,
                                f"'{tok.value}' cannot close the '{opener.value}' opened at line {opener.line}, "
                                f"column {opener.column}; expected '{_CLOSER_OF[opener.type]}'",
                            )
                        ]
                    )
                if self._first_on_line(tok) and self._indent_of(opener.line) != tok.column - 1:
                    suspicious.append((opener, tok))
            yield self._emit(tok)
        if stack:
            opener = stack[-1]
            diags = [
                self._diag(
                    opener,
                    f"unclosed '{opener.value}': no matching '{_CLOSER_OF[opener.type]}' before the end of the file",
                )
            ]
            for inner, closer in suspicious[:1]:
                diags.append(
                    Diagnostic(
                        "note",
                        Loc(self.path, inner.line, inner.column),
                        f"this '{inner.value}' is closed by the '{closer.value}' at line {closer.line}, which is "
                        f"indented differently; is a '{_CLOSER_OF[inner.type]}' missing here?",
                    )
                )
            raise DslSyntaxError(diags)

    def _diag(self, tok: Token, message: str) -> Diagnostic:
        return Diagnostic("error", Loc(self.path, tok.line, tok.column), message)


_LOCK = threading.Lock()
_PARSER: Lark | None = None
_POSTLEX = _PostLexer()
_COMMENTS: list[Token] = []
_WANT_COMMENTS = [False]  # the compiler never looks at comments; only the formatter does


def _on_comment(tok: Token) -> Token:
    if _WANT_COMMENTS[0]:
        _COMMENTS.append(tok)
    return tok


class _LineComment(NamedTuple):
    """A comment taken out of an NL token: what `attach` reads of a COMMENT token."""

    value: str
    line: int
    column: int


def _on_newlines(tok: Token) -> Token:
    """Comment-only lines ride in the NL token (a million of them lex as one token);
    the formatter gets them back with their positions."""
    if _WANT_COMMENTS[0] and "#" in tok.value:
        for offset, piece in enumerate(tok.value.split("\n")[1:], 1):  # each piece follows a new line
            body = piece.lstrip(" \t")
            if body.startswith("#"):
                _COMMENTS.append(_LineComment(body, tok.line + offset, len(piece) - len(body) + 1))
    return tok


def grammar_text() -> str:
    return resources.files("metagen.grammar").joinpath("metagen.lark").read_text(encoding="utf-8")


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        _PARSER = Lark(
            grammar_text(),
            parser="lalr",
            lexer="contextual",
            postlex=_POSTLEX,
            propagate_positions=True,
            keep_all_tokens=True,
            maybe_placeholders=False,
            lexer_callbacks={"COMMENT": _on_comment, "NL": _on_newlines},
        )
    return _PARSER


def _parse_lark(text: str, path: str, comments: bool = True) -> tuple[Tree, list[Token]]:
    with _LOCK:
        parser = _parser()
        _POSTLEX.path, _POSTLEX.text = path, text
        _COMMENTS.clear()
        _WANT_COMMENTS[0] = comments
        try:
            tree = parser.parse(text)
        except DslSyntaxError as exc:
            raise CompileError(exc.diagnostics) from None
        except UnexpectedInput as exc:
            raise CompileError([_explain(exc, text, path, _POSTLEX)]) from None
        except LarkError as exc:  # pragma: no cover - Lark's other errors are grammar bugs
            raise CompileError([Diagnostic("error", Loc(path, 1, 1), f"cannot parse: {exc}")]) from None
        return tree, list(_COMMENTS)


# -- syntax errors in words --------------------------------------------------

_VALUE_START = {"ATOM", "STRING", "LSQB", "LBRACE"}


def _short(text: str, limit: int = 32) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _found(tok: Token) -> str:
    kind = tok.type
    if kind == "$END":
        return "the end of the file"
    if kind == "_SEP":
        return "';'" if tok.value == ";" else "a new line"
    if kind == "COMMA":
        return "a new line" if tok.value == "\n" else "','"
    if kind == "STRING":
        return f"the string {_short(tok.value)}"
    return f"'{_short(str(tok.value))}'"


def _join(words: list[str]) -> str:
    words = list(dict.fromkeys(words))
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " or " + words[-1]


def _after(prev: Token | None, path: str) -> Loc:
    if prev is None:
        return Loc(path, 1, 1)
    return Loc(path, prev.end_line or prev.line, prev.end_column or prev.column)


def _explain(exc: UnexpectedInput, text: str, path: str, post: "_PostLexer") -> Diagnostic:
    """One diagnostic, in words, for what Lark could not parse.

    LALR's expected sets are merged across contexts (a scalar may end a model name,
    a list item or an entry), so the bracket stack and the tokens just before say
    where we are; the expected set only says which kind of thing was awaited.
    """
    if isinstance(exc, UnexpectedCharacters):
        return Diagnostic("error", Loc(path, exc.line, exc.column), _bad_character(text, exc))
    if not isinstance(exc, UnexpectedToken):
        return Diagnostic("error", _after(post.prev, path), "unexpected end of the file")
    tok: Token = exc.token
    history = [t for t in post.history if t is not tok]
    prev = history[-1] if history else None
    prev2 = history[-2] if len(history) >= 2 else None
    expected = set(exc.expected) - {"NL", "SEMI", "COMMA"}
    context = post.stack[-1].type if post.stack else None
    found = _found(tok)
    here = Loc(path, tok.line, tok.column)
    after = _after(prev, path)
    at = after if tok.type in ("$END", "_SEP") or (tok.type == "COMMA" and tok.value == "\n") else here

    def err(loc: Loc, message: str) -> Diagnostic:
        return Diagnostic("error", loc, message)

    if tok.type in _OPENING_FOR and context != _OPENING_FOR[tok.type]:
        if context is None:
            return err(here, f"unmatched '{tok.value}': nothing is open here")
        opener = post.stack[-1]
        return err(
            here,
            f"'{tok.value}' cannot close the '{opener.value}' opened at line {opener.line}, column {opener.column}; "
            f"expected '{_CLOSER_OF[opener.type]}'",
        )
    if prev is not None and prev.type == "METAGEN":
        return err(at, f"expected the language version after 'metagen' (e.g. `metagen 1.0`), found {found}")
    if prev is not None and prev.type == "IMPORT":
        return err(
            at, f"expected a file name in double quotes after 'import' (e.g. `import \"base.mg\"`), found {found}"
        )
    if prev is not None and prev.type == "MODEL":
        return err(at, f"expected a model name or '{{' after 'model', found {found}")
    if context is None and prev2 is not None and prev2.type == "MODEL" and "LBRACE" in expected:
        return err(at, f"expected '{{' to open the model block, found {found} (it goes on the same line as 'model')")
    if _VALUE_START <= expected:
        if context == "LSQB" and "RSQB" in expected:
            return err(at, f"expected a list item or ']', found {found}")
        if prev is not None and prev.type in ("ATOM", "STRING"):
            hint = " (a value starts on the same line as its key)" if tok.type in ("_SEP", "$END") else ""
            loc = after if tok.type in ("_SEP", "$END", "RBRACE") else here
            return err(loc, f"expected a value after '{_short(str(prev.value))}', found {found}{hint}")
        return err(at, f"expected a value, found {found}")
    if expected & {"METAGEN", "IMPORT", "MODEL"} and context is None and (prev is None or prev.type == "_SEP"):
        hint = ""
        if tok.type in ("ATOM", "STRING", "QUANTITY"):
            hint = "; keys and values go inside the `model { ... }` block"
        return err(at, f"expected 'metagen', 'import' or 'model' at the top level, found {found}{hint}")
    if {"ATOM", "STRING", "RBRACE"} <= expected and context == "LBRACE":
        return err(at, f"expected a key or '}}', found {found}")
    if context == "LSQB":
        if tok.type == "SEMI":
            return err(at, "expected ',' or ']', found ';'; list items are separated by ',' or new lines")
        return err(at, f"expected ',' or ']' after the list item, found {found}")
    what = "a new line, ';' or '}'" if context == "LBRACE" else "a new line or ';'"
    if tok.type == "COMMA":
        return err(at, f"expected {what}, found ','; ',' separates list items only")
    if tok.type in ("$END", "_SEP"):
        return err(at, f"expected {what}, found {found}")
    return err(at, f"expected {what} before {found}; write one entry per line or separate entries with ';'")


def _bad_character(text: str, exc: UnexpectedCharacters) -> str:
    ch = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else ""
    if ch == '"':
        return "unclosed string: a string ends with '\"' on the same line (write a line break as \\n)"
    if ch == "'":
        return 'strings are written in double quotes ("..."), not single quotes'
    if ch in ":=":
        return f"unexpected '{ch}': a key and its value are written side by side, without '{ch}' (e.g. `latency real-time`)"
    if ch == "\r":
        return "stray carriage return (use \\n or \\r\\n line endings)"
    if ch and ch.isprintable():
        return f"unexpected character '{ch}'"
    return f"unexpected character U+{ord(ch):04X}" if ch else "unexpected input"


# -- parse tree -> concrete syntax ---------------------------------------------


class _CstBuilder:
    def __init__(self, text: str, path: str):
        self.path = path
        self.lines = text.split("\n")
        self.errors: list[Diagnostic] = []
        self.owners: list[tuple[tuple[int, int], Trivia]] = []

    def loc(self, line: int, col: int) -> Loc:
        return Loc(self.path, line, col)

    def tok_loc(self, tok: Token) -> Loc:
        return self.loc(tok.line, tok.column)

    def own(self, loc: Loc, trivia: Trivia) -> Trivia:
        self.owners.append(((loc.line, loc.col), trivia))
        first_on_line = self.lines[loc.line - 1][: loc.col - 1].strip() == ""
        trivia.blank_before = first_on_line and self.blank_before(loc.line)
        return trivia

    def blank_before(self, line: int) -> bool:
        return line >= 2 and self.lines[line - 2].strip() == ""

    def doc(self, tree: Tree, comments: list[Token]) -> Doc:
        stmts: list[Stmt] = []
        for child in tree.children:
            if isinstance(child, Tree):
                stmts.append(getattr(self, child.data)(child))
        self.check_order(stmts)
        end_line = len(self.lines)
        end = Closer(self.loc(end_line, len(self.lines[-1]) + 1))
        self.owners.append(((end_line + 1, 0), end.trivia))
        self.attach(comments)
        return Doc(self.path, stmts, end)

    def check_order(self, stmts: list[Stmt]) -> None:
        seen_model: Model | None = None
        seen_header: Header | None = None
        for i, s in enumerate(stmts):
            if isinstance(s, Header):
                if seen_header is not None:
                    self.errors.append(
                        Diagnostic(
                            "error", s.loc, f"a second 'metagen' line (the first is at line {seen_header.loc.line})"
                        )
                    )
                elif i > 0:
                    self.errors.append(Diagnostic("error", s.loc, "the 'metagen' line must come first in the file"))
                seen_header = seen_header or s
            elif isinstance(s, Import):
                if seen_model is not None:
                    self.errors.append(Diagnostic("error", s.loc, "imports must come before the model block"))
            elif isinstance(s, Model):
                if seen_model is not None:
                    self.errors.append(
                        Diagnostic(
                            "error",
                            s.loc,
                            f"a file holds one model block; the first starts at line {seen_model.loc.line}",
                        )
                    )
                seen_model = seen_model or s

    def header(self, t: Tree) -> Header:
        kw, scalar = t.children
        loc = self.tok_loc(kw)
        trivia = self.own(loc, Trivia())
        return Header(self.scalar(scalar, as_text=True), loc, trivia)

    def import_stmt(self, t: Tree) -> Import:
        kw, string = t.children
        loc = self.tok_loc(kw)
        trivia = self.own(loc, Trivia())
        return Import(_decode_string(string, self.path, self.errors), self.tok_loc(string), loc, trivia)

    def model(self, t: Tree) -> Model:
        kw = t.children[0]
        loc = self.tok_loc(kw)
        trivia = self.own(loc, Trivia())
        name = self.scalar(t.children[1], as_text=True) if len(t.children) == 3 else None
        return Model(name, self.block(t.children[-1]), loc, trivia)

    def value(self, t: Tree) -> Value:
        return getattr(self, t.data)(t)

    def scalar(self, t: Tree, as_text: bool = False) -> Scalar:
        tok: Token = t.children[0]
        loc = self.tok_loc(tok)
        if tok.type == "STRING":
            text = _decode_string(tok, self.path, self.errors)
            return Scalar(text, True, quote(text), loc)
        if tok.type == "QUANTITY":
            text = " ".join(tok.value.split())
            return Scalar(text, False, text, loc)
        value = tok.value
        if not as_text:
            try:
                value = classify_atom(tok.value)
            except units.UnitError as exc:
                self.errors.append(Diagnostic("error", loc, str(exc)))
        return Scalar(value, False, tok.value, loc)

    def block(self, t: Tree) -> Block:
        open_tok, close_tok = t.children[0], t.children[-1]
        entries = [self.entry(c) for c in t.children if isinstance(c, Tree)]
        close = Closer(self.tok_loc(close_tok))
        self.own(close.loc, close.trivia)
        return Block(entries, self.tok_loc(open_tok), close)

    def entry(self, t: Tree) -> Entry:
        key_tree, value_tree = t.children
        tok: Token = key_tree.children[0]
        loc = self.tok_loc(tok)
        trivia = self.own(loc, Trivia())
        key = _decode_string(tok, self.path, self.errors) if tok.type == "STRING" else tok.value
        return Entry(key, self.value(value_tree), loc, trivia)

    def list(self, t: Tree) -> ListV:
        open_tok, close_tok = t.children[0], t.children[-1]
        items = []
        for c in t.children:
            if isinstance(c, Tree):
                loc = self.loc(c.meta.line, c.meta.column)
                trivia = self.own(loc, Trivia())
                items.append(Item(self.value(c), loc, trivia))
        close = Closer(self.tok_loc(close_tok))
        self.own(close.loc, close.trivia)
        return ListV(items, self.tok_loc(open_tok), close)

    def attach(self, comments: list[Token]) -> None:
        """Give each comment to the statement it trails, or else to the next one."""
        owners = sorted(self.owners, key=lambda o: o[0])
        starts = [pos for pos, _ in owners]
        first_on_line: dict[int, Trivia] = {}
        for (line, _), trivia in owners:
            first_on_line.setdefault(line, trivia)
        for c in comments:
            text = c.value.rstrip()
            src = self.lines[c.line - 1]
            if src[: c.column - 1].strip() and c.line in first_on_line and first_on_line[c.line].trailing is None:
                first_on_line[c.line].trailing = text
                continue
            i = bisect.bisect_left(starts, (c.line, c.column))
            target = owners[min(i, len(owners) - 1)][1]
            target.leading.append(Comment(text, self.blank_before(c.line)))


def parse_cst(text: str, path: str, comments: bool = True) -> Doc:
    """The concrete syntax of one `.mg` file, comments included unless `comments` is
    false (the compiler's case); CompileError if malformed."""
    if text.startswith("\ufeff"):
        text = text[1:]
    tree, comments = _parse_lark(text, path, comments)
    builder = _CstBuilder(text, path)
    doc = builder.doc(tree, comments)
    if builder.errors:
        raise CompileError(builder.errors)
    return doc


# ---------------------------------------------------------------------------
# Concrete syntax -> located tree


def _to_node(value: Value, errors: list[Diagnostic]) -> LNode:
    if isinstance(value, Scalar):
        return LNode(value.value, value.loc, quoted=value.quoted)
    if isinstance(value, ListV):
        return LNode([_to_node(i.value, errors) for i in value.items], value.loc)
    return _block_node(value.entries, value.loc, errors)


def _block_node(
    entries: list[Entry], loc: Loc, errors: list[Diagnostic], start: list[tuple[str, LNode, Loc]] = ()
) -> LNode:
    items: dict[str, LNode] = {}
    key_locs: dict[str, Loc] = {}
    for key, node, kloc in start:
        items[key], key_locs[key] = node, kloc
    for e in entries:
        if e.key in items:
            first = key_locs[e.key]
            where = f"line {first.line}" if first.path == e.loc.path else str(first)
            errors.append(Diagnostic("error", e.loc, f'duplicate key "{e.key}" (first written at {where})'))
            continue
        items[e.key] = _to_node(e.value, errors)
        key_locs[e.key] = e.loc
    return LNode(items, loc, key_locs)


def doc_to_tree(doc: Doc) -> LNode:
    """The located tree of one file's own statements (imports not applied)."""
    errors: list[Diagnostic] = []
    start: list[tuple[str, LNode, Loc]] = []
    header, model = doc.header, doc.model
    if header is not None:
        v = header.version
        start.append(("metagen_version", LNode(v.value, v.loc, quoted=v.quoted), header.loc))
    if model is not None and model.name is not None:
        v = model.name
        start.append(("name", LNode(v.value, v.loc, quoted=v.quoted), model.loc))
    entries = model.block.entries if model is not None else []
    root_loc = model.loc if model is not None else Loc(doc.path, 1, 1)
    tree = _block_node(entries, root_loc, errors, start)
    if errors:
        raise CompileError(errors)
    return tree


def merge(base: LNode, over: LNode) -> LNode:
    """`over` laid on `base`: maps merge key by key; anything else replaces.

    Neither input is modified; positions stay with the file that wrote each value.
    """
    if not (base.is_map and over.is_map):
        return _copy(over)
    items = {k: _copy(v) for k, v in base.value.items()}
    key_locs = dict(base.key_locs)
    for k, v in over.value.items():
        items[k] = merge(items[k], v) if k in items else _copy(v)
        key_locs[k] = over.key_locs.get(k, v.loc)
    return LNode(items, over.loc, key_locs)


def _copy(node: LNode) -> LNode:
    if node.is_map:
        return LNode({k: _copy(v) for k, v in node.value.items()}, node.loc, dict(node.key_locs))
    if node.is_list:
        return LNode([_copy(v) for v in node.value], node.loc)
    return LNode(node.value, node.loc, quoted=node.quoted)


# ---------------------------------------------------------------------------
# Files and imports

IMPORTABLE = (".mg", ".yaml", ".yml", ".json")


_MG_START = re.compile(r"(?:metagen|import|model)(?![^\s{}\[\],;#\"'=:])")
_YAML_START = re.compile(
    r"""(?:[{\[]|---(?:\s|$)|%(?:YAML|TAG)\s|(?:[A-Za-z_][\w.\-]*|"[^"\n]*"|'[^'\n]*')[ \t]*:(?:\s|$))"""
)
_FIRST_LINE = re.compile(r"^[ \t]*([^\s#].*)$", re.M)


def looks_like_spec(text: str, ext: str) -> bool:
    """Whether the first line that is not blank or a comment starts a spec: a .mg
    statement, or a YAML key or flow collection. An imported file that does not
    (a key file, notes, ...) is refused without quoting any of its lines."""
    m = _FIRST_LINE.search(text.lstrip("\ufeff"))
    if m is None:
        return True  # empty: its own diagnostic quotes nothing
    return bool((_MG_START if ext == ".mg" else _YAML_START).match(m.group(1)))


def _count_values(node: LNode) -> int:
    if node.is_map:
        return 1 + sum(_count_values(v) for v in node.value.values())
    if node.is_list:
        return 1 + sum(_count_values(v) for v in node.value)
    return 1


class _Loader:
    """Loads a file and its imports, with budgets for the whole spec: the import
    chain's depth, and the bytes and values of all files together."""

    def __init__(self, sink: DiagnosticSink):
        self.sink = sink
        self.deps: list[str] = []
        self.cache: dict[str, LNode] = {}
        self.stack: list[tuple[str, str]] = []  # (realpath, shown path) of files being loaded
        self.chars = 0
        self.values = 0

    def note_dep(self, path: str) -> None:
        if path not in self.deps:
            self.deps.append(path)

    def count(self, tree: LNode, chars: int, path: str) -> None:
        self.chars += chars
        self.values += _count_values(tree)
        if self.chars > MAX_SPEC_BYTES or self.values > MAX_VALUES:
            what = "4 MiB of text" if self.chars > MAX_SPEC_BYTES else f"{MAX_VALUES} values"
            message = f"a spec and the files it imports hold more than {what} together; refusing to load them"
            raise CompileError([Diagnostic("error", Loc(path, 1, 1), message)])

    def load_text(self, text: str, path: str) -> LNode:
        self.sink.add_source(path, text[1:] if text.startswith("\ufeff") else text)
        doc = parse_cst(text, path, comments=False)
        own = doc_to_tree(doc)
        self.count(own, len(text), path)
        self.stack.append((os.path.realpath(path), path))
        try:
            merged: LNode | None = None
            for imp in doc.imports:
                base = self.load_import(imp, path)
                merged = base if merged is None else merge(merged, base)
        finally:
            self.stack.pop()
        return own if merged is None else merge(merged, own)

    def load_import(self, imp: Import, importer: str) -> LNode:
        from metagen.frontend.loader import read_source

        target = imp.target
        if not target.strip():
            raise CompileError([Diagnostic("error", imp.target_loc, "import needs a file name")])
        if not target.isprintable():
            raise CompileError(
                [Diagnostic("error", imp.target_loc, "an import's file name cannot hold control characters")]
            )
        full = os.path.normpath(os.path.join(os.path.dirname(importer), target))
        real = os.path.realpath(full)
        ext = os.path.splitext(full)[1].lower()
        if ext not in IMPORTABLE:
            raise CompileError(
                [
                    Diagnostic(
                        "error", imp.target_loc, f'cannot import "{target}": specs are .mg, .yaml, .yml or .json files'
                    )
                ]
            )
        if len(self.stack) >= MAX_IMPORT_DEPTH:
            raise CompileError(
                [
                    Diagnostic(
                        "error",
                        imp.target_loc,
                        f'cannot import "{target}": imports nest more than {MAX_IMPORT_DEPTH} files deep '
                        f"(from {self.stack[0][1]}); refusing to load it",
                    )
                ]
            )
        for i, (r, _) in enumerate(self.stack):
            if r == real:
                chain = " -> ".join([shown for _, shown in self.stack[i:]] + [full])
                raise CompileError(
                    [Diagnostic("error", imp.target_loc, f'import cycle: "{target}" imports itself ({chain})')]
                )
        if not os.path.isfile(full):
            why = "it is a directory" if os.path.isdir(full) else "no such file"
            raise CompileError([Diagnostic("error", imp.target_loc, f'cannot import "{target}": {why} ({full})')])
        self.note_dep(full)
        if real in self.cache:
            return self.cache[real]
        try:
            text = read_source(full, DiagnosticSink())  # its lines are shown only if it is a spec
        except CompileError as exc:
            raise CompileError(
                [Diagnostic("error", imp.target_loc, f'cannot import "{target}": {exc.diagnostics[0].message}')]
            ) from None
        if not looks_like_spec(text, ext):
            kind = "'metagen', 'import' or 'model'" if ext == ".mg" else "a key such as 'metagen_version:'"
            message = f'cannot import "{target}": it is not a MetaGen spec (a spec starts with {kind})'
            raise CompileError([Diagnostic("error", imp.target_loc, message)])
        try:
            if ext == ".mg":
                tree = self.load_text(text, full)
            else:
                from metagen.frontend.yaml_frontend import parse_yaml

                self.sink.add_source(full, text)
                tree = parse_yaml(text, full)
                if not tree.is_map:
                    raise CompileError(
                        [Diagnostic("error", tree.loc, "an imported spec must be a mapping of sections")]
                    )
                self.count(tree, len(text), full)
        except CompileError as exc:
            note = Diagnostic("note", imp.target_loc, f'in the file imported here ("{target}")')
            raise CompileError(exc.diagnostics + [note]) from None
        self.cache[real] = tree
        return tree


def parse_dsl(text: str, path: str, sink: DiagnosticSink) -> LNode:
    """The located tree of DSL `text` (imports resolved relative to `path`)."""
    return _Loader(sink).load_text(text, path)


def parse_dsl_with_deps(text: str, path: str, sink: DiagnosticSink) -> tuple[LNode, list[str]]:
    loader = _Loader(sink)
    loader.note_dep(path)
    tree = loader.load_text(text, path)
    return tree, loader.deps


def parse_dsl_file(path: str, sink: DiagnosticSink) -> tuple[LNode, list[str]]:
    """The located tree of a `.mg` file and the files it depends on (itself first)."""
    from metagen.frontend.loader import read_source

    text = read_source(path, sink)
    return parse_dsl_with_deps(text, path, sink)
