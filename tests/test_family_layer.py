"""The family layer: what each family declares, the docs generated from it, unused
architecture keys, and the spec locations family-built IR nodes carry."""

from __future__ import annotations

import os

import pytest

from metagen.compiler import cost, objectives
from metagen.compiler.families import FAMILIES, ArchConfig
from metagen.compiler.families.blocks import VisionTower
from metagen.compiler.select import render_doc
from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.frontend import schema as S
from metagen.golden import example_specs
from metagen.pipeline import compile_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _path(rel: str) -> str:
    return os.path.join(ROOT, rel)


# ---------------------------------------------------------------- declarations


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_declares_what_other_code_looks_up(name):
    fam = FAMILIES[name]
    assert fam.msl_family_name in S.FAMILIES
    assert fam.default_objective is None or fam.default_objective in objectives.OBJECTIVES
    assert fam.unit.kind in cost.LATENCY_BOUNDS
    assert fam.rules and fam.tiny_doc
    for rule in fam.rules:
        assert set(rule.inputs) | set(rule.outputs) <= set(S.MODALITIES)
        assert set(rule.objectives) <= set(S.OBJECTIVES) | {None}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_key_a_family_reads_is_a_spec_key(name):
    """A config field naming a key the schema does not have could never be set."""
    config = FAMILIES[name].config
    arch = S.ARCHITECTURE
    for key, _ in config.spec_fields():
        assert arch.member(key) is not None, f"{name} reads architecture.{key}, which MSL does not define"
    for tower_name, tower in config.towers().items():
        section = arch.member(tower_name)
        assert section is not None and section.kind == S.MAP
        for key in tower.spec_keys():
            assert section.member(key) is not None, f"{name} reads architecture.{tower_name}.{key}"


def test_a_rule_matches_one_family_at_most():
    seen = {}
    for fam in FAMILIES.values():
        for rule in fam.rules:
            for obj in rule.objectives:
                key = (frozenset(rule.inputs), frozenset(rule.outputs), obj, rule.unknown_modalities, rule.families)
                assert key not in seen, f"{fam.name} and {seen[key]} both claim {key}"
                seen[key] = fam.name


def test_unit_of_work_kind_is_checked():
    with pytest.raises(ValueError, match="kind 'sampel'"):
        cost.UnitOfWork("sample", "sampel")


def test_config_rejects_a_name_it_does_not_declare():
    cfg = VisionTower()
    cfg["hidden_size"] = 64
    assert cfg.hidden_size == 64 and dict(cfg)["hidden_size"] == 64
    with pytest.raises(KeyError):
        cfg["hidden_sise"] = 64


def test_config_dotted_names_reach_into_towers_without_sharing_them():
    config = FAMILIES["clip"].config
    a = config()
    b = config.from_mapping({**dict(a), "image_encoder.layers": 3})
    assert b["image_encoder.layers"] == 3 and a["image_encoder.layers"] is None
    assert isinstance(b.image_encoder, ArchConfig)


def test_declaring_a_family_twice_is_an_error():
    base = type(FAMILIES["decoder_lm"])
    with pytest.raises(TypeError, match="declared twice"):
        type("Again", (base,), {"name": "decoder_lm"})
    assert type(FAMILIES["decoder_lm"]) is base


def test_docs_tables_are_generated_from_the_declarations():
    path = _path("docs/families.md")
    text = open(path, encoding="utf-8").read()
    assert text == render_doc(text), (
        "docs/families.md is stale: python -m metagen.compiler.select < docs/families.md > new && mv new docs/families.md"
    )


# ---------------------------------------------------------------- unused keys


def _diagnostics(path, overrides=(), tiny=True):
    sink = DiagnosticSink()
    try:
        compile_spec(path, sink, overrides=list(overrides), tiny=tiny)
    except CompileError as exc:
        return exc.diagnostics
    return sink.items


def test_key_the_family_does_not_read_warns_at_its_line():
    got = _diagnostics(_path("examples/reference/gpt2_small.yaml"), [("architecture.image_size", "64")])
    assert [(str(d.loc), d.severity, d.message) for d in got] == [
        ("<command line>:1:1", "warning", "'architecture.image_size' has no effect on a decoder_lm; ignored")
    ]


def test_unused_key_written_in_a_file_points_at_it(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        'metagen_version: "1.0"\nname: "t"\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
        "architecture:\n  patch_size: 16\n  text_encoder:\n    layers: 2\n"
    )
    got = sorted((d.loc.line, d.loc.col, d.message) for d in _diagnostics(str(spec)))
    assert got == [
        (7, 15, "'architecture.patch_size' has no effect on a decoder_lm; ignored"),
        (8, 3, "'architecture.text_encoder' has no effect on a decoder_lm; ignored"),
    ]


