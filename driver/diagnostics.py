"""Diagnostics in the `PATH:LINE:COL: severity: message` form every frontend shares.

Errors are collected, not raised one by one, so a user sees every problem in a spec
at once. `CompileError` carries the collected list out of a failed phase; the driver
prints it and exits 1. Nothing in the compiler prints a traceback for a bad spec.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from typing import Iterable

MAX_SHOWN = 100  # diagnostics printed per compilation; the rest are counted in one note
MAX_MESSAGE = 400  # characters of one message (a message quotes user text, which may be huge)
SOURCE_WINDOW = 60  # characters of the echoed source line on each side of the caret


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (ESC, BEL, C1, bidi overrides,
    lone surrogates, ...) become `\\xNN`, `\\uNNNN` or `\\UNNNNNNNN` escapes."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def clip(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, keeping its start and end."""
    if len(text) <= limit:
        return text
    keep = max(limit - 5, 2)
    return f"{text[: keep - keep // 4]} ... {text[len(text) - keep // 4 :]}"


@dataclass(frozen=True, order=True)
class Loc:
    """A 1-based position in a user's file."""

    path: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


UNKNOWN_LOC = Loc("<unknown>", 1, 1)


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning" | "note"
    loc: Loc
    message: str

    def render(self, source_lines: dict[str, list[str]] | None = None) -> str:
        """One line (plus the source line and a caret): bounded in length, and with
        every control character escaped, whatever the spec holds."""
        text = printable(f"{self.loc}: {self.severity}: {clip(self.message, MAX_MESSAGE)}")
        if source_lines is not None:
            lines = source_lines.get(self.loc.path)
            if lines and 1 <= self.loc.line <= len(lines):
                src, caret = _source_window(lines[self.loc.line - 1].rstrip("\n"), max(self.loc.col, 1) - 1)
                text += f"\n    {src}\n    {caret}"
        return text


def _source_window(line: str, col: int) -> tuple[str, str]:
    """The part of `line` around column `col` (0-based), escaped, and its caret line."""
    start = max(col - SOURCE_WINDOW, 0)
    end = min(col + SOURCE_WINDOW, len(line))
    head = ("..." if start > 0 else "") + printable(line[start:col])
    tail = printable(line[col:end]) + ("..." if end < len(line) else "")
    return head + tail, " " * len(head) + "^"


class CompileError(Exception):
    """A phase failed; `diagnostics` says where and why."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(f"{d.loc}: {d.severity}: {d.message}" for d in self.diagnostics))


@dataclass
class DiagnosticSink:
    """Collects diagnostics for one compilation."""

    items: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def error(self, loc: Loc, message: str) -> None:
        self.items.append(Diagnostic("error", loc, message))

    def warning(self, loc: Loc, message: str) -> None:
        self.items.append(Diagnostic("warning", loc, message))

    def note(self, loc: Loc, message: str) -> None:
        self.items.append(Diagnostic("note", loc, message))

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        self.items.extend(diags)

    def absorb(self, diags: Iterable[Diagnostic]) -> None:
        """Add the diagnostics not already collected (a CompileError raised by
        `check()` carries the sink's own items); linear in their number."""
        seen = set(self.items)
        self.items.extend(d for d in diags if d not in seen)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def check(self) -> None:
        """Raise the collected errors, if any."""
        if self.errors:
            raise CompileError(self.items)

    def add_source(self, path: str, text: str) -> None:
        self.sources[path] = text.splitlines()

    def _first_path(self) -> str:
        return self.items[0].loc.path if self.items else ""

    def render_all(self, stream=None, with_source: bool = True) -> None:
        """Print the diagnostics in file order, each once; past `MAX_SHOWN`, one note
        counts the rest (10,000 errors print as 100 and a count, not megabytes)."""
        stream = stream or sys.stderr
        first = self._first_path()
        unique = list(dict.fromkeys(sorted(self.items, key=lambda d: (d.loc.path != first, d.loc))))
        for d in unique[:MAX_SHOWN]:
            print(d.render(self.sources if with_source else None), file=stream)
        hidden = unique[MAX_SHOWN:]
        if hidden:
            counts = {}
            for d in hidden:
                counts[d.severity] = counts.get(d.severity, 0) + 1
            words = [f"{n} more {sev}{'s' if n != 1 else ''}" for sev, n in sorted(counts.items())]
            note = Diagnostic(
                "note", hidden[0].loc, f"{' and '.join(words)} not shown (at most {MAX_SHOWN} are printed)"
            )
            print(note.render(), file=stream)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' when a choice is close to `word`, else ''."""
    if len(str(word)) > 100:  # no name is this long; difflib would take quadratic time
        return ""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
