"""What the CLI says about a design: the summary `synth` and `validate` print,
`metagen explain` (why each free dimension has its value) and `metagen compare`
(two designs side by side).

A design is read from the same two records whether it comes from a compilation in
memory or from a run folder that `metagen synth` wrote: `architecture.yaml` and
`params_estimate.json` (driver/artifacts.py builds both). `design()` turns them into
one flat dict, so the summary, the comparison and its JSON all read one shape.
"""

from __future__ import annotations

import json
import os
from typing import Any

from metagen.diagnostics import CompileError, Diagnostic, Loc, printable
from metagen.frontend.units import format_bytes, format_count

ESTIMATE = os.path.join("blueprint", "params_estimate.json")
ARCHITECTURE = os.path.join("blueprint", "architecture.yaml")
NOT_BYTES = {"context_window", "batch", "batch_size"}  # numbers in the memory record that are not sizes


# ------------------------------------------------------------------ one design


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections (the towers of a dual encoder) as dotted keys."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def inference_memory(memory: dict[str, Any]) -> dict[str, int]:
    """The inference memory as the report has it, in bytes: its parts and `total`.
    (A report that splits memory into `inference` and `training` is read by its
    `inference` part.)"""
    m = memory["inference"] if isinstance(memory.get("inference"), dict) else memory
    return {k: v for k, v in m.items() if isinstance(v, int) and not isinstance(v, bool) and k not in NOT_BYTES}


def design(arch: dict[str, Any], estimate: dict[str, Any], source: str) -> dict[str, Any]:
    """One design from its architecture record and parameter estimate."""
    cost = estimate.get("cost") or {}
    modules = {}
    for name, v in (estimate.get("by_module") or {}).items():
        modules[str(name)] = v["total"] if isinstance(v, dict) else v
    for what, n in (("total_params", estimate["total_params"]), *modules.items()):
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"{what}: a parameter count must be an integer, not {n!r}")
    return {
        "source": source,
        "name": str(arch["name"]),
        "family": str(arch["family"]),
        "tiny": bool(arch.get("tiny")),
        "dimensions": _flat(arch.get("architecture") or {}),
        "pinned": list(arch.get("pinned") or []),
        "total_params": estimate["total_params"],
        "params_by_module": modules,
        "memory": inference_memory(estimate.get("memory") or {}),
        # The deployment precision (older reports name a NumPy dtype instead).
        "memory_dtype": (estimate.get("memory") or {}).get("precision") or (estimate.get("memory") or {}).get("dtype"),
        "latency": cost.get("latency_per_unit"),
        "latency_s": cost.get("latency_per_unit_s"),
        "binding_constraint": estimate.get("binding_constraint"),
    }


def design_of(comp, source: str) -> dict[str, Any]:
    from metagen.artifacts import architecture_yaml, params_estimate

    return design(architecture_yaml(comp), params_estimate(comp), source)


def _memory_text(mem: dict[str, int]) -> str:
    if "total" not in mem:
        return "not estimated"
    parts = " + ".join(f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in mem.items() if k != "total")
    return format_bytes(mem["total"]) + (f" ({parts})" if parts else "")


def summary_lines(d: dict[str, Any], folder: str | None = None) -> list[str]:
    """The short summary `synth` and `validate` print after their first line."""
    rows = [
        ("family", d["family"]),
        ("parameters", f"{format_count(d['total_params'])} ({d['total_params']:,})"),
        ("binding constraint", d["binding_constraint"]),
        ("inference memory", _memory_text(d["memory"]) + (f", {d['memory_dtype']}" if d["memory_dtype"] else "")),
    ]
    if d["latency"]:
        rows.append(("latency", d["latency"]))
    if folder is not None:
        rows.append(("folder", folder))
    width = max(len(k) for k, _ in rows)
    return [f"  {k + ':':<{width + 1}} {printable(str(v))}" for k, v in rows]


# ------------------------------------------------------------------ a run folder or a spec


def _fail(loc: Loc, message: str):
    raise CompileError([Diagnostic("error", loc, message)])


def load_run(folder: str) -> dict[str, Any]:
    """The design a `metagen synth` run folder records; a located error otherwise."""
    records = []
    for rel in (ARCHITECTURE, ESTIMATE):
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            _fail(Loc(folder), f"not a run folder of 'metagen synth': no {rel} in it")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            _fail(Loc(path), f"cannot read the run's record: {exc}")
        records.append(_parse(path, text))
    arch, estimate = records
    for path, record, keys in ((ARCHITECTURE, arch, ("name", "family")), (ESTIMATE, estimate, ("total_params",))):
        where = Loc(os.path.join(folder, path))
        if not isinstance(record, dict):
            _fail(where, "not a record of 'metagen synth': expected a mapping at the top")
        missing = [k for k in keys if k not in record]
        if missing:
            _fail(where, f"not a record of 'metagen synth': no {', '.join(repr(k) for k in missing)}")
    try:
        return design(arch, estimate, folder)
    except (TypeError, KeyError, AttributeError) as exc:
        _fail(Loc(os.path.join(folder, ESTIMATE)), f"not a record of 'metagen synth': {exc}")


