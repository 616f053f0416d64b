"""Spec file -> fitted, verified IR: the front half every command shares."""

from __future__ import annotations

from dataclasses import dataclass

from metagen.compiler.context import CompileContext, Options
from metagen.compiler.passes import PassManager, standard_passes
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


def compile_spec(
    path: str,
    sink: DiagnosticSink | None = None,
    overrides: list[tuple[str, str]] = (),
    tiny: bool = False,
) -> Compilation:
    """Raises CompileError (diagnostics inside) when the spec or the build fails."""
    sink = sink or DiagnosticSink()
    spec, deps = load_spec(path, sink, overrides)
    ctx = CompileContext(spec=spec, sink=sink, options=Options(tiny=tiny))
    PassManager(standard_passes(tiny)).run(ctx)
    return Compilation(ctx, deps)
