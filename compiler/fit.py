"""Fit the free dimensions to every constraint at once.

For each width the family offers, everything the constraints look at is affine in
depth (repeated blocks are identical): the parameter count, the memory, the FLOPs
and bytes of one unit of work. Two IR builds (depth 1 and 2) give every line
exactly. Each upper bound (compiler/constraints.py) gives the deepest depth that
meets it (a closed form for parameters and memory, a bisection for latency and
throughput, whose roofline is monotone in depth); the smallest of those is the
width's depth and the bound it came from is the width's binding constraint. Among
widths whose model reaches the lower bound (the parameter minimum), the one whose
depth is closest to the family's ideal depth for that width wins. The choice and
the binding constraint are recorded in the report; the cost model
(compiler/cost.py, docs/cost_model.md) turns latency, device and throughput into
numbers.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from metagen.compiler import cost
from metagen.compiler.constraints import (
    Constraint,
    DepthLine,
    LowerBound,
    ParameterMax,
    Point,
    Target,
    UpperBound,
    fit_rule,
    make_constraints,
)
from metagen.compiler.context import CompileContext
from metagen.compiler.design_rules import RULES, applied
from metagen.compiler.families import FAMILIES

PINNED = "pinned dimensions"  # the binding constraint when no bound stopped the fit


def _evaluate(ctx: CompileContext, arch: dict[str, Any]) -> Point | None:
    family = FAMILIES[ctx.family]
    saved = ctx.arch
    ctx.arch = arch
    try:
        if family.finalize(ctx):
            return None
        model = family.build(ctx)
        params = model.param_count()
        mem = family.memory(ctx, params)["inference"]
        return Point(params, mem["total"], cost.workload(family, ctx, model, mem))
    finally:
        ctx.arch = saved


class Bounds:
    """The spec's constraints, split by the part each plays in the fit."""

    def __init__(self, constraints: list[Constraint]):
        self.all = constraints
        self.upper = [c for c in constraints if isinstance(c, UpperBound)]
        self.active = [c for c in self.upper if c.active]
        self.lower = [c for c in constraints if isinstance(c, LowerBound)]
        # The budget the fit fills: what decides whether a width could reach the minimum.
        self.budget = next(c for c in constraints if isinstance(c, ParameterMax))
        self.by_key = {c.key: c for c in constraints}

    def reaches(self, p: Point) -> bool:
        return not any(c.broken(p) for c in self.lower)

    def failures(self, p: Point) -> list[str]:
        """The upper bounds `p` breaks, in the order diagnostics name them."""
        return [c.key for c in self.active if c.broken(p)]


