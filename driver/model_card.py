"""The run folder's `README.md`: a model card in Hugging Face's format, stating only
what the compiler knows.

Every figure on the card is read from a record the compilation already made (the
resolved spec, the IR's parameter counts, the report behind `params_estimate.json`
and `training_report.json`) or, in its verification section, from what `metagen
verify RUN_DIR` printed. Nothing is measured or invented here, and the text is a
function of the compilation and the seed alone (no dates, no paths), so the same
spec gives the same card byte for byte.

`metagen verify RUN_DIR` replaces only the part between VERIFY_BEGIN and VERIFY_END.
"""

from __future__ import annotations

from typing import Any

import yaml

from metagen.compiler.families import FAMILIES
from metagen.frontend.units import format_bytes, format_count
from metagen.ir.graph import Layer, Repeat, Sub
from metagen.pipeline import Compilation

VERIFY_BEGIN = "<!-- metagen verify: begin -->"
VERIFY_END = "<!-- metagen verify: end -->"

FRAMEWORK_TAGS = {"torch": "pytorch", "flax": "jax", "onnx": "onnx"}  # outputs.targets -> the Hub's library tags


def _n(x: int) -> str:
    return f"{x:,}"


def _flops(x: float) -> str:
    return f"{x:.3e}"


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(i) for i in v) + "]"
    return str(v).replace("|", "\\|")


def _sentence(text: str) -> str:
    """`text` as the start of a sentence, without its final full stop."""
    text = text.rstrip(".")
    return text[:1].upper() + text[1:]


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


# ------------------------------------------------------------------ front matter


def front_matter(comp: Compilation) -> dict[str, Any]:
    spec, family = comp.spec, comp.ctx.family
    meta: dict[str, Any] = {"library_name": "metagen"}
    task = FAMILIES[family].hub_task(comp.ctx.arch)
    if task:
        meta["pipeline_tag"] = task
    if spec.get("license"):
        meta["license"] = spec.get("license")
    tags = ["metagen", family]
    tags += [FRAMEWORK_TAGS[t] for t in dict.fromkeys(spec.outputs.targets) if t in FRAMEWORK_TAGS]
    tags += list(spec.training.objective or [])
    tags += [m for m in dict.fromkeys(list(spec.modality.inputs or []) + list(spec.modality.outputs or []))]
    if comp.ctx.report.get("tiny"):
        tags.append("tiny")
    meta["tags"] = list(dict.fromkeys(tags))
    return meta


# ------------------------------------------------------------------ sections


def _family_section(comp: Compilation) -> list[str]:
    from metagen.compiler.families import FAMILIES
    from metagen.compiler.select import _either, matching_rule

    ctx = comp.ctx
    fam = FAMILIES[ctx.family]
    spec = comp.spec
    ins, outs = list(spec.modality.inputs or []), list(spec.modality.outputs or [])
    objective = (spec.training.objective or [None])[0]
    lines = ["## Family", "", f"`{fam.name}`: {fam.doc}", ""]
    match = matching_rule(spec)
    said = f"the spec's modality is {' + '.join(ins) or 'nothing'} -> {' + '.join(outs) or 'nothing'} with " + (
        f"objective `{objective}`" if objective else "no objective"
    )
    if match is None or match[1].name != fam.name:  # cannot happen after select-family; say only what is known
        lines.append(f"Chosen by the compiler's family selection; {said}.")
    elif match[0].unknown_modalities:
        lines.append(f"Chosen because {said}, and a modality outside the spec language's falls to this family.")
    else:
        rule = match[0]
        objs = _either([f"`{o}`" if o else "none" for o in rule.objectives])
        lines.append(
            f"Chosen because {said}: the family's selection rule maps {' + '.join(sorted(rule.inputs))} -> "
            f"{' + '.join(sorted(rule.outputs))} with objective {objs} to it"
            + (f" ({rule.note})." if rule.note else ".")
        )
    return lines + [""]


