"""The spec's constraints as objects: one class each, registered in order.

A constraint knows its spec key and location, how it bounds the free dimensions,
when a model breaks it, what to say when it does, and its entry in
`params_estimate.json`. The fitter (`fit.fit_dimensions`), its no-model diagnostics
and the final check (`fit.check_constraints`) all walk the same list, `CONSTRAINTS`,
in the order diagnostics name them.

Two kinds:

- an `UpperBound` is broken by a model that is too large or too slow; whatever it
  measures grows with depth, so for one width it allows every depth up to some
  limit (found by bisection on `broken`, or in closed form by an `AffineBound`).
  The fitter takes, for each width, the deepest depth every upper bound allows.
- a `LowerBound` (the parameter minimum) is what the fitter aims to reach; among the
  widths whose model reaches every lower bound it picks by depth, and when none does
  the upper bound that stopped growth is named.

To add a constraint: a class here with `register`; it is then fitted, checked,
diagnosed and reported. See docs/cost_model.md.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar

from metagen.compiler import cost
from metagen.compiler.context import CompileContext
from metagen.compiler.devices import DEVICES, Device
from metagen.diagnostics import Loc
from metagen.frontend.units import format_bytes, format_count


@dataclass(frozen=True)
class Point:
    """What the constraints see of one model."""

    params: int
    memory: int
    work: cost.Workload


def _line(v1: int, v2: int, depth: int) -> int:
    return v1 + (depth - 1) * (v2 - v1)


@dataclass(frozen=True)
class DepthLine:
    """One width's models at depth 1 and 2; everything is affine in depth between
    (repeated blocks are identical), so `at(d)` is exact for any depth."""

    d1: Point
    d2: Point

    def at(self, depth: int) -> Point:
        w1, w2 = self.d1.work, self.d2.work
        work = replace(
            w1,
            flops=_line(w1.flops, w2.flops, depth),
            weights=_line(w1.weights, w2.weights, depth),
            cache=_line(w1.cache, w2.cache, depth),
            activations=_line(w1.activations, w2.activations, depth),
        )
        return Point(_line(self.d1.params, self.d2.params, depth), _line(self.d1.memory, self.d2.memory, depth), work)


@dataclass(frozen=True)
class Target:
    """Where the model runs: every constraint may read it."""

    ctx: CompileContext
    device: Device
    memory_budget: int  # bytes: the spec's memory_budget or the device's capacity

    @classmethod
    def of(cls, ctx: CompileContext) -> "Target":
        c = ctx.spec.constraints
        device = DEVICES[c.device]
        return cls(ctx, device, c.memory_budget if c.memory_budget is not None else device.capacity)

    def estimate(self, p: Point) -> cost.Estimate:
        return cost.estimate(self.device, p.work, self.memory_budget)


def _deepest(ok: Callable[[int], bool], hi: int) -> int:
    """The largest depth in [1, hi] with ok(depth) for a predicate true up to some
    depth and false after it; 0 when ok(1) fails."""
    if hi < 1 or not ok(1):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


class Constraint(ABC):
    """One bound of the spec on the model."""

    key: ClassVar[str]  # its name as the binding constraint ("memory_budget")
    field: ClassVar[str]  # its key under `constraints` in the spec
    noun: ClassVar[str]  # what it bounds, for the fit rule's text ("memory")

    def __init__(self, target: Target):
        self.target = target
        self.ctx = target.ctx
        self.spec = target.ctx.spec.constraints

    @property
    def active(self) -> bool:
        """False for a constraint the spec leaves unbounded (latency "batch"): it
        is reported but never binds."""
        return True

    @classmethod
    def make(cls, target: Target, work: cost.Workload) -> "Constraint | None":
        """The constraint as the spec sets it, or None when it sets none; raises
        cost.BoundError when the spec's value cannot apply to this model (reported
        at `loc_of(target)`)."""
        return cls(target)

    @classmethod
    def loc_of(cls, target: Target) -> Loc:
        return target.ctx.spec.constraints.loc(cls.field)

    @property
    def loc(self) -> Loc:
        return self.loc_of(self.target)

    @abstractmethod
    def broken(self, p: Point) -> bool:
        """Whether `p` breaks this constraint."""

    @abstractmethod
    def check(self, p: Point) -> str | None:
        """The error for the built model `p`, None when it holds."""

    def report(self) -> dict[str, dict[str, Any]]:
        """Entries for params_estimate.json, by section ("budget", "cost")."""
        return {}


class UpperBound(Constraint):
    """Broken by a model too large or too slow; monotone in depth."""

    def depth_limit(self, line: DepthLine, top: int) -> int:
        """The deepest depth in [0, top] this bound allows for one width (0: none)."""
        return _deepest(lambda d: not self.broken(line.at(d)), top)

    @abstractmethod
    def pressure(self, p: Point) -> float:
        """How hard `p` presses on the bound (smaller is more favourable)."""

    @abstractmethod
    def no_model(self, best: Point) -> str:
        """The error when even the most favourable model `best` breaks the bound:
        what it needs, and the smallest value that would work."""

    def stops_growth(self, params: int) -> tuple[Loc | None, str] | None:
        """Why the model stopped at `params` parameters below the parameter minimum,
        and what to relax (with where to say it, None: at the minimum); None when
        this bound gives no reason of its own (the pinned dimensions do)."""
        return None


class AffineBound(UpperBound):
    """A bound on a quantity affine in depth: its depth limit in closed form."""

    limit: int

    @abstractmethod
    def value(self, p: Point) -> int: ...

    def broken(self, p: Point) -> bool:
        return self.value(p) > self.limit

    def pressure(self, p: Point) -> float:
        return self.value(p)

    def depth_limit(self, line: DepthLine, top: int) -> int:
        v1, v2 = self.value(line.d1), self.value(line.d2)
        per = v2 - v1
        if per > 0:
            return min(top, (self.limit - (v1 - per)) // per)
        return top if v1 <= self.limit else 0


class LowerBound(Constraint):
    """What the fitter aims to reach."""

    explicit: bool  # written in the spec; a default one is only a target

    @abstractmethod
    def unreachable(self, largest: Point, binding: UpperBound | None) -> tuple[Loc, str]:
        """The error when no model reaches the bound; `largest` is the largest model
        within every upper bound, `binding` what stopped it (None: the pinned
        dimensions or the depth limit)."""


CONSTRAINTS: list[type[Constraint]] = []


def register(cls: type[Constraint]) -> type[Constraint]:
    CONSTRAINTS.append(cls)
    return cls


def make_constraints(target: Target, work: cost.Workload) -> tuple[list[Constraint], bool]:
    """Every constraint the spec sets, in registration order, and whether all could
    be made (the ones that cannot apply to this model are reported and left out)."""
    out, ok = [], True
    for cls in CONSTRAINTS:
        try:
            c = cls.make(target, work)
        except cost.BoundError as exc:
            target.ctx.sink.error(cls.loc_of(target), str(exc))
            ok = False
            continue
        if c is not None:
            out.append(c)
    return out, ok


def fit_rule(choice: str) -> str:
    """The "why this size" rule of params_estimate.json, from the registered bounds
    and the family's choice among widths (`Knobs.choice`)."""
    nouns = ", ".join(c.noun for c in CONSTRAINTS if issubclass(c, UpperBound))
    return f"for each width the deepest depth within every bound ({nouns}); among widths reaching the minimum, {choice}"


