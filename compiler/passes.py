"""The pass manager and the passes that take a spec to a verified IR model.

Each pass is a small named object with `run(ctx) -> bool` (whether it changed
anything). The manager stops at the first pass that reports errors and runs the IR
verifier after every pass once a model exists, so a broken pass is caught where it
breaks things, not three passes later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from metagen.compiler.context import CompileContext
from metagen.compiler.families import FAMILIES
from metagen.compiler.select import select_family
from metagen.diagnostics import Loc
from metagen.ir.verify import VerifyError, verify_model


class Pass(ABC):
    name: ClassVar[str] = "pass"

    @abstractmethod
    def run(self, ctx: CompileContext) -> bool:
        """Transform the context; whether anything changed."""


@dataclass
class SelectFamily(Pass):
    name: ClassVar[str] = "select-family"

    def run(self, ctx):
        ctx.family = select_family(ctx.spec, ctx.sink) or ""
        return True


@dataclass
class ResolveDefaults(Pass):
    """Conventions and the context window; sizes stay free for the fitter."""

    name: ClassVar[str] = "resolve-defaults"

    def run(self, ctx):
        ctx.context_window = ctx.spec.constraints.context_window
        FAMILIES[ctx.family].resolve(ctx)
        return True


@dataclass
class Shrink(Pass):
    """--tiny: every size to test scale, topology unchanged."""

    name: ClassVar[str] = "shrink"

    def run(self, ctx):
        FAMILIES[ctx.family].tiny(ctx)
        ctx.report["tiny"] = True
        return True


@dataclass
class FitDimensions(Pass):
    name: ClassVar[str] = "fit-dimensions"

    def run(self, ctx):
        from metagen.compiler.fit import fit_dimensions

        fit_dimensions(ctx)
        return True


@dataclass
class BuildGraph(Pass):
    name: ClassVar[str] = "build-graph"

    def run(self, ctx):
        family = FAMILIES[ctx.family]
        problem = family.finalize(ctx)
        if problem:
            ctx.sink.error(ctx.spec.architecture.loc(), f"architecture: {problem}")
            return False
        ctx.model = family.build(ctx)
        return True


@dataclass
class CountParameters(Pass):
    """Exact count with a per-module breakdown, from the IR alone."""

    name: ClassVar[str] = "count-parameters"

    def run(self, ctx):
        from metagen.compiler.report import parameter_report

        ctx.report.update(parameter_report(ctx))
        return False


@dataclass
class CheckConstraints(Pass):
    """The built model against every constraint; says which one binds."""

    name: ClassVar[str] = "check-constraints"

    def run(self, ctx):
        from metagen.compiler.fit import check_constraints

        check_constraints(ctx)
        return False


def standard_passes(tiny: bool) -> list[Pass]:
    passes: list[Pass] = [SelectFamily(), ResolveDefaults()]
    passes.append(Shrink() if tiny else FitDimensions())
    passes += [BuildGraph(), CountParameters(), CheckConstraints()]
    from metagen.compiler.objectives import EstimateTrainingCompute

    passes.append(EstimateTrainingCompute())
    return passes


class PassManager:
    def __init__(self, passes: list[Pass]):
        self.passes = passes

    def run(self, ctx: CompileContext) -> None:
        for p in self.passes:
            p.run(ctx)
            ctx.sink.check()
            if ctx.model is not None:
                try:
                    verify_model(ctx.model)
                except VerifyError as exc:
                    loc = ctx.spec.loc() if ctx.spec is not None else Loc("<ir>")
                    for problem in exc.problems:
                        ctx.sink.error(loc, f"internal error after pass '{p.name}': {problem}")
                    ctx.sink.check()