def _architecture_section(comp: Compilation) -> list[str]:
    from metagen.artifacts import resolved_architecture
    from metagen.explain import _flat

    ctx = comp.ctx
    arch = _flat(resolved_architecture(comp))
    pinned = set(ctx.pinned)
    rows = [(f"`{k}`", v, "spec" if k in pinned else "compiler") for k, v in arch.items() if k != "family"]
    lines = ["## Architecture", ""]
    if ctx.report.get("tiny"):
        lines += ["Compiled with `--tiny`: the topology of the spec at test-scale sizes, not the spec's sizes.", ""]
    lines += _table(("dimension", "value", "set by"), rows)
    fit = ctx.report.get("fit") or {}
    if fit.get("free"):
        lines += ["", f"Fitted: {', '.join(f'`{k}`' for k in fit['free'])}; rule: {fit.get('rule')}. "
                      "`metagen explain` on the spec shows every candidate."]
    return lines + [""]


def _parameters_section(comp: Compilation) -> list[str]:
    from metagen.ir import ops

    model = comp.model
    total = model.param_count()
    lines = ["## Parameters", "", f"{_n(total)} parameters ({format_count(total)}), exact: counted from the IR, "
             "which the generated PyTorch and Flax modules and the ONNX graph hold alike (`metagen verify` "
             "compares the counts).", ""]
    for m in model.modules.values():
        own = sum(n for _, n in model.module_param_counts(m.name))
        lines.append(f"### `{m.name}`" + (" (top)" if m.name == model.top else "") + f": {_n(own)}")
        lines.append("")
        rows = [(f"`{name}`", "parameter", f"{list(p.type.shape)}", _n(p.numel)) for name, p in m.params.items()]
        for name, child in m.children.items():
            count = model.child_param_count(child)
            if isinstance(child, Layer):
                shapes = ", ".join(f"{k} {list(p.type.shape)}" for k, p in ops.layer_params(child).items())
                rows.append((f"`{name}`", child.op, shapes, _n(count)))
            elif isinstance(child, Sub):
                rows.append((f"`{name}`", f"`{child.module}`", "", _n(count)))
            else:
                rows.append((f"`{name}`", f"{child.count} x `{child.module}`", "", f"{_n(count)} ({_n(count // child.count)} each)"))
        lines += _table(("child", "kind", "shapes", "parameters"), rows) + [""]
    return lines


def _diagram_section(comp: Compilation) -> list[str]:
    model = comp.model
    ids = {name: f"m{i}" for i, name in enumerate(model.modules)}
    lines = ["## Module structure", "", "```mermaid", "graph TD"]
    for name in model.modules:
        n = sum(c for _, c in model.module_param_counts(name))
        lines.append(f'  {ids[name]}["{name}<br/>{_n(n)} parameters"]')
    for name, m in model.modules.items():
        for cname, child in m.children.items():
            if isinstance(child, Sub):
                lines.append(f'  {ids[name]} -->|"{cname}"| {ids[child.module]}')
            elif isinstance(child, Repeat):
                lines.append(f'  {ids[name]} -->|"{cname} x{child.count}"| {ids[child.module]}')
        layers = [(c, ch.op) for c, ch in m.children.items() if isinstance(ch, Layer)]
        if layers:
            text = ", ".join(f"{c}: {op}" for c, op in layers)
            lines.append(f'  {ids[name]}_layers(["{text}"])')
            lines.append(f"  {ids[name]} -.- {ids[name]}_layers")
    return lines + ["```", ""]


