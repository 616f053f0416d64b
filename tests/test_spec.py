"""The YAML frontend: defaults, units, and the exact diagnostics bad specs get."""

from __future__ import annotations

import textwrap

import pytest

from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.frontend import units
from metagen.frontend.schema import SPEC, to_json_schema
from metagen.frontend.spec_builder import build_spec
from metagen.frontend.yaml_frontend import parse_yaml
from metagen.pipeline import compile_spec


def diagnose(tmp_path, text: str) -> list[str]:
    """Every diagnostic a spec gets, rendered without the source echo."""
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    sink = DiagnosticSink()
    try:
        compile_spec(str(path), sink)
    except CompileError as exc:
        for d in exc.diagnostics:
            if d not in sink.items:
                sink.items.append(d)
    return [f"{d.loc.line}:{d.loc.col}: {d.severity}: {d.message}" for d in sorted(sink.items, key=lambda d: d.loc)]


HEAD = """\
metagen_version: "1.0"
name: "t"
modality:
  inputs: ["text"]
  outputs: ["text"]
"""


def test_unknown_key_gets_did_you_mean(tmp_path):
    assert diagnose(tmp_path, HEAD + "constraints:\n  paramter_budget:\n    max: 5M\n") == [
        "7:3: error: unknown key \"paramter_budget\" in 'constraints' (did you mean \"parameter_budget\"?)"
    ]


def test_top_level_unknown_key(tmp_path):
    assert diagnose(tmp_path, HEAD + "archtecture:\n  layers: 2\n") == [
        "6:1: error: unknown key \"archtecture\" at the top level (did you mean \"architecture\"?)"
    ]


def test_wrong_type_and_enum(tmp_path):
    out = diagnose(tmp_path, HEAD + "architecture:\n  layers: two\n  activation: gelu2\n")
    assert out == [
        "7:11: error: 'architecture.layers' must be an integer, not a string 'two'",
        "8:15: error: 'architecture.activation' must be one of \"gelu\", \"gelu_tanh\", \"quick_gelu\", "
        "\"relu\", \"silu\", \"swiglu\", \"geglu\", \"tanh\", not \"gelu2\" (did you mean \"gelu\"?)",
    ]


def test_bad_units(tmp_path):
    out = diagnose(
        tmp_path,
        HEAD
        + "constraints:\n  parameter_budget:\n    max: 5Q\n  memory_budget: 8\n  context_window: 12q\n",
    )
    assert out == [
        "8:10: error: 'constraints.parameter_budget.max': unknown suffix 'Q' in '5Q'; use K, M, B or T (e.g. \"500M\")",
        "9:18: error: 'constraints.memory_budget': memory budget needs a unit: write e.g. \"512MB\" or \"8GB\"",
        "10:19: error: 'constraints.context_window': cannot read '12q' as a context window; "
        "write e.g. \"512\", \"32k\", \"128k\", \"1M\"",
    ]


def test_min_greater_than_max(tmp_path):
    out = diagnose(tmp_path, HEAD + "constraints:\n  parameter_budget:\n    max: 100M\n    min: 200M\n")
    assert out == [
        "9:10: error: 'constraints.parameter_budget.min' (200M) is larger than 'max' (100M); min must be at most max"
    ]


def test_out_of_range_value_names_the_range(tmp_path):
    out = diagnose(tmp_path, HEAD + "architecture:\n  layers: 0\n")
    assert out == ["7:11: error: 'architecture.layers' = 0 is out of range; the allowed range is 1 to 1024"]


def test_malformed_yaml(tmp_path):
    out = diagnose(tmp_path, HEAD + "constraints: [1, 2\n")
    assert len(out) == 1 and out[0].startswith("7:1: error: malformed YAML") or out[0].startswith("6:")


def test_missing_required(tmp_path):
    out = diagnose(tmp_path, 'metagen_version: "1.0"\nname: x\n')
    assert out == ["1:1: error: missing required key 'modality'"]


