"""Everything a compilation can emit, each as bytes, from one Compilation."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import yaml

from metagen import __version__
from metagen.compiler.families import FAMILIES
from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.ir.graph import Layer, Model, Repeat, Sub
from metagen.ir.names import Namespace
from metagen.pipeline import Compilation


def _yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100).encode("utf-8")


def _json(data: Any, name: str, loc: Loc) -> bytes:
    """Strict JSON (RFC 8259): NaN and the infinities have no JSON spelling, and
    Python's `Infinity` breaks every other reader, so a non-finite number in `data` is
    a diagnostic at `loc` naming the file and the field, never written."""
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False, allow_nan=False)
    except ValueError:
        key, value = _non_finite(data)
        raise CompileError([Diagnostic(
            "error", loc, f"{name}: '{key}' would be {value}, which JSON cannot hold; a value in the spec is out of range"
        )]) from None
    return (text + "\n").encode("utf-8")


def _non_finite(data: Any, path: str = "") -> tuple[str, float] | None:
    """The first non-finite float in `data`, as (dotted key path, value)."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for k, v in items:
        sub = f"{path}.{k}" if path else str(k)
        if isinstance(v, float) and not math.isfinite(v):
            return sub, v
        found = _non_finite(v, sub)
        if found:
            return found
    return None


def resolved_architecture(comp: Compilation) -> dict[str, Any]:
    """The architecture section with every convention and fitted size filled in."""
    return FAMILIES[comp.ctx.family].resolved_architecture(comp.ctx)


def resolved_spec(comp: Compilation) -> dict[str, Any]:
    ctx = comp.ctx
    plain = ctx.spec.to_plain()
    b = ctx.report.get("budget")
    cons = plain.setdefault("constraints", {})
    if b:
        # A default minimum is not enforced (pinned dimensions may bind below it); written
        # out it would be, so it is stated as what this model meets.
        low = min(b["min"], ctx.report["total_params"]) if b.get("min_is_default") else b["min"]
        cons.setdefault("parameter_budget", {})["min"] = low
        cons["parameter_budget"]["max"] = b["max"]  # the spec's, or the family's task default
        from metagen.frontend.units import format_bytes_exact

        cons["memory_budget"] = format_bytes_exact(b["memory_budget_bytes"])
    cons["context_window"] = ctx.arch.get("context", ctx.context_window)
    classes = ctx.arch.get("num_classes")
    if classes:  # the classes the model has (a default, or shrunk by --tiny), not only what was written
        plain.setdefault("task", {})["num_classes"] = classes
    plain["architecture"] = {**{k: v for k, v in plain.get("architecture", {}).items() if k in ("components",)}, **resolved_architecture(comp)}
    return plain


def run_id(comp: Compilation, seed: int) -> str:
    h = hashlib.sha256()
    h.update(_yaml(resolved_spec(comp)))
    h.update(f"seed={seed};tiny={bool(comp.ctx.report.get('tiny'))};version={__version__}".encode())
    return "run-" + h.hexdigest()[:12]


def graph_json(model: Model) -> dict[str, Any]:
    """The IR as JSON: every module's parameters, children and nodes."""
    from metagen.ir import ops

    modules = []
    for m in model.modules.values():
        namer = Namespace()
        children = []
        for name, c in m.children.items():
            if isinstance(c, Layer):
                params = {k: list(p.type.shape) for k, p in ops.layer_params(c).items()}
                children.append({"name": name, "kind": "layer", "op": c.op, "attrs": _attrs(c.attr_dict()), "params": params})
            elif isinstance(c, Sub):
                children.append({"name": name, "kind": "module", "module": c.module})
            else:
                children.append({"name": name, "kind": "repeat", "module": c.module, "count": c.count})
        nodes = []
        for n in m.nodes:
            entry = {
                "results": [{"name": namer(r), "type": str(r.type)} for r in n.results],
                "kind": n.kind,
            }
            if n.kind == "op":
                entry["op"] = n.op
                entry["attrs"] = _attrs(n.attrs)
            else:
                entry["target"] = n.target
            entry["operands"] = [namer(o) for o in n.operands]
            nodes.append(entry)
        modules.append(
            {
                "name": m.name,
                "doc": m.doc,
                "params": [{"name": p.name, "shape": list(p.type.shape), "init": str(p.init)} for p in m.params.values()],
                "children": children,
                "inputs": [{"name": namer(v), "type": str(v.type)} for v in m.inputs],
                "nodes": nodes,
                "outputs": [namer(v) for v in m.outputs],
                "output_names": list(m.output_names),
            }
        )
    return {
        "format": "metagen-graph/1",
        "model": model.name,
        "family": model.family,
        "top": model.top,
        "inputs": [{"name": i.name, "type": str(i.type), "kind": i.kind, "doc": i.doc} for i in model.inputs],
        "outputs": list(model.output_names),
        "modules": modules,
    }


def _attrs(a: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in a.items()}


def architecture_yaml(comp: Compilation) -> dict[str, Any]:
    ctx = comp.ctx
    model = comp.model
    family = FAMILIES[ctx.family]
    return {
        "name": ctx.spec.name,
        "class": model.name,
        "family": ctx.family,
        "family_doc": family.doc,
        "tiny": bool(ctx.report.get("tiny")),
        "architecture": resolved_architecture(comp),
        "pinned": sorted(ctx.pinned),
        "inputs": {i.name: {"shape": [d for d in i.type.shape], "dtype": i.type.dtype.numpy, "meaning": i.doc} for i in model.inputs},
        "outputs": list(model.output_names),
        "symbols": dict(model.symbols),
        "total_params": ctx.report["total_params"],
        "binding_constraint": ctx.report.get("binding_constraint"),
        "modules": [m.name for m in model.modules.values()],
    }


def params_estimate(comp: Compilation) -> dict[str, Any]:
    r = comp.ctx.report
    out = {"total_params": r["total_params"], "binding_constraint": r.get("binding_constraint")}
    for k in ("budget", "memory", "fit", "cost", "training", "by_module"):
        if k in r:
            out[k] = r[k]
    return out


def emit_target(
    comp: Compilation, target: str, seed: int, weights: dict | None = None, data_name: str = "model.onnx.data", stream: bool = False
) -> dict:
    """Files for one target, keyed by a name relative to the output's folder ('' = the
    main file; ONNX may add an external-data file named `data_name`). Bytes, or with
    `stream` possibly `outputs.Streamed` for the weights (see `Backend.lower`)."""
    from metagen.backends import registry
    from metagen.precision import onnx_precision

    backend = registry.get(target)
    precision = onnx_precision(comp, comp.ctx.sink) if backend.binary else "fp32"
    return backend.lower(comp.model, seed=seed, weights=weights, data_name=data_name, stream=stream, precision=precision)