def _not_json(word: str):
    raise ValueError(f"{word} is not a JSON number")  # Python's json reads NaN and Infinity


def _parse(path: str, text: str) -> Any:
    if path.endswith(".json"):
        try:
            return json.loads(text, parse_constant=_not_json)
        except json.JSONDecodeError as exc:
            _fail(Loc(path, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}")
        except ValueError as exc:
            _fail(Loc(path), f"not valid JSON: {exc}")
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark is not None else Loc(path)
        _fail(loc, f"not valid YAML: {getattr(exc, 'problem', None) or exc}")


# ------------------------------------------------------------------ metagen compare


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fields (dotted, flattened) in which two designs differ, `source` aside."""
    fa, fb = _flat(a), _flat(b)
    keys = sorted((set(fa) | set(fb)) - {"source"})
    return [k for k in keys if fa.get(k) != fb.get(k)]


def compare_json(a: dict[str, Any], b: dict[str, Any]) -> str:
    return json.dumps({"a": a, "b": b, "differs": differences(a, b)}, sort_keys=True, allow_nan=False, indent=2)


def _count(n: Any) -> str:
    return "-" if n is None else format_count(n)


def _bytes(n: Any) -> str:
    return "-" if n is None else format_bytes(n)


def compare_text(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two designs side by side; `*` marks the rows that differ."""
    rows: list[tuple[str, str, str] | str] = [
        ("", "A", "B"),
        ("source", a["source"], b["source"]),
        ("name", a["name"], b["name"]),
        ("family", a["family"], b["family"]),
        ("binding constraint", _text(a["binding_constraint"]), _text(b["binding_constraint"])),
        ("parameters", _count(a["total_params"]), _count(b["total_params"])),
        ("latency", _text(a["latency"]), _text(b["latency"])),
        "dimensions",
    ]
    for k in _keys(a["dimensions"], b["dimensions"]):
        rows.append(("  " + k, _text(a["dimensions"].get(k)), _text(b["dimensions"].get(k))))
    rows.append("parameters by module")
    for k in _keys(a["params_by_module"], b["params_by_module"]):
        rows.append(("  " + k, _count(a["params_by_module"].get(k)), _count(b["params_by_module"].get(k))))
    rows.append(f"inference memory ({a['memory_dtype'] or '-'} / {b['memory_dtype'] or '-'})")
    for k in _keys(a["memory"], b["memory"]):
        rows.append(("  " + k.replace("_", " "), _bytes(a["memory"].get(k)), _bytes(b["memory"].get(k))))
    cells = [r for r in rows if isinstance(r, tuple)]
    w0 = max(len(r[0]) for r in cells)
    w1 = max(len(r[1]) for r in cells)
    out = []
    for r in rows:
        if isinstance(r, str):
            out.append(f"  {r}")
            continue
        mark = "*" if r[1] != r[2] and r[0] not in ("", "source") else " "
        out.append(f"{mark} {r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}".rstrip())
    return "".join(printable(line) + "\n" for line in out)


def _keys(x: dict, y: dict) -> list[str]:
    """The keys of both, in `x`'s order, then the ones only `y` has."""
    return list(x) + [k for k in y if k not in x]


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"  # as the spec language writes them
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_text(i) for i in v) + "]"
    return str(v)


# ------------------------------------------------------------------ metagen explain


def _plain(arch: Any) -> dict[str, Any]:
    """The context's architecture (a family's config dataclass, or a dict) as a dict."""
    import dataclasses

    if dataclasses.is_dataclass(arch) and not isinstance(arch, type):
        return dataclasses.asdict(arch)
    return {k: _plain(v) if dataclasses.is_dataclass(v) else v for k, v in dict(arch).items()}


def _width_text(width: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in width.items())


