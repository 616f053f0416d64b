"""The pass infrastructure: what a pass is, what it returns, and the manager that
runs a pipeline of them.

A pass is a frozen dataclass whose fields are its options (xDSL's `ModulePass`);
`run` returns a `PassResult` saying whether it changed the architecture or the IR
(onnx-ir's `PassResult.modified`). Each pass declares the facts it requires and
ensures; the manager rejects a pipeline whose order breaks them before running
anything, runs the IR verifier after every pass that changed a model, stops at the
first pass that reports errors, and calls its instruments after each pass
(`--print-after-all` is one).

This module imports nothing of the families or the fitter, so any module may
define a pass.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Callable, ClassVar, Sequence

from metagen.compiler.context import CompileContext
from metagen.diagnostics import Loc
from metagen.ir.verify import VerifyError, verify_model


class Fact(Enum):
    """What a pass may require of the context and ensure for the passes after it."""

    FAMILY = "the family chosen"
    CONVENTIONS = "the conventions resolved"
    ARCHITECTURE = "every architecture dimension resolved"
    MODEL = "the model built"
    PARAMETER_COUNT = "the parameters counted"


@dataclass(frozen=True)
class PassResult:
    """changed: the pass altered the architecture or the IR. Recording analysis
    results in the report is not a change."""

    changed: bool


@dataclass(frozen=True)
class Pass(ABC):
    """A named transformation of the compile context; its dataclass fields are its
    options. The first line of a pass's docstring is its summary in
    `metagenc --list-passes`."""

    name: ClassVar[str]
    requires: ClassVar[frozenset[Fact]] = frozenset()
    ensures: ClassVar[frozenset[Fact]] = frozenset()

    @abstractmethod
    def run(self, ctx: CompileContext) -> PassResult:
        """Transform the context; report problems to ctx.sink."""

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def spelling(self) -> str:
        """The name with the options that differ from their defaults, as in xDSL
        pipelines: `fit-dimensions{print-time=true}`."""
        opts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                opts.append(f"{f.name.replace('_', '-')}={text}")
        return f"{self.name}{{{' '.join(opts)}}}" if opts else self.name


class PipelineError(Exception):
    """A pipeline whose passes are out of order: a bug in the compiler, not the spec."""


Instrument = Callable[[Pass, PassResult, CompileContext], None]


class PassManager:
    def __init__(
        self,
        passes: Sequence[Pass],
        instruments: Sequence[Instrument] = (),
        given: frozenset[Fact] = frozenset(),
    ):
        """Raises PipelineError when a pass comes before what it requires (`given`:
        what the context already holds)."""
        have = set(given)
        for p in passes:
            missing = [f.value for f in Fact if f in p.requires and f not in have]
            if missing:
                raise PipelineError(f"pass '{p.name}' requires {', '.join(missing)}, which no earlier pass ensures")
            have |= p.ensures
        self.passes = list(passes)
        self.instruments = list(instruments)

    def run(self, ctx: CompileContext) -> None:
        for p in self.passes:
            result = p.run(ctx)
            ctx.sink.check()
            if result.changed and ctx.model is not None:
                try:
                    verify_model(ctx.model)
                except VerifyError as exc:
                    fallback = ctx.spec.loc() if ctx.spec is not None else Loc("<ir>")
                    for problem, loc in zip(exc.problems, exc.locs):
                        ctx.sink.error(loc or fallback, f"internal error after pass '{p.name}': {problem}")
                    ctx.sink.check()
            for instrument in self.instruments:
                instrument(p, result, ctx)
