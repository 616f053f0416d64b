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
        text = f"{self.loc}: {self.severity}: {self.message}"
        if source_lines is not None:
            lines = source_lines.get(self.loc.path)
            if lines and 1 <= self.loc.line <= len(lines):
                src = lines[self.loc.line - 1].rstrip("\n")
                caret = " " * (max(self.loc.col, 1) - 1) + "^"
                text += f"\n    {src}\n    {caret}"
        return text


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
        stream = stream or sys.stderr
        seen = set()
        for d in sorted(self.items, key=lambda d: (d.loc.path != self._first_path(), d.loc)):
            key = (d.severity, d.loc, d.message)
            if key in seen:
                continue
            seen.add(key)
            print(d.render(self.sources if with_source else None), file=stream)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' when a choice is close to `word`, else ''."""
    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
