"""docs/spec_language.md's key reference, generated from the schema so it cannot
drift: `python -m metagen.frontend.schema_doc > docs/spec_language.md`."""

from __future__ import annotations

from metagen.frontend import schema as S

INTRO = """# The MetaGen Spec Language (MSL 1.0)

A spec is a YAML (or JSON) mapping; the `.mg` DSL (docs/dsl.md) says the same things.
Every key is listed below with its type and default. "decided by the compiler" means
a pass chooses the value (family conventions, fitted sizes) and records its choice in
`spec_resolved.yaml`, so compiling `spec_resolved.yaml` gives the same model.

## Units

| kind | forms | notes |
| --- | --- | --- |
| parameters | `50M`, `1.5B`, `70B`, `125K`, `125000` | decimal: K = 10^3, M = 10^6, B = 10^9, T = 10^12; at most 10T; `G` is refused (did you mean `B`?), since `1G` reads like a memory size |
| memory | `512MB`, `8GB`, `1TB` (`GiB` etc. accepted) | binary: MB = 2^20 bytes, GB = 2^30, as GPU tools report; 1MB to 1PB |
| context | `512`, `32k`, `128k`, `1M` | k = 1024 tokens, M = 2^20; `∞`/`infinite` warns and means 1M |
| latency | `real-time`, `near-real-time`, `interactive`, `batch`, `offline`, `10ms`, `60 tok/s`, `2 img/s`, `30fps` | see docs/cost_model.md |
| rate | `60 tok/s`, `2 img/s`, `30fps`, `10 samples/s`, `1 mesh/s`, `200 requests/s` | an example noun per second (sample, mesh, request, query, pair, ...) is samples/s |
| duration | `12 hours`, `5 days`, `2 weeks` | |
| hardware | `8xA100`, `512xH100`, `H100`, `8xA100-80GB` | count x accelerator, one of docs/training.md's table; a variant follows `-` or `_` |
| data size | `100B tokens`, `1.28M samples`, `118k images`, `1M sentence pairs`, `5M rows` | a count of tokens, or of anything else (images, pairs, rows, meshes, ...: samples); suffix K, M, B, T in either case; a whole number, at least 1. Free text that is no such count (`unknown but large`, `5 TB`, a misspelt `tokns`) is kept as written with a note, and the training estimate does not use it |

Numbers are written in ASCII decimal digits, in every frontend alike: no leading
zero (`010` was octal 8 in YAML 1.1), no `0x`, `1_000` or `1:30`, no fullwidth or
other scripts' digits, at most 100 digits.

## Types: validate and `metagen schema` agree

What the JSON Schema (`metagen schema`) rejects, `metagen validate` rejects or warns
about. Three forms are read leniently, each with a warning that says how to write it
(`-Werror` makes them errors), because the meaning is plain and old specs use them:

| written | read as | warning's fix |
| --- | --- | --- |
| a number where text is wanted: `metagen_version: 1.0`, `name: 12` | the text `"1.0"`, `"12"` | write it in quotes |
| one value where a list is wanted: `inputs: text`, `objective: autoregressive` | a one-item list | write `[text]` |
| a word in another case or with spaces: `norm: RMSNorm`, `device: Edge` | `rmsnorm`, `edge` | write the listed word |

Everything else the schema rejects is an error: a string for a number (`layers: "12"`),
a fraction for an integer, a value out of range, a word not listed, a memory size
without a unit.

## The original MetaGen vocabulary

Specs written for the original MetaGen project are accepted unchanged
(docs/migrating.md): every key it names is here. Keys that shape the model are
used (`task.type` steers the choice among matching families, `task.num_classes`,
`task.embedding_dim` and the other task integers are read by the families that
build those tasks, `architecture.family` steers the choice too); keys marked
"recorded" below cannot change the model: they are kept in `spec_resolved.yaml`
(and the model card that quotes it), and one note per spec lists those written. A
task word in a modality list is read as the modality it produces, with a note (`outputs: [classification]` is `label`,
`object_detection` is `bounding_boxes`, `semantic_segmentation` is
`segmentation_mask`, `forecasting` is `time_series`). `training.alignment.method`,
`outputs.artifacts`, `evaluation.baselines` and `training.config.data_augmentation`
take one value or a list; an `architecture.components` item is a label or a
`{name, type}` mapping. `constraints.image_size`, `patch_size` and `latent_size` set
`architecture.image_size`, `patch_size` and `sample_size` when the architecture
section does not.

## Defaults worth knowing

- `constraints.parameter_budget.max` is the task's default: the size of the published
  model a practitioner starts that task from (1B for a language model, 87M, ViT-B/16's,
  for an image classifier; docs/families.md, "Per-task defaults"); `min` is 90% of max unless given (the
  fitter may go lower only when another constraint binds, and says which).
- `constraints.device` is `consumer_gpu`; `memory_budget` defaults to the device's
  capacity (docs/cost_model.md); `context_window` is 4k; `precision` (of the
  weights, for memory and latency) is the device's: int8 on edge and mobile, bf16
  elsewhere; `latency` is `batch` (no bound).
- `architecture.family` is `auto`: modality and objective pick the family
  (docs/families.md). Unpinned conventions come from the family's preset; for new
  decoder LMs that is MetaGen's modern default (docs/design.md).

## Keys

| key | type | default | meaning |
| --- | --- | --- | --- |
"""


def _type(f: S.Field) -> str:
    if f.kind == S.ENUM:
        return "one of " + ", ".join(f"`{c}`" for c in f.choices) + (" (others warn)" if f.open_choices else "")
    if f.kind == S.LIST:
        return f"list of {_type(f.item)}"
    if f.kind in (S.INT, S.FLOAT) and (f.minimum is not None or f.maximum is not None):
        lo = "" if f.minimum is None else f"{f.minimum:g}"
        hi = "" if f.maximum is None else f"{f.maximum:g}"
        return f"{f.kind} [{lo}, {hi}]"
    if f.kind == S.STR and f.choices:
        return "one of " + ", ".join(f"`{c}`" for c in f.choices)
    return {S.STR: "text", S.MAP: "section"}.get(f.kind, f.kind)


def _meaning(f: S.Field) -> str:
    extra = []
    if f.one_or_many:
        extra.append("one value or a list")
    if f.scalar_key:
        extra.append(f"a mapping, or one value meaning `{{{f.scalar_key}: value}}`")
    aliases = f.aliases or (f.item.aliases if f.item is not None else ())
    if aliases:
        extra.append("task words read as modalities, with a note: " + ", ".join(f"`{w}` -> `{m}`" for w, m in aliases))
    if f.recorded:
        extra.append("recorded: does not affect the model")
    return f.doc + ("" if not extra else " (" + "; ".join(extra) + ")")


def _default(f: S.Field) -> str:
    if f.required:
        return "required"
    if f.kind == S.MAP:
        return ""
    if f.default is None:
        return "decided by the compiler" if f.kind != S.STR else "none"
    return f"`{f.default}`"


def rows(field: S.Field = S.SPEC, prefix: str = "") -> list[str]:
    out = []
    for f in field.fields:
        key = prefix + f.name
        out.append(f"| `{key}` | {_type(f)} | {_default(f)} | {_meaning(f)} |")
        if f.kind == S.MAP:
            out.extend(rows(f, key + "."))
        elif f.kind == S.LIST and f.item is not None and f.item.kind == S.MAP:
            out.extend(rows(f.item, key + "[]."))
    return out


def markdown() -> str:
    return INTRO + "\n".join(rows()) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
