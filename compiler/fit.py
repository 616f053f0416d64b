"""Fit the free dimensions to every constraint at once.

For each width the family offers, everything the constraints look at is affine in
depth (repeated blocks are identical): the parameter count, the memory, the FLOPs
and bytes of one unit of work. Two IR builds (depth 1 and 2) give every line
exactly. For each constraint the deepest depth that meets it is found (a closed
form for parameters and memory, a bisection for latency and throughput, whose
roofline is monotone in depth); the smallest of those is the width's depth and the
constraint it came from is the width's binding constraint. Among widths whose model
reaches the minimum, the one whose depth is closest to the family's ideal depth for
that width wins. The choice and the binding constraint are recorded in the report;
the cost model (compiler/cost.py, docs/cost_model.md) turns latency, device and
throughput into numbers.

Set METAGEN_FIT_TIME=1 to have the fitter print its own time to stderr (the report
stays free of timings so outputs are deterministic).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

from metagen.compiler import cost
from metagen.compiler.context import CompileContext
from metagen.compiler.devices import DEVICES, Device
from metagen.compiler.families import FAMILIES
from metagen.frontend.units import format_bytes, format_count

PARAMS, MEMORY, LATENCY, THROUGHPUT = "parameter_budget.max", "memory_budget", "latency", "throughput"


@dataclass
class Bounds:
    max_params: int
    min_params: int
    min_explicit: bool
    memory: int
    memory_explicit: bool
    device: Device


def bounds(ctx: CompileContext) -> Bounds:
    c = ctx.spec.constraints
    pb = c.parameter_budget
    device = DEVICES[c.device]
    mem = c.memory_budget if c.memory_budget is not None else device.capacity
    mn = pb.min if pb.given("min") else int(math.ceil(0.9 * pb.max))
    return Bounds(pb.max, mn, pb.given("min"), mem, c.memory_budget is not None, device)


@dataclass(frozen=True)
class Point:
    """What the constraints see of one model."""

    params: int
    memory: int
    work: cost.Workload


def _evaluate(ctx: CompileContext, arch: dict[str, Any]) -> Point | None:
    family = FAMILIES[ctx.family]
    saved = ctx.arch
    ctx.arch = arch
    try:
        if family.finalize(ctx):
            return None
        model = family.build(ctx)
        params = model.param_count()
        mem = family.memory(ctx, params)
        return Point(params, mem["total"], cost.workload(family, ctx, model, mem))
    finally:
        ctx.arch = saved


def _line(v1: int, v2: int, depth: int) -> int:
    return v1 + (depth - 1) * (v2 - v1)


def _at(r1: Point, r2: Point, depth: int) -> Point:
    w1, w2 = r1.work, r2.work
    work = replace(
        w1,
        flops=_line(w1.flops, w2.flops, depth),
        weights=_line(w1.weights, w2.weights, depth),
        cache=_line(w1.cache, w2.cache, depth),
        activations=_line(w1.activations, w2.activations, depth),
    )
    return Point(_line(r1.params, r2.params, depth), _line(r1.memory, r2.memory, depth), work)


class Checker:
    """Every bound of the spec, applied to one model."""

    def __init__(self, ctx: CompileContext, b: Bounds, cb: cost.CostBounds):
        self.ctx, self.b, self.cb = ctx, b, cb

    def estimate(self, p: Point) -> cost.Estimate:
        return cost.estimate(self.b.device, p.work, self.b.memory)

    def failures(self, p: Point) -> list[str]:
        """The constraints `p` breaks, in the order diagnostics name them."""
        out = []
        if p.params > self.b.max_params:
            out.append(PARAMS)
        if p.memory > self.b.memory:
            out.append(MEMORY)
        if self.cb.latency_s is not None or self.cb.throughput is not None:
            e = self.estimate(p)
            if self.cb.latency_s is not None and e.latency_s > self.cb.latency_s:
                out.append(LATENCY)
            if self.cb.throughput is not None and e.throughput < self.cb.throughput:
                out.append(THROUGHPUT)
        return out


def _deepest(ok, hi: int) -> int:
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


def _cost_bounds(ctx: CompileContext, work: cost.Workload) -> cost.CostBounds | None:
    c = ctx.spec.constraints
    try:
        return cost.cost_bounds(c.latency, c.throughput, work)
    except cost.BoundError as exc:
        field = "throughput" if str(exc).startswith("throughput") else "latency"
        ctx.sink.error(c.loc(field), str(exc))
        return None


def fit_dimensions(ctx: CompileContext) -> None:
    start = time.perf_counter()
    family = FAMILIES[ctx.family]
    knobs = family.knobs(ctx)
    b = bounds(ctx)
    if knobs is None:
        ctx.report["fit"] = {"free": [], "note": "every size dimension is pinned"}
        return
    checker: Checker | None = None
    best = None  # (score, -params, width, depth, point, limited_by)
    largest = None  # the largest model that meets every upper bound but not the minimum
    tried: list[Point] = []  # the smallest model of each width, for "no model fits"
    rejected: list[tuple[Point, str]] = []  # widths whose pinned depth breaks a bound
    blocked: list[tuple[int, str]] = []  # (params reached, constraint) for widths held under the minimum
    evaluated = 0
    for width in knobs.widths:
        base_arch = dict(ctx.arch, **width)
        if knobs.depth_keys:
            r1 = _evaluate(ctx, {**base_arch, **{k: 1 for k in knobs.depth_keys}})
            r2 = _evaluate(ctx, {**base_arch, **{k: 2 for k in knobs.depth_keys}})
            evaluated += 2
            if r1 is None or r2 is None:
                continue
            if checker is None:
                cb = _cost_bounds(ctx, r1.work)
                if cb is None:
                    return
                checker = Checker(ctx, b, cb)
            tried.append(r1)
            p_per, m_per = r2.params - r1.params, r2.memory - r1.memory
            p0, m0 = r1.params - p_per, r1.memory - m_per
            top = knobs.max_depth
            limits = {
                PARAMS: min(top, (b.max_params - p0) // p_per) if p_per > 0 else (top if r1.params <= b.max_params else 0),
                MEMORY: min(top, (b.memory - m0) // m_per) if m_per > 0 else (top if r1.memory <= b.memory else 0),
            }
            if checker.cb.latency_s is not None:
                limits[LATENCY] = _deepest(
                    lambda d: checker.estimate(_at(r1, r2, d)).latency_s <= checker.cb.latency_s, top
                )
            if checker.cb.throughput is not None:
                limits[THROUGHPUT] = _deepest(
                    lambda d: checker.estimate(_at(r1, r2, d)).throughput >= checker.cb.throughput, top
                )
            depth = int(min(min(limits.values()), top))
            if limits[PARAMS] >= 1 and depth < limits[PARAMS]:
                # What stopped a width that the parameter budget alone would have let
                # reach the minimum: the binding constraint when no model reaches it.
                if _line(r1.params, r2.params, limits[PARAMS]) >= b.min_params:
                    why = next(k for k, v in limits.items() if v == depth)
                    blocked.append((_line(r1.params, r2.params, depth) if depth >= 1 else 0, why))
            if depth < 1:
                # widths only grow from here; once depth 1 breaks max, stop
                if r1.params > b.max_params:
                    break
                continue
            point = _at(r1, r2, depth)
            limited_by = next((k for k, v in limits.items() if v == depth), f"depth limit ({top})")
        else:
            point = _evaluate(ctx, base_arch)
            evaluated += 1
            if point is None:
                continue
            if checker is None:
                cb = _cost_bounds(ctx, point.work)
                if cb is None:
                    return
                checker = Checker(ctx, b, cb)
            depth = None
            tried.append(point)
            broken = checker.failures(point)
            if broken:
                rejected.append((point, broken[0]))
                continue
            limited_by = PARAMS
        ideal = knobs.ideal_depth(width)
        cur_depth = depth if depth is not None else ctx.arch.get(knobs.depth_keys[0] if knobs.depth_keys else "layers") or ideal
        score = abs(math.log(max(cur_depth, 1) / ideal))
        cand = (score, -point.params, width, depth, point, limited_by)
        if point.params >= b.min_params:
            if best is None or cand[:2] < best[:2]:
                best = cand
        elif largest is None or point.params > largest[4].params:
            largest = cand
    if not knobs.depth_keys:
        best, largest = _width_binding(best, rejected), _width_binding(largest, rejected)
    ctx.report["fit"] = {"candidates_evaluated": evaluated}
    chosen = best
    binding = None
    if chosen is None and largest is not None:
        chosen = largest
        if largest[5] == PARAMS and blocked:
            largest = largest[:5] + (max(blocked)[1],)
        binding = largest[5]
        if binding == PARAMS:
            binding = "pinned dimensions"
        if b.min_explicit:
            _unreachable_min(ctx, b, checker, largest)
            return
    if chosen is None:
        _no_model(ctx, b, checker, tried)
        return
    _, _, width, depth, point, limited_by = chosen
    ctx.arch.update(width)
    for k in knobs.depth_keys:
        ctx.arch[k] = depth
    ctx.report["fit"].update(
        {
            "free": sorted(set(width) - ctx.pinned) + list(knobs.depth_keys),
            "chosen": {**{k: v for k, v in width.items()}, **{k: depth for k in knobs.depth_keys}},
            "rule": "for each width the deepest depth within every bound (parameters, memory, latency, "
            "throughput); among widths reaching the minimum, the one whose depth is closest to "
            "d / (64 * (d / 768) ** 0.41)",
        }
    )
    ctx.report["binding_constraint"] = binding or limited_by
    if os.environ.get("METAGEN_FIT_TIME"):
        print(
            f"metagen: fit-dimensions: {evaluated} builds in {time.perf_counter() - start:.3f} s",
            file=sys.stderr,
        )


def _width_binding(cand, rejected):
    """With the depth pinned, the constraint that rejected the next larger width binds."""
    if cand is None:
        return None
    above = [(p.params, why) for p, why in rejected if p.params > cand[4].params]
    if above:
        return cand[:5] + (min(above)[1],)
    return cand


def _bound_words(ctx: CompileContext, b: Bounds, cb: cost.CostBounds, what: str) -> str:
    if what == LATENCY:
        return f"latency '{cb.latency_text}' (<= {cost.format_time(cb.latency_s)}/{cb.unit} on {b.device.name})"
    return f"throughput '{cb.throughput_text}' (>= {cost.format_rate(cb.throughput, cb.unit)} on {b.device.name})"


def _unreachable_min(ctx: CompileContext, b: Bounds, checker: Checker, largest) -> None:
    c = ctx.spec.constraints
    pb = c.parameter_budget
    point, what = largest[4], largest[5]
    params = point.params
    if what == MEMORY:
        need = c.loc("memory_budget") if b.memory_explicit else pb.loc("min")
        ctx.sink.error(
            need,
            f"no model reaches parameter_budget.min = {format_count(b.min_params)}: the memory budget "
            f"({format_bytes(b.memory)}) binds at {format_count(params)} parameters; lower min to at most "
            f"{format_count(params)} ({params}) or raise memory_budget",
        )
    elif what in (LATENCY, THROUGHPUT):
        relax = "relax latency" if what == LATENCY else "lower throughput"
        ctx.sink.error(
            pb.loc("min"),
            f"no model reaches parameter_budget.min = {format_count(b.min_params)}: "
            f"{_bound_words(ctx, b, checker.cb, what)} binds at {format_count(params)} parameters; "
            f"lower min to at most {format_count(params)} ({params}), {relax} or choose a faster device",
        )
    else:
        ctx.sink.error(
            pb.loc("min"),
            f"no model reaches parameter_budget.min = {format_count(b.min_params)} with the pinned "
            f"dimensions; the largest is {format_count(params)} ({params})",
        )


def _no_model(ctx: CompileContext, b: Bounds, checker: Checker | None, tried: list[Point]) -> None:
    """No width has a model that meets every upper bound: name the first constraint
    that even the most favourable model breaks, and the value that would work."""
    c = ctx.spec.constraints
    pb = c.parameter_budget
    if not tried or checker is None:
        ctx.sink.error(ctx.spec.architecture.loc(), "the pinned architecture dimensions admit no valid model")
        return
    smallest = min(tried, key=lambda p: p.params)
    if smallest.params > b.max_params:
        ctx.sink.error(
            pb.loc("max") if pb.given("max") else c.loc(),
            f"no model fits parameter_budget.max = {format_count(b.max_params)}: the smallest model this spec "
            f"allows has {format_count(smallest.params)} parameters ({smallest.params}); raise max to at least "
            f"{smallest.params}",
        )
        return
    within = [p for p in tried if p.params <= b.max_params]
    leanest = min(within, key=lambda p: p.memory)
    if leanest.memory > b.memory:
        where = c.loc("memory_budget") if b.memory_explicit else c.loc("device")
        what = "memory_budget" if b.memory_explicit else f"the {c.device} memory capacity"
        ctx.sink.error(
            where,
            f"no model fits {what} = {format_bytes(b.memory)}: the smallest model this spec allows needs "
            f"{format_bytes(leanest.memory)} ({leanest.memory} bytes); raise memory_budget to at least "
            f"{_round_up_bytes(leanest.memory)}",
        )
        return
    within = [p for p in within if p.memory <= b.memory]
    estimates = [checker.estimate(p) for p in within]
    cb = checker.cb
    if cb.latency_s is not None:
        fastest = min(e.latency_s for e in estimates)
        if fastest > cb.latency_s:
            ctx.sink.error(c.loc("latency"), _latency_message(ctx, b, cb, fastest, "the smallest model"))
            return
    if cb.throughput is not None:
        most = max(e.throughput for e in estimates)
        if most < cb.throughput:
            ctx.sink.error(c.loc("throughput"), _throughput_message(ctx, b, cb, most, "the fastest model"))
            return
    ctx.sink.error(
        c.loc(),
        "no single model meets parameter_budget, memory_budget, latency and throughput together; "
        "relax one of them",
    )


def _latency_message(ctx, b: Bounds, cb: cost.CostBounds, need: float, who: str) -> str:
    return (
        f"{_bound_words(ctx, b, cb, LATENCY)} cannot be met: {who} needs {cost.format_time(need)}/{cb.unit}; "
        f"relax latency to at least '{cost.time_at_least(need)}' or choose a faster device"
    )


def _throughput_message(ctx, b: Bounds, cb: cost.CostBounds, reach: float, who: str) -> str:
    return (
        f"{_bound_words(ctx, b, cb, THROUGHPUT)} cannot be met: {who} reaches "
        f"{cost.format_rate(reach, cb.unit)}; lower throughput to at most '{cost.spec_rate_at_most(reach, cb)}' "
        f"or choose a faster device"
    )


def _round_up_bytes(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2)):
        if n >= scale:
            return f"{math.ceil(n / scale)}{unit}"
    return f"{n}B"


def check_constraints(ctx: CompileContext) -> None:
    """The built model against the bounds (pinned models are checked only here)."""
    if ctx.report.get("tiny"):
        ctx.report.setdefault("binding_constraint", "none (--tiny)")
        return
    b = bounds(ctx)
    c = ctx.spec.constraints
    pb = c.parameter_budget
    params = ctx.report["total_params"]
    mem = ctx.report["memory"]["total"]
    if params > b.max_params:
        ctx.sink.error(
            pb.loc("max") if pb.given("max") else c.loc(),
            f"the pinned architecture has {format_count(params)} parameters ({params}), over "
            f"parameter_budget.max = {format_count(b.max_params)}; raise max to at least {params}",
        )
    if mem > b.memory:
        where = c.loc("memory_budget") if b.memory_explicit else c.loc("device")
        ctx.sink.error(
            where,
            f"the model needs {format_bytes(mem)} at a {ctx.arch.get('context', ctx.context_window)}-token context "
            f"(weights {format_bytes(ctx.report['memory']['weights'])}), over the memory budget "
            f"{format_bytes(b.memory)}; raise memory_budget to at least {_round_up_bytes(mem)}",
        )
    family = FAMILIES[ctx.family]
    work = cost.workload(family, ctx, ctx.model, ctx.report["memory"])
    cb = _cost_bounds(ctx, work)
    if cb is not None:
        e = cost.estimate(b.device, work, b.memory)
        if cb.latency_s is not None and e.latency_s > cb.latency_s:
            ctx.sink.error(c.loc("latency"), _latency_message(ctx, b, cb, e.latency_s, "the model"))
        if cb.throughput is not None and e.throughput < cb.throughput:
            ctx.sink.error(c.loc("throughput"), _throughput_message(ctx, b, cb, e.throughput, "the model"))
        ctx.report["cost"] = cost.report(b.device, work, e, cb, b.memory, not c.given("latency"))
        ctx.report["cost"]["binding_constraint"] = None  # filled below
    if params < b.min_params:
        if b.min_explicit:
            ctx.sink.error(
                pb.loc("min"),
                f"the model has {format_count(params)} parameters ({params}), under parameter_budget.min = "
                f"{format_count(b.min_params)}",
            )
        else:
            ctx.report.setdefault("binding_constraint", "pinned dimensions")
            if ctx.report["binding_constraint"] == PARAMS:
                ctx.report["binding_constraint"] = "pinned dimensions"
    ctx.report.setdefault("binding_constraint", "pinned dimensions")
    if "cost" in ctx.report:
        ctx.report["cost"]["binding_constraint"] = ctx.report["binding_constraint"]
    ctx.report["budget"] = {
        "max": b.max_params,
        "min": b.min_params,
        "min_is_default": not b.min_explicit,
        "memory_budget_bytes": b.memory,
        "memory_budget_is_default": not b.memory_explicit,
        "device": c.device,
        "utilization_of_max": round(params / b.max_params, 4),
    }