def _binds_at(bound: str, params: int, remedy: str) -> str:
    """Why growth stopped short of the parameter minimum (after "no model reaches ...: ")."""
    n = format_count(params)
    return f"{bound} binds at {n} parameters; lower min to at most {n} ({params}){remedy}"


def round_up_bytes(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2)):
        if n >= scale:
            return f"{math.ceil(n / scale)}{unit}"
    return f"{n}B"


def budget_max(ctx: CompileContext) -> int:
    """parameter_budget.max: the spec's, else the family's task default (a written
    min above that default raises it to the min)."""
    pb = ctx.spec.constraints.parameter_budget
    if pb.given("max"):
        return pb.max
    from metagen.compiler.families import FAMILIES

    default = FAMILIES[ctx.family].default_budget if ctx.family in FAMILIES else pb.max
    return max(default, pb.min) if pb.given("min") and pb.min is not None else default


# ---------------------------------------------------------------- the constraints


@register
class ParameterMax(AffineBound):
    """`parameter_budget.max`: the most parameters; the fitter fills it."""

    key, field, noun = "parameter_budget.max", "parameter_budget", "parameters"

    def __init__(self, target: Target):
        super().__init__(target)
        self.limit = budget_max(target.ctx)

    @classmethod
    def loc_of(cls, target: Target) -> Loc:
        c = target.ctx.spec.constraints
        return c.parameter_budget.loc("max") if c.parameter_budget.given("max") else c.loc()

    def report(self) -> dict[str, dict[str, Any]]:
        given = self.spec.parameter_budget.given("max")
        return {"budget": {"max": self.limit, **({} if given else {"max_is_task_default": True})}}

    def value(self, p: Point) -> int:
        return p.params

    def no_model(self, best: Point) -> str:
        n = best.params
        return (
            f"no model fits parameter_budget.max = {format_count(self.limit)}: the smallest model this spec "
            f"allows has {format_count(n)} parameters ({n}); raise max to at least {n}"
        )

    def check(self, p: Point) -> str | None:
        if not self.broken(p):
            return None
        n = p.params
        return (
            f"the pinned architecture has {format_count(n)} parameters ({n}), over "
            f"parameter_budget.max = {format_count(self.limit)}; raise max to at least {n}"
        )



