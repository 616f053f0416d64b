"""Which family a spec's modality, objective and family select.

Each family declares the combinations that select it (`Family.rules`); `RULES` is
their union in catalogue order. The tables in docs/families.md are generated from
the same declarations (`python -m metagen.compiler.select < docs/families.md`
prints the file with them rewritten), and an unmatched
combination gets a diagnostic naming what is supported.
"""

from __future__ import annotations

from metagen.compiler.families import FAMILIES, Family, Rule
from metagen.diagnostics import DiagnosticSink
from metagen.frontend.schema import MODALITIES, TUTORIAL_MODALITIES
from metagen.frontend.spec_builder import Spec


def rules() -> list[tuple[Rule, Family]]:
    return [(rule, family) for family in FAMILIES.values() for rule in family.rules]


def built_modalities() -> frozenset[str]:
    """The modalities some family's rule names: the others (3d, point_cloud, taste)
    get the best-effort model."""
    return frozenset(m for rule, _ in rules() for m in rule.inputs + rule.outputs)


def out_of_reach(spec: Spec) -> list[str]:
    """The spec's modalities no family builds, in the order written."""
    built = built_modalities()
    seen = list(dict.fromkeys(list(spec.modality.inputs or []) + list(spec.modality.outputs or [])))
    return [m for m in seen if m not in built]


def best_effort_reason(spec: Spec) -> tuple[str, str] | None:
    """Why this spec gets the best-effort model, and the modality list to point
    at: a modality no family builds, several outputs no rule combines (a hybrid
    design), or inputs -> outputs of the wider vocabulary that no rule pairs.
    None when the families' rules decide (an unmatched combination of the
    tutorial's six modalities stays an error)."""
    ins = list(dict.fromkeys(spec.modality.inputs or []))
    outs = list(dict.fromkeys(spec.modality.outputs or []))
    unread = [m for m in out_of_reach(spec) if m in MODALITIES]
    if unread:
        return f"no family builds {' or '.join(repr(m) for m in unread)} yet", "outputs" if set(unread) & set(outs) else "inputs"
    if (set(ins) | set(outs)) - set(MODALITIES):
        return None  # unknown words: the spec builder warned at each
    pairs = {(frozenset(r.inputs), frozenset(r.outputs)) for r, _ in rules()}
    if len(outs) > 1 and not any(frozenset(outs) == o for _, o in pairs):
        return f"no family builds the outputs {' + '.join(outs)} together (a hybrid design)", "outputs"
    if (frozenset(ins), frozenset(outs)) not in pairs and not set(ins + outs) <= set(TUTORIAL_MODALITIES):
        return f"no family builds {' + '.join(ins)} -> {' + '.join(outs)} yet", "outputs"
    return None


def matching_rule(spec: Spec) -> tuple[Rule, Family] | None:
    """The rule the spec's modality and objective meet, with its family; None when
    none does. Rules naming the written `architecture.family` come first (a rule
    that names families matches only those); among several matches, the one whose
    family answers to the written family, then the one that performs the written
    `task.type`, then catalogue order. The model card quotes it as the reason."""
    ins = frozenset(spec.modality.inputs or [])
    outs = frozenset(spec.modality.outputs or [])
    objectives = spec.training.objective or []
    objective = objectives[0] if objectives else None
    unknown = bool((ins | outs) - set(MODALITIES)) or best_effort_reason(spec) is not None
    written = spec.architecture.family
    task = spec.task.type if spec.task.given("type") else None
    matches = []
    for rule, fam in rules():
        if rule.families and written not in rule.families:
            continue
        if unknown:
            if rule.unknown_modalities:
                matches.append((rule, fam))
        elif frozenset(rule.inputs) == ins and frozenset(rule.outputs) == outs and objective in rule.objectives:
            matches.append((rule, fam))
    if not matches:
        return None

    def preference(match: tuple[Rule, Family]) -> tuple[int, int, int]:
        rule, fam = match
        return (
            0 if rule.families else 1,
            0 if written != "auto" and written in fam.accepts_families else 1,
            0 if task is not None and task in fam.tasks else 1,
        )

    return min(matches, key=preference)  # min is stable: catalogue order breaks ties