def fit_dimensions(ctx: CompileContext, print_time: bool = False) -> bool:
    """Set every free dimension; whether any was set. With `print_time` the fitter's
    own time goes to stderr (the report stays free of timings so outputs are
    deterministic)."""
    start = time.perf_counter()
    family = FAMILIES[ctx.family]
    knobs = family.knobs(ctx)
    if knobs is None:
        ctx.report["fit"] = {"free": [], "note": "every size dimension is pinned", "rules": list(ctx.report.get("rules", []))}
        return False
    target = Target.of(ctx)
    bounds: Bounds | None = None
    best = None  # (score, -params, width, depth, point, limited_by)
    largest = None  # the largest model that meets every upper bound but not the minimum
    tried: list[Point] = []  # the smallest model of each width, for "no model fits"
    rejected: list[tuple[Point, str]] = []  # widths whose pinned depth breaks a bound
    blocked: list[tuple[int, str]] = []  # (params reached, constraint) for widths held under the minimum
    evaluated = 0
    trace: list[dict[str, Any]] = []  # one entry per width, for `metagen explain`
    for width in knobs.widths:
        base_arch = dict(ctx.arch, **width)
        seen: dict[str, Any] = {"width": dict(width)}
        trace.append(seen)
        if knobs.depth_keys:
            r1 = _evaluate(ctx, {**base_arch, **{k: 1 for k in knobs.depth_keys}})
            r2 = _evaluate(ctx, {**base_arch, **{k: 2 for k in knobs.depth_keys}})
            evaluated += 2
            if r1 is None or r2 is None:
                seen["outcome"] = "no valid model at this width"
                continue
            if bounds is None:
                made, ok = make_constraints(target, r1.work)
                if not ok:
                    return False
                bounds = Bounds(made)
            tried.append(r1)
            line = DepthLine(r1, r2)
            top = knobs.max_depth
            limits = {c.key: c.depth_limit(line, top) for c in bounds.active}
            depth = int(min(min(limits.values()), top))
            seen.update(depth_limits=dict(limits), max_depth=top)
            budget_depth = limits[bounds.budget.key]
            if budget_depth >= 1 and depth < budget_depth:
                # What stopped a width that the parameter budget alone would have let
                # reach the minimum: the binding constraint when no model reaches it.
                if bounds.reaches(line.at(budget_depth)):
                    why = next(k for k, v in limits.items() if v == depth)
                    blocked.append((line.at(depth).params if depth >= 1 else 0, why))
            if depth < 1:
                seen["outcome"] = "depth 1 breaks " + ", ".join(k for k, v in limits.items() if v < 1)
                # widths only grow from here; once depth 1 breaks the budget, stop
                if bounds.budget.broken(r1):
                    seen["outcome"] += "; larger widths not tried"
                    break
                continue
            point = line.at(depth)
            limited_by = next((k for k, v in limits.items() if v == depth), f"depth limit ({top})")
        else:
            point = _evaluate(ctx, base_arch)
            evaluated += 1
            if point is None:
                seen["outcome"] = "no valid model at this width"
                continue
            if bounds is None:
                made, ok = make_constraints(target, point.work)
                if not ok:
                    return False
                bounds = Bounds(made)
            depth = None
            tried.append(point)
            broken = bounds.failures(point)
            if broken:
                rejected.append((point, broken[0]))
                seen.update(params=point.params, outcome="breaks " + ", ".join(broken))
                continue
            limited_by = bounds.budget.key
        ideal = knobs.ideal_depth(width)
        cur_depth = depth if depth is not None else ctx.arch.get(knobs.depth_keys[0] if knobs.depth_keys else "layers") or ideal
        if knobs.score is not None:
            score = knobs.score(width, cur_depth)
        else:
            score = abs(math.log(max(cur_depth, 1) / ideal))
        # A demoted width (one that breaks a preference) loses to every other.
        cand = ((bool(knobs.demoted(width)), score), -point.params, width, depth, point, limited_by)
        seen.update(
            depth=depth,
            params=point.params,
            **({"limited_by": limited_by} if depth is not None else {}),
            **({"ideal_depth": round(ideal, 2)} if knobs.score is None else {}),
            distance=round(score, 4),
            **({"demoted": True} if knobs.demoted(width) else {}),
            outcome="reaches the minimum" if bounds.reaches(point) else "below the minimum",
        )
        if bounds.reaches(point):
            if best is None or cand[:2] < best[:2]:
                best = cand
        elif largest is None or point.params > largest[4].params:
            largest = cand
    if not knobs.depth_keys:
        best, largest = _width_binding(best, rejected), _width_binding(largest, rejected)
    ctx.report["fit"] = {"candidates_evaluated": evaluated}
    ctx.report["fit_trace"] = trace  # in memory only: params_estimate.json does not write it
    chosen = best
    binding = None
    if chosen is None and largest is not None:
        chosen = largest
        if largest[5] == bounds.budget.key and blocked:
            largest = largest[:5] + (max(blocked)[1],)
        binding = largest[5]
        if binding == bounds.budget.key:
            binding = PINNED
        unmet = [c for c in bounds.lower if c.explicit and c.broken(largest[4])]
        if unmet:
            stopper = bounds.by_key.get(largest[5])
            for c in unmet:
                loc, message = c.unreachable(largest[4], stopper if isinstance(stopper, UpperBound) else None)
                ctx.sink.error(loc, message)
            return False
    if chosen is None:
        _no_model(ctx, bounds, tried)
        return False
    _, _, width, depth, point, limited_by = chosen
    knobs.chosen(ctx, width)
    if knobs.depth_rule and depth is not None:
        key = knobs.depth_keys[0]
        wide = next(iter(width.items()), None)
        at = f" at {wide[0]} {wide[1]}" if wide else ""
        applied(
            ctx, RULES[knobs.depth_rule],
            f"{key} = {depth}{at} (the published depth there: {knobs.ideal_depth(width):.1f})",
        )
    ctx.arch.update(width)
    for k in knobs.depth_keys:
        ctx.arch[k] = depth
    ctx.report["fit"].update(
        {
            "free": sorted(set(width) - ctx.pinned) + list(knobs.depth_keys),
            "chosen": {**{k: v for k, v in width.items()}, **{k: depth for k in knobs.depth_keys}},
            "rule": fit_rule(knobs.choice),
            "rules": list(ctx.report.get("rules", [])),
        }
    )
    ctx.report["binding_constraint"] = binding or limited_by
    if print_time:
        print(
            f"metagen: fit-dimensions: {evaluated} builds in {time.perf_counter() - start:.3f} s",
            file=sys.stderr,
        )
    return True


