"""`params_estimate.json`: the exact count, where it goes, and what memory it needs."""

from __future__ import annotations

from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.devices import precision_of
from metagen.compiler.families import FAMILIES
from metagen.ir.graph import Layer, Model, Repeat, Sub


def _breakdown(model: Model, module: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = model.modules[module]
    for name, p in m.params.items():
        out[name] = p.counted
    for cname, child in m.children.items():
        total = model.child_param_count(child)
        if isinstance(child, Repeat):
            out[cname] = {"total": total, "count": child.count, "each": total // child.count}
        elif isinstance(child, Sub):
            out[cname] = {"total": total, "parts": _breakdown(model, child.module)}
        else:
            out[cname] = total
    return out


def parameter_report(ctx: CompileContext) -> dict[str, Any]:
    model = ctx.model
    total = model.param_count()
    family = FAMILIES[ctx.family]
    mem = family.memory(ctx, total)
    precision, is_default = precision_of(ctx.spec.constraints)
    return {
        "total_params": total,
        "by_module": _breakdown(model, model.top),
        "memory": {
            "inference": mem["inference"],
            "training": mem["training"],
            "precision": precision,
            "precision_is_default": is_default,
            "context_window": ctx.arch.get("context", ctx.context_window),
            "batch": 1,
        },
    }
