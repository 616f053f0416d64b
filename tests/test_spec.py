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
        "\"relu\", \"silu\", \"swiglu\", \"geglu\", not \"gelu2\" (did you mean \"gelu\"?)",
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