def test_unsupported_modality_warns_and_typo_errors(tmp_path):
    sink = DiagnosticSink()
    tree = parse_yaml(HEAD.replace('["text"]\n  outputs', '["taste"]\n  outputs'), "s.yaml")
    build_spec(tree, sink)
    assert [f"{d.loc.line}:{d.loc.col}: {d.severity}: {d.message}" for d in sink.items] == [
        '4:12: warning: unsupported modality "taste"; MetaGen builds a best-effort model for it'
    ]
    # A near-miss still builds the best-effort model (the tutorial's "vibes" is one
    # edit from "video"), but the warning says what was probably meant.
    sink = DiagnosticSink()
    build_spec(parse_yaml(HEAD.replace('outputs: ["text"]', 'outputs: ["txt"]'), "s.yaml"), sink)
    assert [d.severity for d in sink.items] == ["warning"]
    assert 'did you mean "text"' in sink.items[0].message


def test_infinite_context_warns(tmp_path):
    sink = DiagnosticSink()
    spec = build_spec(parse_yaml(HEAD + 'constraints:\n  context_window: "∞"\n', "s.yaml"), sink)
    assert spec.constraints.context_window == 2**20
    assert [d.severity for d in sink.items] == ["warning"]


def test_budget_no_model_can_meet(tmp_path):
    out = diagnose(tmp_path, HEAD + "constraints:\n  parameter_budget:\n    max: 10K\n")
    assert len(out) == 1
    assert out[0].startswith("8:10: error: no model fits parameter_budget.max = 10K: the smallest model this spec allows has")
    assert "raise max to at least" in out[0]


def test_memory_no_model_can_meet(tmp_path):
    out = diagnose(tmp_path, HEAD + "constraints:\n  memory_budget: 1MB\n")
    assert len(out) == 1 and out[0].startswith("7:18: error: no model fits memory_budget = 1MB")
    assert "raise memory_budget to at least" in out[0]


@pytest.mark.parametrize(
    "text,value",
    [("50M", 50_000_000), ("1.5B", 1_500_000_000), ("70B", 70_000_000_000), ("125K", 125_000), (125000, 125000)],
)
def test_param_units(text, value):
    assert units.parse_count(text) == value


@pytest.mark.parametrize("text,value", [("512MB", 512 * 2**20), ("8GB", 8 * 2**30), ("1TB", 2**40)])
def test_byte_units(text, value):
    assert units.parse_bytes(text) == value


@pytest.mark.parametrize(
    "text,value", [("512", 512), (512, 512), ("32k", 32768), ("128k", 131072), ("1M", 2**20), ("infinite", 2**20)]
)
def test_context_units(text, value):
    assert units.parse_context(text)[0] == value


@pytest.mark.parametrize("bad", ["1e30", "-5M", "0", "abc", True, "5 apples"])
def test_bad_counts(bad):
    with pytest.raises(units.UnitError):
        units.parse_count(bad)


def test_defaults_are_visible():
    sink = DiagnosticSink()
    spec = build_spec(parse_yaml(HEAD, "s.yaml"), sink)
    assert not sink.items
    plain = spec.to_plain()
    assert plain["constraints"]["parameter_budget"]["max"] == 10**9
    assert plain["constraints"]["context_window"] == 4096
    assert plain["constraints"]["device"] == "consumer_gpu"
    assert plain["architecture"]["family"] == "auto"


def test_free_text_names():
    sink = DiagnosticSink()
    spec = build_spec(parse_yaml(HEAD.replace('name: "t"', 'name: "ViT-Base/16 Image Classifier"'), "s.yaml"), sink)
    assert spec.name == "ViT-Base/16 Image Classifier" and not sink.items


def test_json_schema_covers_every_section():
    schema = to_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]) == {f.name for f in SPEC.fields}
    assert schema["properties"]["constraints"]["properties"]["parameter_budget"]["properties"].keys() == {"max", "min"}


def test_spec_language_doc_is_current():
    import os

    from metagen.frontend.schema_doc import markdown

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "spec_language.md")
    assert open(path, encoding="utf-8").read() == markdown(), (
        "docs/spec_language.md is stale: python -m metagen.frontend.schema_doc > docs/spec_language.md"
    )


def test_unsupported_combination_lists_what_is_supported(tmp_path):
    out = diagnose(tmp_path, HEAD.replace('outputs: ["text"]', 'outputs: ["audio"]'))
    assert len(out) == 1
    assert out[0].startswith("4:3: error: no model family for text -> audio; supported: text -> text (autoregressive, masked or none);")
    assert out[0].endswith("(see docs/families.md)")