def explain_text(comp) -> str:
    """Why each free dimension has its value, from the fitter's record (the "fit"
    entry of the report and its per-width trace)."""
    ctx = comp.ctx
    r = ctx.report
    fit = r.get("fit")
    arch = _flat(_plain(ctx.arch))
    lines = [
        f"{printable(ctx.spec.name)} ({ctx.family}): {format_count(r['total_params'])} parameters, "
        f"binding constraint: {r.get('binding_constraint')}"
    ]
    pinned = sorted(k for k in ctx.pinned if k in arch)
    lines.append(
        "pinned: " + (", ".join(f"{k} = {_text(arch[k])}" for k in pinned) if pinned else "nothing (every size is free)")
    )
    if fit is None:
        why = "--tiny keeps the topology at test-scale sizes" if r.get("tiny") else "this family has no fitted dimensions"
        lines.append(f"no fit: {why}; the sizes are:")
        lines += [f"  {k} = {_text(v)}" for k, v in arch.items() if isinstance(v, int) and not isinstance(v, bool)]
        return "\n".join(lines) + "\n"
    if not fit.get("free"):
        lines.append(f"no fit: {fit.get('note', 'every size dimension is pinned')}")
        lines += _rules_lines(fit)
        return "".join(printable(line) + "\n" for line in lines)
    lines.append("free: " + ", ".join(fit["free"]))
    lines.append(f"rule: {fit.get('rule')}")
    for k, v in fit.items():  # any further rule the fitter records
        if k not in ("free", "chosen", "rule", "rules", "candidates_evaluated", "note"):
            lines.append(f"{k.replace('_', ' ')}: {_text(v)}")
    lines += _rules_lines(fit)
    trace = r.get("fit_trace") or []
    chosen = fit.get("chosen", {})
    pick = next((t for t in trace if all(chosen.get(k) == v for k, v in t["width"].items()) and "depth" in t), None)
    lines.append("")
    lines.append(f"candidates: {len(trace)} widths, {fit.get('candidates_evaluated')} model builds")
    table = [("", "width", "depth", "parameters", "stopped by", "ideal depth", "outcome")]
    for t in trace:
        depth = t.get("depth")
        stop = t.get("limited_by", "")
        if depth is not None and depth == t.get("max_depth") and t.get("depth_limits", {}).get(stop) == depth:
            stop = f"depth limit ({depth})"
        table.append(
            (
                "*" if t is pick else "",
                _width_text(t["width"]),
                "-" if depth is None else str(depth),
                _count(t.get("params")),
                stop or "-",
                str(t.get("ideal_depth", "-")),
                t.get("outcome", ""),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        lines.append("  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip())
    lines.append("")
    lines.append("why each free dimension has its value:")
    lines += _why(fit, pick, trace, r)
    return "".join(printable(line) + "\n" for line in lines)


def _rules_lines(fit: dict) -> list[str]:
    """The design rules the family applied (compiler/design_rules.py), with sources."""
    from metagen.compiler.design_rules import RULES

    entries = fit.get("rules") or []
    if not entries:
        return []
    out = ["design rules applied (docs/families.md, 'Design rules'):"]
    names = list(dict.fromkeys(e["rule"] for e in entries))
    for name in names:
        out.append(f"  {name}: " + "; ".join(e["applied"] for e in entries if e["rule"] == name))
        if name in RULES:
            out.append(f"    source: {RULES[name].source}")
    return out


def _why(fit: dict, pick: dict | None, trace: list[dict], r: dict) -> list[str]:
    chosen = fit.get("chosen", {})
    free = set(fit.get("free", ()))
    if pick is None:
        return [f"  {k} = {_text(v)}" for k, v in chosen.items() if k in free]
    width_keys = [k for k in pick["width"] if k in free]
    depth_keys = [k for k in chosen if k not in pick["width"] and k in free]
    reaching = [t for t in trace if t.get("outcome") == "reaches the minimum"]
    out = []
    if width_keys:
        dims = ", ".join(f"{k} = {_text(chosen[k])}" for k in width_keys)
        if pick.get("outcome") == "reaches the minimum" and pick.get("depth") is None:
            why = (
                f"the depth is pinned; of the widths within every bound that reach the parameter minimum "
                f"({len(reaching)}), the one with the most parameters ({r.get('binding_constraint')} binds: it rejects the next larger width)"
            )
        elif pick.get("outcome") == "reaches the minimum" and "ideal_depth" not in pick:
            choice = str(fit.get("rule", "")).partition("among widths reaching the minimum, ")[2]
            why = f"of the widths whose model reaches the parameter minimum ({len(reaching)}), {choice}"
        elif pick.get("outcome") == "reaches the minimum":
            why = (
                f"of the widths whose model reaches the parameter minimum ({len(reaching)}), the one whose depth "
                f"({pick['depth']}) is closest to its ideal depth ({pick['ideal_depth']})"
            )
        else:
            why = (
                "no width reaches the parameter minimum; this is the largest model within every bound "
                f"(the binding constraint, {r.get('binding_constraint')}, stops growth)"
            )
        out.append(f"  {dims}: {why}")
    if depth_keys:
        dims = ", ".join(f"{k} = {_text(chosen[k])}" for k in depth_keys)
        limits = pick.get("depth_limits", {})
        bounds = ", ".join(f"{k} allows {v}" for k, v in limits.items())
        stop = pick.get("limited_by")
        if pick.get("depth") == pick.get("max_depth") and limits.get(stop) == pick.get("depth"):
            stop = f"the family's depth limit ({pick['depth']})"
        out.append(f"  {dims}: the deepest depth within every bound at this width ({bounds}); {stop} binds")
    return out