@register
class ParameterMin(LowerBound):
    """`parameter_budget.min`: 90% of max unless given."""

    key, field, noun = "parameter_budget.min", "parameter_budget", "parameters"

    def __init__(self, target: Target):
        super().__init__(target)
        pb = self.spec.parameter_budget
        self.explicit = pb.given("min")
        self.limit = pb.min if self.explicit else int(math.ceil(0.9 * budget_max(target.ctx)))

    @classmethod
    def loc_of(cls, target: Target) -> Loc:
        return target.ctx.spec.constraints.parameter_budget.loc("min")

    def broken(self, p: Point) -> bool:
        return p.params < self.limit

    def unreachable(self, largest: Point, binding: UpperBound | None) -> tuple[Loc, str]:
        n = largest.params
        head = f"no model reaches parameter_budget.min = {format_count(self.limit)}"
        why = binding.stops_growth(n) if binding is not None else None
        if why is None:
            return self.loc, f"{head} with the pinned dimensions; the largest is {format_count(n)} ({n})"
        loc, text = why
        return loc or self.loc, f"{head}: {text}"

    def check(self, p: Point) -> str | None:
        if not (self.explicit and self.broken(p)):
            return None
        n = p.params
        return (
            f"the model has {format_count(n)} parameters ({n}), under parameter_budget.min = "
            f"{format_count(self.limit)}"
        )

    def report(self) -> dict[str, dict[str, Any]]:
        return {"budget": {"min": self.limit, "min_is_default": not self.explicit}}


@register
class MemoryBudget(AffineBound):
    """`memory_budget`, or the device's capacity: inference memory at the context."""

    key, field, noun = "memory_budget", "memory_budget", "memory"

    def __init__(self, target: Target):
        super().__init__(target)
        self.limit = target.memory_budget
        self.explicit = self.spec.memory_budget is not None

    @classmethod
    def loc_of(cls, target: Target) -> Loc:
        c = target.ctx.spec.constraints
        return c.loc("memory_budget") if c.memory_budget is not None else c.loc("device")

    def value(self, p: Point) -> int:
        return p.memory

    def no_model(self, best: Point) -> str:
        what = "memory_budget" if self.explicit else f"the {self.spec.device} memory capacity"
        m = best.memory
        return (
            f"no model fits {what} = {format_bytes(self.limit)}: the smallest model this spec allows needs "
            f"{format_bytes(m)} ({m} bytes); raise memory_budget to at least {round_up_bytes(m)}"
        )

    def stops_growth(self, params: int) -> tuple[Loc | None, str]:
        words = f"the memory budget ({format_bytes(self.limit)})"
        return self.loc if self.explicit else None, _binds_at(words, params, " or raise memory_budget")

    def check(self, p: Point) -> str | None:
        if not self.broken(p):
            return None
        ctx = self.ctx
        return (
            f"the model needs {format_bytes(p.memory)} at a {ctx.arch.get('context', ctx.context_window)}-token "
            f"context (weights {format_bytes(p.work.weights)}), over the memory budget "
            f"{format_bytes(self.limit)}; raise memory_budget to at least {round_up_bytes(p.memory)}"
        )

    def report(self) -> dict[str, dict[str, Any]]:
        return {
            "budget": {
                "memory_budget_bytes": self.limit,
                "memory_budget_is_default": not self.explicit,
                "device": self.spec.device,
            }
        }