def test_unused_key_is_an_error_under_werror(capsys):
    from metagen.cli import main

    spec = _path("examples/reference/gpt2_small.yaml")
    assert main(["validate", spec, "-D", "architecture.image_size=64"]) == 0
    assert "warning: 'architecture.image_size' has no effect on a decoder_lm; ignored" in capsys.readouterr().err
    assert main(["validate", "-Werror", spec, "-D", "architecture.image_size=64"]) == 1
    assert "error: 'architecture.image_size' has no effect on a decoder_lm; ignored [-Werror]" in capsys.readouterr().err


def test_unused_keys_inside_towers_and_family_specific_messages():
    clip = _diagnostics(
        _path("examples/reference/clip_vit_b32.yaml"),
        [("architecture.hidden_size", "64"), ("architecture.text_encoder.patch_size", "8")],
    )
    assert sorted(d.message for d in clip) == [
        "'architecture.hidden_size' applies to neither tower of a dual encoder; write it under text_encoder: or image_encoder:",
        "'architecture.text_encoder.patch_size' has no effect on a clip; ignored",
    ]
    audio = _diagnostics(_path("examples/tutorial/pattern_audio.yaml"), [("architecture.vocab_size", "64")])
    assert [d.message for d in audio] == [
        "vocab_size is ignored by the audio model: its vocabulary is codebook_size entries per codebook"
    ]


def test_an_unread_key_is_not_pinned():
    comp = compile_spec(_path("examples/reference/gpt2_small.yaml"), DiagnosticSink(), [("architecture.image_size", "64")], tiny=True)
    assert "image_size" not in comp.ctx.pinned and "hidden_size" in comp.ctx.pinned


@pytest.mark.parametrize("spec", example_specs())
def test_no_example_writes_a_key_its_family_ignores(spec):
    for d in _diagnostics(_path(spec)):
        assert "has no effect" not in d.message and "ignored" not in d.message, str(d.loc) + ": " + d.message


# ---------------------------------------------------------------- locations


@pytest.mark.parametrize(
    "spec",
    [
        "examples/reference/gpt2_small.yaml",
        "examples/reference/clip_vit_b32.yaml",
        "examples/reference/sd15_unet.yaml",
        "examples/tutorial/pattern_taste.yaml",
    ],
)
def test_every_node_a_family_builds_points_into_the_spec(spec):
    comp = compile_spec(_path(spec), DiagnosticSink(), tiny=True)
    model = comp.model
    assert model.loc is not None and model.loc.path == _path(spec)
    for m in model.modules.values():
        for node in m.nodes:
            assert node.loc is not None and node.loc.path == _path(spec) and node.loc.line > 1, (m.name, node.op)


def test_block_nodes_point_at_the_layers_key():
    path = _path("examples/reference/gpt2_small.yaml")
    comp = compile_spec(path, DiagnosticSink(), tiny=True)
    line = next(i for i, text in enumerate(open(path), 1) if text.strip().startswith("layers:"))
    block = comp.model.modules["Block"]
    assert {n.loc.line for n in block.nodes} == {line}


def test_a_backend_diagnostic_points_into_the_spec(monkeypatch):
    """A missing emitter is reported at the spec key behind the node, not at <ir>:1:1."""
    from metagen.backends import torch_backend
    from metagen.backends.pyemit import EmitError

    path = _path("examples/reference/gpt2_small.yaml")
    comp = compile_spec(path, DiagnosticSink(), tiny=True)
    monkeypatch.delitem(torch_backend.OPS, "add")
    with pytest.raises(EmitError) as info:
        torch_backend.lower_to_torch(comp.model)
    (d,) = info.value.diagnostics
    layers_line = next(i for i, text in enumerate(open(path), 1) if text.strip().startswith("layers:"))
    assert (d.loc.path, d.loc.line) == (path, layers_line)
    assert "no emitter for op 'add'" in d.message


def test_task_type_that_contradicts_the_model_warns_at_its_line(tmp_path):
    """task.type is read: it must agree with what modality and objective build."""
    from metagen.diagnostics import DiagnosticSink
    from metagen.pipeline import compile_spec

    spec = tmp_path / "lm.yaml"
    spec.write_text(
        'metagen_version: "1.0"\nname: "lm"\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
        'task:\n  type: "classification"\n'
    )
    sink = DiagnosticSink()
    compile_spec(str(spec), sink, tiny=True)
    assert [(d.severity, d.loc.line, d.loc.col) for d in sink.items] == [("warning", 7, 9)]
    assert "a decoder_lm performs generation" in sink.items[0].message
    spec.write_text(spec.read_text().replace('"classification"', '"generation"'))
    sink = DiagnosticSink()
    compile_spec(str(spec), sink, tiny=True)
    assert sink.items == []