def _memory_section(comp: Compilation) -> list[str]:
    r = comp.ctx.report
    mem = r.get("memory") or {}
    lines = ["## Memory and latency estimates", "",
             "Estimates of MetaGen's analytical cost model (docs/cost_model.md), computed from the IR; not measurements.", ""]
    if mem:
        precision = mem.get("precision")
        how = "the device's default" if mem.get("precision_is_default") else "the spec's"
        lines.append(f"Assumptions: weights in {precision} ({how}), batch {mem.get('batch', 1)}, "
                     f"sequence of {mem.get('context_window')} (the context window).")
        lines.append("")
        rows = []
        for phase in ("inference", "training"):
            for k, v in (mem.get(phase) or {}).items():
                rows.append((phase, k.replace("_", " "), format_bytes(v), _n(v)))
        lines += _table(("phase", "part", "size", "bytes"), rows) + [""]
        lines.append("Training: one sample at the context, fp32 master weights, gradients and AdamW's two moments "
                     "(16 bytes per parameter), activations at 16 bits.")
        lines.append("")
    cost = r.get("cost")
    if cost:
        dev = cost.get("device") or {}
        lines.append(
            f"Latency: {cost.get('latency_per_unit')} ({cost.get('bound_by')} bound) on a `{dev.get('class')}` "
            f"device modelled as {dev.get('example')}: peak {_flops(dev.get('peak_flops', 0))} FLOP/s at "
            f"{dev.get('utilization')} utilization, {format_bytes(int(dev.get('bandwidth_bytes_per_s', 0)))}/s memory bandwidth; "
            f"{_n(cost.get('flops_per_unit', 0))} FLOPs and {_n(cost.get('bytes_per_unit', 0))} bytes moved per {cost.get('unit')}."
        )
        if cost.get("throughput_per_s") is not None:
            lines.append(f"Throughput: {cost['throughput_per_s']} {cost.get('unit')}/s at batch {cost.get('throughput_batch')}.")
        lines.append("")
    else:
        lines += ["Latency: not estimated" + (" (`--tiny`)." if r.get("tiny") else "."), ""]
    lines += ["## Binding constraint", "", f"`{r.get('binding_constraint')}`"]
    budget = r.get("budget")
    if budget:
        lines[-1] += (f": {_n(r['total_params'])} parameters of a budget of {_n(budget['min'])} to {_n(budget['max'])} "
                      f"({budget.get('utilization_of_max')} of the maximum).")
    return lines + [""]


def _training_section(comp: Compilation, seed: int) -> list[str]:
    from metagen.training import training_report

    report, loss, cfg = training_report(comp, seed)
    lines = ["## Training", ""]
    if cfg is None:
        lines += [f"No training program: {report.get('reason')}.", ""]
    else:
        lines.append(f"Objective `{cfg['objective']}`; the generated `train.py` programs ({', '.join(f'`{p}`' for p in report['programs'])}) use:")
        lines.append("")
        keys = ("optimizer", "schedule", "learning_rate", "min_lr_ratio", "warmup", "warmup_fraction", "weight_decay",
                "betas", "eps", "grad_clip", "batch_size", "seq_len", "steps", "epochs", "seed", "world_size")
        lines += _table(("setting", "value"), [(k, "-" if cfg.get(k) is None else cfg[k]) for k in keys if k in cfg]) + [""]
    est = report.get("estimate")
    if est:
        data = est.get("data")
        if data:
            lines.append(f"Data: {_n(int(data['amount']))} {data['unit']}" + (f" (assumed: {data['assumed']})." if data.get("assumed") else " (from the spec)."))
        if "training_flops" in est:
            lines.append(f"Compute: {_flops(est['training_flops'])} FLOPs, by {est.get('flops_rule')}.")
        hw = est.get("hardware")
        if hw:
            if "estimated" in est:
                lines.append(f"Time: {est['estimated']} on {hw['count']} x {hw['accelerator']} at {est.get('utilization')} utilization"
                             + (f"; the spec's duration {'fits' if est['fits'] else 'does not fit'}." if "fits" in est else "."))
            elif hw.get("note"):
                lines.append(f"Time: not estimated ({hw['note']}).")
        lines.append("")
    return lines


