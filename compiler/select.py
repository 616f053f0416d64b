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
from metagen.frontend.schema import MODALITIES
from metagen.frontend.spec_builder import Spec


def rules() -> list[tuple[Rule, Family]]:
    return [(rule, family) for family in FAMILIES.values() for rule in family.rules]


def matching_rule(spec: Spec) -> tuple[Rule, Family] | None:
    """The first rule the spec's modality and objective meet (rules naming the written
    `architecture.family` first, then catalogue order), with
    its family; None when none does. The model card quotes it as the reason."""
    ins = frozenset(spec.modality.inputs or [])
    outs = frozenset(spec.modality.outputs or [])
    objectives = spec.training.objective or []
    objective = objectives[0] if objectives else None
    unknown = bool((ins | outs) - set(MODALITIES))
    written = spec.architecture.family
    # Rules that name the written family first, then the rest, each in catalogue order.
    for rule, fam in sorted(rules(), key=lambda rf: not rf[0].families):
        if rule.families and written not in rule.families:
            continue
        if unknown:
            if rule.unknown_modalities:
                return rule, fam
        elif frozenset(rule.inputs) == ins and frozenset(rule.outputs) == outs and objective in rule.objectives:
            return rule, fam
    return None


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
