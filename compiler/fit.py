"""Fit the free dimensions to every constraint at once.

For each width the family offers, the parameter count and the memory are affine in
depth (repeated blocks are identical), so two IR builds give both lines exactly.
The deepest depth that meets every bound is taken for each width; among widths whose
model reaches the minimum, the one whose depth is closest to the family's ideal
depth for that width wins. The choice, the runner-up bounds and the binding
constraint are recorded in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.devices import DEVICES
from metagen.compiler.families import FAMILIES
from metagen.frontend.units import format_bytes, format_count


@dataclass
class Bounds:
    max_params: int
    min_params: int
    min_explicit: bool
    memory: int
    memory_explicit: bool


def bounds(ctx: CompileContext) -> Bounds:
    c = ctx.spec.constraints
    pb = c.parameter_budget
    device = DEVICES[c.device]
    mem = c.memory_budget if c.memory_budget is not None else device.capacity
    mn = pb.min if pb.given("min") else int(math.ceil(0.9 * pb.max))
    return Bounds(pb.max, mn, pb.given("min"), mem, c.memory_budget is not None)


def _evaluate(ctx: CompileContext, arch: dict[str, Any]) -> tuple[int, int] | None:
    family = FAMILIES[ctx.family]
    saved = ctx.arch
    ctx.arch = arch
    try:
        if family.finalize(ctx):
            return None
        model = family.build(ctx)
        params = model.param_count()
        mem = family.memory(ctx, params)["total"]
        return params, mem
    finally:
        ctx.arch = saved


def fit_dimensions(ctx: CompileContext) -> None:
    family = FAMILIES[ctx.family]
    knobs = family.knobs(ctx)
    b = bounds(ctx)
    if knobs is None:
        ctx.report["fit"] = {"free": [], "note": "every size dimension is pinned"}
        return
    best = None  # (score, -params, width, depth, params, mem)
    largest = None  # best model that meets max and memory but not min
    smallest = None  # smallest model at all, for "no model fits"
    evaluated = 0
    for width in knobs.widths:
        base_arch = dict(ctx.arch, **width)
        if knobs.depth_keys:
            r1 = _evaluate(ctx, {**base_arch, **{k: 1 for k in knobs.depth_keys}})
            r2 = _evaluate(ctx, {**base_arch, **{k: 2 for k in knobs.depth_keys}})
            evaluated += 2
            if r1 is None or r2 is None:
                continue
            p_per, m_per = r2[0] - r1[0], r2[1] - r1[1]
            p0, m0 = r1[0] - p_per, r1[1] - m_per
            if smallest is None or r1[0] < smallest[0]:
                smallest = (r1[0], r1[1], width)
            lp = (b.max_params - p0) // p_per if p_per > 0 else knobs.max_depth
            lm = (b.memory - m0) // m_per if m_per > 0 else knobs.max_depth
            depth = int(min(lp, lm, knobs.max_depth))
            if depth < 1:
                if r1[0] > b.max_params and r1[1] > b.memory:
                    pass
                # widths only grow from here; once depth 1 breaks max, stop
                if r1[0] > b.max_params:
                    break
                continue
            params, mem = p0 + depth * p_per, m0 + depth * m_per
            limited_by = "memory_budget" if lm < lp and lm < knobs.max_depth else "parameter_budget.max"
        else:
            r = _evaluate(ctx, base_arch)
            evaluated += 1
            if r is None:
                continue
            params, mem = r
            depth = None
            if smallest is None or params < smallest[0]:
                smallest = (params, mem, width)
            if params > b.max_params or mem > b.memory:
                continue
            limited_by = "parameter_budget.max"
        ideal = knobs.ideal_depth(width)
        cur_depth = depth if depth is not None else ctx.arch.get(knobs.depth_keys[0] if knobs.depth_keys else "layers") or ideal
        score = abs(math.log(max(cur_depth, 1) / ideal))
        cand = (score, -params, width, depth, params, mem, limited_by)
        if params >= b.min_params:
            if best is None or cand[:2] < best[:2]:
                best = cand
        elif largest is None or params > largest[4]:
            largest = cand
    ctx.report["fit"] = {"candidates_evaluated": evaluated}
    chosen = best
    binding = None
    if chosen is None and largest is not None:
        chosen = largest
        binding = largest[6]
        if binding == "parameter_budget.max":
            binding = "pinned dimensions"
        if b.min_explicit:
            _unreachable_min(ctx, b, largest)
            return
    if chosen is None:
        _no_model(ctx, b, smallest)
        return
    _, _, width, depth, params, mem, limited_by = chosen
    ctx.arch.update(width)
    for k in knobs.depth_keys:
        ctx.arch[k] = depth
    ctx.report["fit"].update(
        {
            "free": sorted(set(width) - ctx.pinned) + list(knobs.depth_keys),
            "chosen": {**{k: v for k, v in width.items()}, **{k: depth for k in knobs.depth_keys}},
            "rule": "deepest depth within every bound for each width; the width whose depth is closest to "
            "d / (64 * (d / 768) ** 0.41) among those reaching the minimum",
        }
    )
    ctx.report["binding_constraint"] = binding or limited_by


def _unreachable_min(ctx: CompileContext, b: Bounds, largest) -> None:
    pb = ctx.spec.constraints.parameter_budget
    params, mem = largest[4], largest[5]
    what = largest[6]
    if what == "memory_budget":
        need = ctx.spec.constraints.loc("memory_budget") if b.memory_explicit else pb.loc("min")
        ctx.sink.error(
            need,
            f"no model reaches parameter_budget.min = {format_count(b.min_params)}: the memory budget "
            f"({format_bytes(b.memory)}) binds at {format_count(params)} parameters; lower min to at most "
            f"{format_count(params)} ({params}) or raise memory_budget",
        )
    else:
        ctx.sink.error(
            pb.loc("min"),
            f"no model reaches parameter_budget.min = {format_count(b.min_params)} with the pinned "
            f"dimensions; the largest is {format_count(params)} ({params})",
        )


def _no_model(ctx: CompileContext, b: Bounds, smallest) -> None:
    c = ctx.spec.constraints
    pb = c.parameter_budget
    if smallest is None:
        ctx.sink.error(ctx.spec.architecture.loc(), "the pinned architecture dimensions admit no valid model")
        return
    params, mem, _ = smallest
    if params > b.max_params:
        ctx.sink.error(
            pb.loc("max") if pb.given("max") else c.loc(),
            f"no model fits parameter_budget.max = {format_count(b.max_params)}: the smallest model this spec "
            f"allows has {format_count(params)} parameters ({params}); raise max to at least {params}",
        )
    else:
        where = c.loc("memory_budget") if b.memory_explicit else c.loc("device")
        what = "memory_budget" if b.memory_explicit else f"the {c.device} memory capacity"
        ctx.sink.error(
            where,
            f"no model fits {what} = {format_bytes(b.memory)}: the smallest model this spec allows needs "
            f"{format_bytes(mem)} ({mem} bytes); raise memory_budget to at least {_round_up_bytes(mem)}",
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
    if params < b.min_params:
        if b.min_explicit:
            ctx.sink.error(
                pb.loc("min"),
                f"the model has {format_count(params)} parameters ({params}), under parameter_budget.min = "
                f"{format_count(b.min_params)}",
            )
        else:
            ctx.report.setdefault("binding_constraint", "pinned dimensions")
            if ctx.report["binding_constraint"] == "parameter_budget.max":
                ctx.report["binding_constraint"] = "pinned dimensions"
    ctx.report.setdefault("binding_constraint", "pinned dimensions")
    ctx.report["budget"] = {
        "max": b.max_params,
        "min": b.min_params,
        "min_is_default": not b.min_explicit,
        "memory_budget_bytes": b.memory,
        "memory_budget_is_default": not b.memory_explicit,
        "device": c.device,
        "utilization_of_max": round(params / b.max_params, 4),
    }
