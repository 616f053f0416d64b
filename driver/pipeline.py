"""Spec file -> fitted, verified IR: the front half every command shares."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Sequence, TextIO

from metagen.compiler.context import CompileContext, Options
from metagen.compiler.pass_infra import Instrument, Pass, PassManager, PassResult
from metagen.compiler.passes import standard_passes
from metagen.diagnostics import DiagnosticSink
from metagen.frontend.loader import load_tree
from metagen.frontend.spec_builder import Spec, apply_overrides, build_spec


@dataclass
class Compilation:
    ctx: CompileContext
    deps: list[str]

    @property
    def model(self):
        return self.ctx.model

    @property
    def spec(self) -> Spec:
        return self.ctx.spec


def load_spec(path: str, sink: DiagnosticSink, overrides: list[tuple[str, str]] = ()) -> tuple[Spec, list[str]]:
    tree, deps = load_tree(path, sink)
    if overrides:
        tree = apply_overrides(tree, list(overrides), sink)
    spec = build_spec(tree, sink)
    sink.check()
    return spec, deps


def pipeline(tiny: bool = False) -> list[Pass]:
    """The passes every command runs. METAGEN_FIT_TIME=1 sets fit-dimensions'
    print-time option."""
    return standard_passes(tiny, fit_time=bool(os.environ.get("METAGEN_FIT_TIME")))


@dataclass(frozen=True)
class PrintIR:
    """An instrument printing the IR (`.mgir` text) after each pass named in `after`
    (every pass when None), LLVM's -print-after-all and -print-after. Before a model
    exists a pass gets one line."""

    after: frozenset[str] | None = None
    stream: TextIO | None = None  # sys.stderr at the time of printing

    def __call__(self, p: Pass, result: PassResult, ctx: CompileContext) -> None:
        if self.after is not None and p.name not in self.after:
            return
        from metagen.ir.printer import print_model

        out = self.stream or sys.stderr
        state = "changed" if result.changed else "unchanged"
        if ctx.model is None:
            family = f", family {ctx.family}" if ctx.family else ""
            print(f"; *** IR Dump After {p.name} ({state}): no IR yet{family} ***", file=out)
            return
        print(f"; *** IR Dump After {p.name} ({state}) ***", file=out)
        out.write(print_model(ctx.model))
        out.flush()


def compile_spec(
    path: str,
    sink: DiagnosticSink | None = None,
    overrides: list[tuple[str, str]] = (),
    tiny: bool = False,
    instruments: Sequence[Instrument] = (),
) -> Compilation:
    """Raises CompileError (diagnostics inside) when the spec or the build fails."""
    sink = sink or DiagnosticSink()
    spec, deps = load_spec(path, sink, overrides)
    ctx = CompileContext(spec=spec, sink=sink, options=Options(tiny=tiny))
    PassManager(pipeline(tiny), instruments).run(ctx)
    return Compilation(ctx, deps)