def _use_section(comp: Compilation, seed: int) -> list[str]:
    from metagen.compiler.families import FAMILIES

    ctx, spec = comp.ctx, comp.spec
    fam = FAMILIES[ctx.family]
    tasks = ", ".join(fam.tasks) or "none declared"
    lines = ["## Intended use", "",
             f"{_sentence(fam.built or fam.doc)} (tasks: {tasks}), generated from its spec for research and "
             "development: the code in this folder builds, trains and runs it.", "",
             "## Limitations", "",
             f"- Untrained: `init({seed})` in the generated code draws random initial weights; nothing here was trained "
             "or evaluated on data.",
             "- Every estimate above comes from the analytical cost model, not from a measurement."]
    if ctx.report.get("tiny"):
        lines.append("- Compiled with `--tiny`: test-scale sizes, not the spec's.")
    for rule in fam.rules:
        if rule.note and not rule.unknown_modalities and set(rule.inputs) == set(spec.modality.inputs or []) \
                and set(rule.outputs) == set(spec.modality.outputs or []):
            lines.append(f"- {_sentence(rule.note)}.")
    evaluation = spec.get("evaluation")
    named = [
        *(evaluation.get("metrics") or []), *(evaluation.get("benchmarks") or []), *(evaluation.get("baselines") or [])
    ] if evaluation is not None else []
    if named:
        lines.append(f"- The spec's evaluation ({', '.join(named)}) is recorded, not run.")
    gov = spec.training.get("data").get("governance") if spec.training.get("data") is not None else None
    if gov is not None:
        for k in ("pii", "copyright"):
            if gov.get(k):
                lines.append(f"- Training data {k} (as the spec states it): {gov.get(k)}.")
    return lines + [""]


def _verification_block(text: str | None) -> list[str]:
    body = ["Not run. `metagen verify RUN_DIR` runs every backend on identical weights and inputs and writes its "
            "result here."] if text is None else text.rstrip("\n").split("\n")
    return [VERIFY_BEGIN, "## Verification", "", *body, VERIFY_END, ""]


def verification_text(report: str, ok: bool, seed: int) -> str:
    """The verification section's body: the verdict and `metagen verify`'s own table."""
    verdict = "passed" if ok else "FAILED"
    return (f"`metagen verify` {verdict}: every backend run on `init({seed})`'s weights and the same example inputs, "
            "each output compared with the reference backend under CONTRACT §5's tolerance.\n\n"
            "```text\n" + report.rstrip("\n") + "\n```\n")


# ------------------------------------------------------------------ the card


def model_card(comp: Compilation, seed: int, verification: str | None = None) -> str:
    from metagen.artifacts import _yaml, resolved_spec

    spec = comp.spec
    head = yaml.safe_dump(front_matter(comp), sort_keys=False, allow_unicode=True, width=100)
    lines = ["---", head.rstrip("\n"), "---", "", f"# {spec.name}", ""]
    if spec.get("description"):
        lines += [str(spec.get("description")), ""]
    lines += ["This card was written by `metagen synth` from the spec: every figure is the compiler's, counted from "
              "the IR or estimated by its cost model, and says which.", ""]
    lines += _family_section(comp)
    lines += _architecture_section(comp)
    lines += _parameters_section(comp)
    lines += _diagram_section(comp)
    lines += _memory_section(comp)
    lines += _training_section(comp, seed)
    lines += _use_section(comp, seed)
    lines += _verification_block(verification)
    lines += ["## Spec", "", "The resolved spec (`spec_resolved.yaml`): every dimension and convention as compiled.", "",
              "```yaml", _yaml(resolved_spec(comp)).decode("utf-8").rstrip("\n"), "```"]
    return "\n".join(lines) + "\n"


def with_verification(card: str, verification: str) -> str | None:
    """`card` with its verification section replaced; None when it has none (a card
    that was not written by `metagen synth`)."""
    a, b = card.find(VERIFY_BEGIN), card.find(VERIFY_END)
    if a < 0 or b < a:
        return None
    end = b + len(VERIFY_END) + (1 if card[b + len(VERIFY_END):].startswith("\n") else 0)
    return card[:a] + "\n".join(_verification_block(verification)) + card[end:]
