"""Spec files -> located tree, whichever frontend the extension names."""

from __future__ import annotations

import os
import stat

from metagen.diagnostics import CompileError, Diagnostic, DiagnosticSink, Loc
from metagen.frontend.tree import MAX_SPEC_BYTES, LNode

YAML_EXTS = (".yaml", ".yml", ".json")
DSL_EXTS = (".mg",)


def read_source(path: str, sink: DiagnosticSink) -> str:
    """A spec's text. Only regular files are read (a FIFO would block, a link to
    /dev/zero never ends), and never more than the 4 MiB limit plus one byte."""
    try:
        # O_NONBLOCK: opening a FIFO returns at once; fstat then tells what was opened
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as fh:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise CompileError([Diagnostic("error", Loc(path, 1, 1), "cannot read spec: Is a directory")])
            if not stat.S_ISREG(st.st_mode):
                raise CompileError(
                    [Diagnostic("error", Loc(path, 1, 1), "cannot read spec: not a regular file (a device, pipe or socket)")]
                )
            data = fh.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            size = max(st.st_size, len(data))
            raise CompileError([Diagnostic("error", Loc(path, 1, 1), f"spec file is {size} bytes; specs are limited to 4 MiB")])
    except OSError as exc:
        raise CompileError([Diagnostic("error", Loc(path, 1, 1), f"cannot read spec: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CompileError([Diagnostic("error", Loc(path, 1, 1), f"spec is not UTF-8 text (byte {exc.start})")]) from None
    sink.add_source(path, text)
    return text


def load_tree(path: str, sink: DiagnosticSink) -> tuple[LNode, list[str]]:
    """The located tree of a spec file and every file it depends on (itself first)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in DSL_EXTS:
        from metagen.frontend.dsl import parse_dsl_file

        return parse_dsl_file(path, sink)
    if ext not in YAML_EXTS:
        raise CompileError(
            [Diagnostic("error", Loc(path, 1, 1), f"unknown spec extension '{ext}'; use .yaml, .yml, .json or .mg")]
        )
    from metagen.frontend.yaml_frontend import parse_yaml

    text = read_source(path, sink)
    return parse_yaml(text, path), [path]