@register
class Latency(UpperBound):
    """`latency`: seconds per unit of work at batch 1 (a word, a time or a rate)."""

    key, field, noun = "latency", "latency", "latency"

    def __init__(self, target: Target, bound: cost.LatencyBound):
        super().__init__(target)
        self.bound = bound

    @classmethod
    def make(cls, target: Target, work: cost.Workload) -> "Latency":
        # Always made: "batch" (the default) is a latency with no bound, and says so.
        return cls(target, cost.latency_bound(target.ctx.spec.constraints.latency, work))

    @property
    def active(self) -> bool:
        return self.bound.seconds is not None

    def broken(self, p: Point) -> bool:
        return self.active and self.pressure(p) > self.bound.seconds

    def pressure(self, p: Point) -> float:
        return self.target.estimate(p).latency_s

    def words(self) -> str:
        b = self.bound
        return f"latency '{b.text}' (<= {cost.format_time(b.seconds)}/{b.unit} on {self.target.device.name})"

    def _needs(self, seconds: float, who: str) -> str:
        return (
            f"{self.words()} cannot be met: {who} needs {cost.format_time(seconds)}/{self.bound.unit}; "
            f"relax latency to at least '{cost.time_at_least(seconds)}' or choose a faster device"
        )

    def no_model(self, best: Point) -> str:
        return self._needs(self.pressure(best), "the smallest model")

    def stops_growth(self, params: int) -> tuple[Loc | None, str]:
        return None, _binds_at(self.words(), params, ", relax latency or choose a faster device")

    def check(self, p: Point) -> str | None:
        return self._needs(self.pressure(p), "the model") if self.broken(p) else None

    def report(self) -> dict[str, dict[str, Any]]:
        b = self.bound
        if b.seconds is not None:
            note = f"<= {cost.format_time(b.seconds)}/{b.unit}"
        elif self.spec.given("latency"):
            note = f"no latency bound ('{b.text}')"
        else:
            note = f"no latency bound ('{b.text}' is the spec's default)"
        per_unit = None if b.seconds is None else cost.round_float(b.seconds)
        return {"cost": {"latency_bound": {"spec": b.text, "per_unit_s": per_unit, "note": note}}}


@register
class Throughput(UpperBound):
    """`throughput`: units of work per second the device sustains, batched to the
    memory budget."""

    key, field, noun = "throughput", "throughput", "throughput"

    def __init__(self, target: Target, bound: cost.ThroughputBound | None):
        super().__init__(target)
        self.bound = bound

    @classmethod
    def make(cls, target: Target, work: cost.Workload) -> "Throughput":
        text = target.ctx.spec.constraints.throughput
        # Always made, so the report says when there is no bound.
        return cls(target, None if text is None else cost.throughput_bound(text, work))

    @property
    def active(self) -> bool:
        return self.bound is not None

    def broken(self, p: Point) -> bool:
        return self.active and -self.pressure(p) < self.bound.per_s

    def pressure(self, p: Point) -> float:
        return -self.target.estimate(p).throughput

    def words(self) -> str:
        b = self.bound
        return f"throughput '{b.text}' (>= {cost.format_rate(b.per_s, b.unit)} on {self.target.device.name})"

    def _reaches(self, per_s: float, who: str) -> str:
        b = self.bound
        return (
            f"{self.words()} cannot be met: {who} reaches {cost.format_rate(per_s, b.unit)}; lower throughput "
            f"to at most '{cost.spec_rate_at_most(per_s, b)}' or choose a faster device"
        )

    def no_model(self, best: Point) -> str:
        return self._reaches(-self.pressure(best), "the fastest model")

    def stops_growth(self, params: int) -> tuple[Loc | None, str]:
        return None, _binds_at(self.words(), params, ", lower throughput or choose a faster device")

    def check(self, p: Point) -> str | None:
        return self._reaches(-self.pressure(p), "the model") if self.broken(p) else None

    def report(self) -> dict[str, dict[str, Any]]:
        b = self.bound
        entry = None if b is None else {"spec": b.text, "per_s": cost.round_float(b.per_s)}
        return {"cost": {"throughput_bound": entry}}