def _width_binding(cand, rejected):
    """With the depth pinned, the constraint that rejected the next larger width binds."""
    if cand is None:
        return None
    above = [(p.params, why) for p, why in rejected if p.params > cand[4].params]
    if above:
        return cand[:5] + (min(above)[1],)
    return cand


def _no_model(ctx: CompileContext, bounds: Bounds | None, tried: list[Point]) -> None:
    """No width has a model that meets every upper bound: name the first bound that
    even the most favourable model within the bounds before it breaks, and the value
    that would work."""
    if not tried or bounds is None:
        ctx.sink.error(ctx.spec.architecture.loc(), "the pinned architecture dimensions admit no valid model")
        return
    within = tried
    for c in bounds.active:
        best = min(within, key=c.pressure)
        if c.broken(best):
            ctx.sink.error(c.loc, c.no_model(best))
            return
        within = [p for p in within if not c.broken(p)]
    fields = list(dict.fromkeys(c.field for c in bounds.upper))
    ctx.sink.error(
        ctx.spec.constraints.loc(),
        f"no single model meets {', '.join(fields[:-1])} and {fields[-1]} together; relax one of them",
    )


def check_constraints(ctx: CompileContext) -> None:
    """The built model against every constraint (pinned models are checked only here)."""
    if ctx.report.get("tiny"):
        ctx.report.setdefault("binding_constraint", "none (--tiny)")
        return
    target = Target.of(ctx)
    mem = ctx.report["memory"]["inference"]
    work = cost.workload(FAMILIES[ctx.family], ctx, ctx.model, mem)
    point = Point(ctx.report["total_params"], mem["total"], work)
    made, ok = make_constraints(target, work)
    bounds = Bounds(made)
    for c in bounds.all:
        message = c.check(point)
        if message is not None:
            ctx.sink.error(c.loc, message)
    if not ok:
        return  # the errors are reported; there is no report to write
    if not bounds.reaches(point) and ctx.report.get("binding_constraint", bounds.budget.key) == bounds.budget.key:
        # The budget did not stop the fit short of the minimum: the pinned dimensions did.
        ctx.report["binding_constraint"] = PINNED
    ctx.report.setdefault("binding_constraint", PINNED)
    sections: dict[str, dict[str, Any]] = {
        "budget": {},
        "cost": cost.report(target.device, work, target.estimate(point), target.memory_budget),
    }
    for c in bounds.all:
        for section, entries in c.report().items():
            sections[section].update(entries)
    sections["budget"]["utilization_of_max"] = round(point.params / bounds.budget.limit, 4)
    sections["cost"]["binding_constraint"] = ctx.report["binding_constraint"]
    ctx.report["cost"], ctx.report["budget"] = sections["cost"], sections["budget"]