def select_family(spec: Spec, sink: DiagnosticSink) -> str | None:
    match = matching_rule(spec)
    if match is None:
        ins = frozenset(spec.modality.inputs or [])
        outs = frozenset(spec.modality.outputs or [])
        objectives = spec.training.objective or []
        objective = objectives[0] if objectives else None
        what = f"{_modalities(ins)} -> {_modalities(outs)}" + (f" with objective '{objective}'" if objective else "")
        sink.error(
            spec.modality.loc(),
            f"no model family for {what}; supported: {supported_summary()} (see docs/families.md)",
        )
        return None
    return match[1].name


def _modalities(ms) -> str:
    return " + ".join(sorted(ms)) or "nothing"


def supported_summary() -> str:
    """'text -> text (autoregressive or none), ...' from the families' rules."""
    combos: dict[tuple[str, str], list[str]] = {}
    for rule, _ in rules():
        if rule.unknown_modalities:
            continue
        objs = combos.setdefault((_modalities(rule.inputs), _modalities(rule.outputs)), [])
        objs.extend(o or "none" for o in rule.objectives)
    return "; ".join(f"{a} -> {b} ({_either(objs)})" for (a, b), objs in combos.items())


def _either(words: list[str]) -> str:
    words = [w for w in words if w != "none"] + [w for w in words if w == "none"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def combinations_table() -> str:
    """docs/families.md's combinations table: one row per rule."""
    lines = ["| inputs | outputs | objective | family | notes |", "| --- | --- | --- | --- | --- |"]
    for rule, fam in rules():
        if rule.unknown_modalities:
            cells = ["any unknown modality", "anything", "anything"]
        else:
            cells = [", ".join(rule.inputs), ", ".join(rule.outputs), ", ".join(o or "none" for o in rule.objectives)]
        when = f"with `family: {' or '.join(rule.families)}`" if rule.families else ""
        note = " " + "; ".join(x for x in (when, rule.note) if x) + " "
        note = note if note.strip() else " "
        lines.append(f"| {' | '.join(cells)} | `{fam.name}` |{note}|")
    return "\n".join(lines) + "\n"


def tiny_table() -> str:
    """docs/families.md's --tiny table: one row per family."""
    lines = ["| family | tiny sizes |", "| --- | --- |"]
    lines += [f"| `{fam.name}` | {fam.tiny_doc} |" for fam in FAMILIES.values()]
    return "\n".join(lines) + "\n"


def keys_table() -> str:
    """docs/families.md's keys table: the architecture keys each family reads."""
    lines = ["| family | reads |", "| --- | --- |"]
    for fam in FAMILIES.values():
        parts = [", ".join(f"`{k}`" for k in fam.config.spec_keys())]
        for name, tower in fam.config.towers().items():
            parts.append(f"`{name}`: " + ", ".join(f"`{k}`" for k in tower.spec_keys()))
        lines.append(f"| `{fam.name}` | {'; '.join(p for p in parts if p)} |")
    return "\n".join(lines) + "\n"


def defaults_table() -> str:
    """docs/families.md's per-task defaults: each family's parameter budget when the
    spec gives none, and the published design it is the size of."""
    from metagen.frontend.units import format_count

    lines = ["| family | default parameter_budget.max | the practitioner's starting point |", "| --- | --- | --- |"]
    for fam in FAMILIES.values():
        lines.append(f"| `{fam.name}` | {format_count(fam.default_budget)} | {fam.default_budget_source} |")
    return "\n".join(lines) + "\n"


def _rules_table() -> str:
    from metagen.compiler.design_rules import rules_table

    return rules_table()


def _published_table() -> str:
    from metagen.compiler.published import published_table

    return published_table()


def _tutorial_table() -> str:
    from metagen.compiler.published import tutorial_table

    return tutorial_table()


GENERATED = {
    "combinations": combinations_table,
    "tiny": tiny_table,
    "keys": keys_table,
    "defaults": defaults_table,
    "rules": _rules_table,
    "published": _published_table,
    "tutorial": _tutorial_table,
}


def render_doc(text: str) -> str:
    """docs/families.md with every generated block rewritten from the declarations."""
    for name, table in GENERATED.items():
        start, end = f"<!-- generated: {name} -->\n", "<!-- end generated -->\n"
        a = text.index(start) + len(start)
        b = text.index(end, a)
        text = text[:a] + table() + text[b:]
    return text


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_doc(sys.stdin.read()))
