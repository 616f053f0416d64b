"""The passes that take a spec to a verified IR model, and the standard pipeline.

The infrastructure (Pass, PassResult, Fact, PassManager) is in pass_infra.py;
`metagenc --list-passes` prints the pipeline, `--print-after-all` the IR after
each pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from metagen.compiler.context import CompileContext
from metagen.compiler.families import FAMILIES
from metagen.compiler.fit import check_constraints, fit_dimensions
from metagen.compiler.objectives import EstimateTrainingCompute
from metagen.compiler.pass_infra import Fact, Pass, PassResult
from metagen.compiler.report import parameter_report
from metagen.compiler.select import select_family


@dataclass(frozen=True)
class SelectFamily(Pass):
    """Choose the family from modality, objective and architecture.family."""

    name = "select-family"
    ensures = frozenset({Fact.FAMILY})

    def run(self, ctx: CompileContext) -> PassResult:
        ctx.family = select_family(ctx.spec, ctx.sink) or ""
        return PassResult(changed=True)


@dataclass(frozen=True)
class ResolveDefaults(Pass):
    """Apply the family's conventions under the pinned keys; sizes stay free."""

    name = "resolve-defaults"
    requires = frozenset({Fact.FAMILY})
    ensures = frozenset({Fact.CONVENTIONS})

    def run(self, ctx: CompileContext) -> PassResult:
        ctx.context_window = ctx.spec.constraints.context_window
        FAMILIES[ctx.family].resolve(ctx)
        return PassResult(changed=True)


@dataclass(frozen=True)
class Shrink(Pass):
    """Shrink every size to test scale (--tiny), keeping the topology."""

    name = "shrink"
    requires = frozenset({Fact.CONVENTIONS})
    ensures = frozenset({Fact.ARCHITECTURE})

    def run(self, ctx: CompileContext) -> PassResult:
        FAMILIES[ctx.family].tiny(ctx)
        ctx.report["tiny"] = True
        return PassResult(changed=True)


@dataclass(frozen=True)
class FitDimensions(Pass):
    """Fit the free dimensions to every constraint and record the binding one."""

    name = "fit-dimensions"
    requires = frozenset({Fact.CONVENTIONS})
    ensures = frozenset({Fact.ARCHITECTURE})
    print_time: bool = False  # the fitter's own time on stderr

    def run(self, ctx: CompileContext) -> PassResult:
        return PassResult(changed=fit_dimensions(ctx, print_time=self.print_time))


@dataclass(frozen=True)
class BuildGraph(Pass):
    """Build the IR model of the resolved architecture."""

    name = "build-graph"
    requires = frozenset({Fact.ARCHITECTURE})
    ensures = frozenset({Fact.MODEL})

    def run(self, ctx: CompileContext) -> PassResult:
        family = FAMILIES[ctx.family]
        problem = family.finalize(ctx)
        if problem:
            ctx.sink.error(ctx.spec.architecture.loc(), f"architecture: {problem}")
            return PassResult(changed=False)
        ctx.model = family.build(ctx)
        return PassResult(changed=True)


@dataclass(frozen=True)
class CountParameters(Pass):
    """Count the parameters exactly, per module, and estimate the memory."""

    name = "count-parameters"
    requires = frozenset({Fact.MODEL})
    ensures = frozenset({Fact.PARAMETER_COUNT})

    def run(self, ctx: CompileContext) -> PassResult:
        ctx.report.update(parameter_report(ctx))
        return PassResult(changed=False)


@dataclass(frozen=True)
class CheckConstraints(Pass):
    """Check the built model against every constraint; name the binding one."""

    name = "check-constraints"
    requires = frozenset({Fact.PARAMETER_COUNT})

    def run(self, ctx: CompileContext) -> PassResult:
        check_constraints(ctx)
        return PassResult(changed=False)


def standard_passes(tiny: bool, fit_time: bool = False) -> list[Pass]:
    """The pipeline for these options, in order."""
    return [
        SelectFamily(),
        ResolveDefaults(),
        Shrink() if tiny else FitDimensions(print_time=fit_time),
        BuildGraph(),
        CountParameters(),
        CheckConstraints(),
        EstimateTrainingCompute(),
    ]
