"""Which family a spec's modality, objective and family select.

The table in docs/families.md is generated from `RULES`; an unmatched combination
gets a diagnostic naming what is supported.
"""

from __future__ import annotations

from metagen.diagnostics import DiagnosticSink
from metagen.frontend.schema import MODALITIES
from metagen.frontend.spec_builder import Spec

# (inputs, outputs, objective) -> family. Objective None matches a spec that names none.
RULES: list[tuple[frozenset, frozenset, str | None, str]] = [
    (frozenset({"text"}), frozenset({"text"}), "autoregressive", "decoder_lm"),
    (frozenset({"text"}), frozenset({"text"}), None, "decoder_lm"),
    (frozenset({"text"}), frozenset({"text"}), "masked", "masked_lm"),
    (frozenset({"image"}), frozenset({"label"}), "classification", "vit"),
    (frozenset({"image"}), frozenset({"label"}), None, "vit"),
    # Tutorial step 5 writes outputs ["image"] for a classifier; vit warns that it outputs class logits.
    (frozenset({"image"}), frozenset({"image"}), "classification", "vit"),
    (frozenset({"text"}), frozenset({"label"}), "classification", "encoder"),
    (frozenset({"text"}), frozenset({"label"}), None, "encoder"),
    (frozenset({"text", "image"}), frozenset({"text", "image"}), "contrastive", "clip"),
    (frozenset({"text", "image"}), frozenset({"text", "image"}), None, "clip"),
    (frozenset({"text", "image"}), frozenset({"embedding"}), "contrastive", "clip"),
    (frozenset({"text", "image"}), frozenset({"image"}), "diffusion", "diffusion_unet"),
    (frozenset({"text", "image"}), frozenset({"image"}), None, "diffusion_unet"),
    # Text-to-image written without the noisy image among the inputs: the same model.
    (frozenset({"text"}), frozenset({"image"}), "diffusion", "diffusion_unet"),
    (frozenset({"text"}), frozenset({"image"}), None, "diffusion_unet"),
    (frozenset({"audio"}), frozenset({"audio"}), "autoregressive", "audio_lm"),
    (frozenset({"audio"}), frozenset({"audio"}), None, "audio_lm"),
]


def select_family(spec: Spec, sink: DiagnosticSink) -> str | None:
    from metagen.compiler.families import FAMILIES

    ins = frozenset(spec.modality.inputs or [])
    outs = frozenset(spec.modality.outputs or [])
    objectives = spec.training.objective or []
    objective = objectives[0] if objectives else None
    known = set(MODALITIES)
    if (ins | outs) - known:
        family = "fallback"
    else:
        family = None
        for rin, rout, robj, fam in RULES:
            if rin == ins and rout == outs and (robj == objective):
                family = fam
                break
    if family is None or family not in FAMILIES:
        what = f"{_modalities(ins)} -> {_modalities(outs)}" + (f" with objective '{objective}'" if objective else "")
        sink.error(
            spec.modality.loc(),
            f"no model family for {what}; supported: {supported_summary()} (see docs/families.md)",
        )
        return None
    return family


def _modalities(ms: frozenset) -> str:
    return " + ".join(sorted(ms)) or "nothing"


def supported_summary() -> str:
    """'text -> text (autoregressive or none), ...' from RULES."""
    from metagen.compiler.families import FAMILIES

    combos: dict[tuple[str, str], list[str]] = {}
    for rin, rout, robj, fam in RULES:
        if fam in FAMILIES:
            combos.setdefault((_modalities(rin), _modalities(rout)), []).append(robj or "none")
    return "; ".join(f"{a} -> {b} ({_either(objs)})" for (a, b), objs in combos.items())


def _either(words: list[str]) -> str:
    words = [w for w in words if w != "none"] + [w for w in words if w == "none"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