def test_family_that_does_not_fit_warns(tmp_path):
    out = diagnose(tmp_path, HEAD + "architecture:\n  family: diffusion\n  layers: 2\n  hidden_size: 64\n")
    assert out[0] == (
        "7:11: warning: family 'diffusion' does not fit this modality and objective; "
        "building a decoder-only language model (a transformer) instead"
    )


# ------------------------------------------------------------------ the schema and validate agree


def _schema_errors(schema: dict, value, path: str = "") -> list[str]:
    """The paths where `value` breaks `schema`: a hand-rolled check of the JSON Schema
    keywords `metagen schema` uses (type, enum, properties, additionalProperties,
    required, items, minimum, maximum, pattern), so the test needs no `jsonschema`."""
    import re

    kinds = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer(),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    types = schema.get("type")
    if types is not None and not any(kinds[t](value) for t in ([types] if isinstance(types, str) else types)):
        return [path]
    if "enum" in schema and value not in schema["enum"]:
        return [path]
    out = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [path + "." + k if path else k for k in schema.get("required", ()) if k not in value]
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                out += _schema_errors(props[k], v, sub)
            elif schema.get("additionalProperties") is False:
                out.append(sub)
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += _schema_errors(schema["items"], v, f"{path}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            out.append(path)
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(path)
    return out


# (dotted field, value, what validate does with it: None = accepts silently)
SCHEMA_CASES = [
    ("metagen_version", "1.0", None),
    ("metagen_version", 1.0, "warning"),  # YAML reads 1.0 as a number
    ("name", 12, "warning"),
    ("description", 5, "warning"),
    ("modality.inputs", ["text"], None),
    ("modality.inputs", "text", "warning"),
    ("training.objective", "autoregressive", "warning"),
    ("evaluation.metrics", "perplexity", "warning"),
    ("architecture.norm", "rmsnorm", None),
    ("architecture.norm", "RMSNorm", "warning"),
    ("constraints.device", "Edge", "warning"),
    ("architecture.layers", 12, None),
    ("architecture.layers", "12", "error"),
    ("architecture.layers", 12.5, "error"),
    ("architecture.layers", 0, "error"),
    ("architecture.bias", "yes", "error"),
    ("architecture.norm", "groupnorm", "error"),
    ("constraints.memory_budget", 8589934592, "error"),
    ("constraints.memory_budget", "8GB", None),
]


@pytest.mark.parametrize("field,value,expect", SCHEMA_CASES, ids=[f"{f}={v!r}" for f, v, _ in SCHEMA_CASES])
def test_what_the_schema_rejects_validate_rejects_or_warns_about(field, value, expect):
    import json

    plain = {"metagen_version": "1.0", "name": "t", "modality": {"inputs": ["text"], "outputs": ["text"]}}
    *sections, key = field.split(".")
    node = plain
    for s in sections:
        node = node.setdefault(s, {})
    node[key] = value
    schema_rejects = bool(_schema_errors(to_json_schema(), plain))
    sink = DiagnosticSink()
    try:
        build_spec(parse_yaml(json.dumps(plain), "spec.yaml"), sink)
    except CompileError as exc:
        sink.absorb(exc.diagnostics)
    about = [d for d in sink.items if f"'{field}" in d.message]
    assert schema_rejects == (expect is not None), "the case list disagrees with the schema"
    assert [d.severity for d in sink.items] == [d.severity for d in about], sink.items
    if expect is None:
        assert sink.items == []
    else:
        assert {d.severity for d in about} == {expect}, sink.items
        if expect == "warning":
            assert "the JSON Schema" in about[0].message and "write " in about[0].message  # a fix-it


def test_schema_type_warning_is_an_error_under_werror(tmp_path, capsys):
    from metagen.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(HEAD.replace('"1.0"', "1.0") + "constraints:\n  parameter_budget: {max: 10M}\n")
    assert main(["validate", str(path), "--tiny"]) == 0
    assert main(["validate", str(path), "--tiny", "-Werror"]) == 1
    assert f"{path}:1:18: error: 'metagen_version' must be a string" in capsys.readouterr().err
