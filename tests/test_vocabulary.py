"""The original MetaGen vocabulary (issue 15 item 1): every key is accepted with our
types, positions and did-you-mean; the keys that shape the model are used, the
others kept in spec_resolved.yaml with one note; free-text sizes are read where
they carry a count; task words in modality lists are understood. The specs here
are ours, written in that vocabulary."""

from __future__ import annotations

import os
import textwrap

import pytest
import yaml

from conftest import EXAMPLES
from metagen.artifacts import _yaml, resolved_spec
from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.frontend import schema as S
from metagen.frontend import units
from metagen.frontend.dsl import parse_dsl
from metagen.frontend.dsl_format import tree_to_mg
from metagen.frontend.spec_builder import build_spec
from metagen.frontend.yaml_frontend import parse_yaml
from metagen.ir.printer import print_model
from metagen.pipeline import compile_spec

REVIEW = os.path.join(EXAMPLES, "vocabulary", "review_classifier.yaml")


def diagnose(tmp_path, text: str, tiny: bool = False):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    sink = DiagnosticSink()
    comp = None
    try:
        comp = compile_spec(str(path), sink, tiny=tiny)
    except CompileError as exc:
        for d in exc.diagnostics:
            if d not in sink.items:
                sink.items.append(d)
    lines = [f"{d.loc.line}:{d.loc.col}: {d.severity}: {d.message}" for d in sorted(sink.items, key=lambda d: d.loc)]
    return comp, lines


HEAD = """\
metagen_version: "1.0"
name: "t"
"""


def test_every_key_of_the_original_vocabulary_is_in_the_schema():
    # seed_schema.md's keys, written out here (not read from the seed folder)
    for path in (
        "metagen_version", "name", "description", "version", "modality.inputs", "modality.outputs",
        "task.type", "task.domain", "task.num_classes", "task.num_outputs", "task.horizon", "task.lookback",
        "task.action_space", "task.num_actions", "task.action_dim", "task.num_anchors", "task.mask_resolution",
        "task.node_features", "task.edge_features", "task.embedding_dim",
        "constraints.parameter_budget.max", "constraints.latency", "constraints.device", "constraints.memory_budget",
        "constraints.context_window", "constraints.throughput",
        "training.objective", "training.data.sources", "training.data.size", "training.data.governance.pii",
        "training.data.governance.copyright", "training.compute.hardware", "training.compute.duration",
        "training.alignment.method", "training.alignment.policy",
        "architecture.family", "architecture.components",
        "outputs.artifacts", "evaluation.benchmarks", "evaluation.baselines", "evaluation.metrics",
        "reproducibility.seed", "reproducibility.determinism",
    ):
        assert S.lookup(path) is not None, path
    words = {
        "modality": "text image audio video 3d multimodal time_series graph tabular point_cloud label bounding_boxes "
        "segmentation_mask embedding action regression",
        "task": "generation classification regression embedding ranking retrieval object_detection instance_segmentation "
        "semantic_segmentation panoptic_segmentation time_series_forecast anomaly_detection policy_gradient value_based "
        "actor_critic model_based node_classification link_prediction graph_classification recommendation",
        "objective": "autoregressive diffusion contrastive classification masked regression ranking pairwise_ranking "
        "forecasting reconstruction object_detection instance_segmentation semantic_segmentation value_based "
        "policy_gradient instruction_tuning",
        "family": "transformer diffusion cnn mlp gnn hybrid",
    }
    assert set(words["modality"].split()) <= set(S.MODALITIES)
    assert set(words["task"].split()) <= set(S.TASKS)
    assert set(words["objective"].split()) <= set(S.OBJECTIVES)
    assert set(words["family"].split()) <= set(S.FAMILIES)


def test_a_spec_in_the_original_vocabulary_compiles_with_one_note(tmp_path):
    comp, lines = diagnose(tmp_path, open(REVIEW, encoding="utf-8").read())
    assert comp is not None and comp.ctx.family == "encoder"
    assert comp.ctx.arch["num_classes"] == 3  # task.num_classes shapes the model
    recorded = [ln for ln in lines if "do not affect the model" in ln]
    assert len(recorded) == 1
    assert recorded[0].startswith("6:1: note: version, task.domain, training.alignment.policy, architecture.components,")
    assert not [ln for ln in lines if ": error:" in ln or ": warning:" in ln], lines
    from metagen.training import training_config
    from metagen.compiler.objectives import build_loss

    assert training_config(comp, build_loss(comp.ctx), 0)["warmup"] == 500  # training.config.warmup_steps
    resolved = resolved_spec(comp)
    assert resolved["version"] == "2.3.1" and resolved["task"]["domain"] == "retail_reviews"
    assert resolved["evaluation"]["baselines"] == ["bag_of_words_logreg"]
    assert resolved["architecture"]["components"][0] == {"name": "Tokenizer", "type": "wordpiece"}
    assert resolved["architecture"]["components"][2] == {"name": "pooler"}
    assert resolved["modality"]["outputs"] == ["label"]
    # spec_resolved.yaml compiles to the same model
    again_path = tmp_path / "spec_resolved.yaml"
    again_path.write_bytes(_yaml(resolved))
    assert print_model(compile_spec(str(again_path)).model) == print_model(comp.model)


def test_the_mg_twin_builds_the_same_spec_and_model():
    mg_path = REVIEW[: -len(".yaml")] + ".mg"
    tree = parse_yaml(open(REVIEW, encoding="utf-8").read(), REVIEW)
    assert tree_to_mg(tree) == open(mg_path, encoding="utf-8").read()
    sink = DiagnosticSink()
    twin = build_spec(parse_dsl(open(mg_path, encoding="utf-8").read(), mg_path, sink), sink)
    assert twin.to_plain() == build_spec(tree, DiagnosticSink()).to_plain()
    assert print_model(compile_spec(mg_path).model) == print_model(compile_spec(REVIEW).model)


def test_task_word_in_a_modality_list_is_read_with_a_note(tmp_path):
    _, lines = diagnose(tmp_path, HEAD + "modality:\n  inputs: [image]\n  outputs:\n    - classification\n", tiny=True)
    assert "6:7: note: 'modality.outputs[0]': \"classification\" is a task word, read as the modality \"label\"" in lines


@pytest.mark.parametrize(
    "text, expected",
    [
        ("118k images", (118_000, "samples")),
        ("100M pairs", (100_000_000, "samples")),
        ("50K samples", (50_000, "samples")),
        ("1M sentence pairs", (1_000_000, "samples")),
        ("10M transitions", (10_000_000, "samples")),
        ("2T tokens", (2 * 10**12, "tokens")),
        ("5M", (5_000_000, "tokens")),
        ("unknown but large", None),
        ("5 TB", None),
        ("3 days", None),
        ("10B tokns", None),  # a misspelt unit is not guessed as samples
    ],
)
def test_free_text_data_sizes(text, expected):
    assert units.read_data_size(text) == expected


def test_unread_data_size_is_kept_with_a_note_and_bad_counts_are_errors(tmp_path):
    head = HEAD + "modality:\n  inputs: [text]\n  outputs: [text]\ntraining:\n  data:\n    size: "
    _, lines = diagnose(tmp_path, head + '"unknown but large"\n', tiny=True)
    assert any(ln.startswith("8:11: note: 'training.data.size': 'unknown but large' is kept as written") for ln in lines)
    _, lines = diagnose(tmp_path, head + '"1.5 images"\n')
    assert "8:11: error: 'training.data.size': data size '1.5 images' is not a whole number of samples" in lines


def test_throughput_in_examples_per_second():
    assert units.parse_rate("1 mesh/s") == (1.0, "samples/s")
    assert units.parse_rate("1 sample/s") == (1.0, "samples/s")
    with pytest.raises(units.UnitError):
        units.parse_rate("1 furlong/s")


def test_new_keys_get_did_you_mean_and_types(tmp_path):
    _, lines = diagnose(
        tmp_path,
        HEAD + "modality:\n  inputs: [time_series]\n  outputs: [time_series]\n"
        "task:\n  horizn: 3\n  lookback: ninety\n  action_space: discrete-ish\n",
    )
    assert "7:3: error: unknown key \"horizn\" in 'task' (did you mean \"horizon\"?)" in lines
    assert "8:13: error: 'task.lookback' must be an integer, not a string 'ninety'" in lines
    assert any(ln.startswith("9:17: error: 'task.action_space' must be one of \"discrete\", \"continuous\"") for ln in lines)


def test_alignment_method_and_components_take_both_forms(tmp_path):
    base = HEAD + "modality:\n  inputs: [text]\n  outputs: [text]\n"
    for method in ("sft", "[rlhf, rlaif]"):
        comp, lines = diagnose(
            tmp_path, base + f"training:\n  alignment:\n    method: {method}\narchitecture:\n  components: [a, {{name: b, type: c}}]\n", tiny=True
        )
        assert comp is not None and not [ln for ln in lines if "error" in ln or "warning" in ln], lines
    assert comp.spec.training.alignment.method == ["rlhf", "rlaif"]
    assert comp.spec.architecture.components == [{"name": "a"}, {"name": "b", "type": "c"}]
    _, lines = diagnose(tmp_path, base + "architecture:\n  components:\n    - {name: b, kind: c}\n")
    assert any("unknown key \"kind\" in 'architecture.components[0]'" in ln for ln in lines)


def test_constraints_image_size_sets_the_architecture(tmp_path):
    text = HEAD + "modality:\n  inputs: [image]\n  outputs: [label]\nconstraints:\n  image_size: 64\n  patch_size: 8\n"
    comp, _ = diagnose(tmp_path, text)
    assert comp.ctx.arch["image_size"] == 64 and comp.ctx.arch["patch_size"] == 8
    comp, _ = diagnose(tmp_path, text + "architecture:\n  image_size: 96\n")
    assert comp.ctx.arch["image_size"] == 96  # the architecture section wins


@pytest.mark.parametrize(
    "modality, where, words",
    [
        ("inputs: [text]\n  outputs: [3d]", "5:12", "no family builds '3d' yet: built a best-effort transformer encoder"),
        ("inputs: [point_cloud]\n  outputs: [label]", "4:11", "no family builds 'point_cloud' yet: built a best-effort"),
        (
            "inputs: [text]\n  outputs: [text, image, audio]",
            "5:12",
            "no family builds the outputs text + image + audio together (a hybrid design): built a best-effort",
        ),
    ],
)
def test_out_of_reach_modalities_get_one_warning_and_a_model(tmp_path, modality, where, words):
    comp, lines = diagnose(tmp_path, HEAD + f"modality:\n  {modality}\n", tiny=True)
    assert comp is not None and comp.ctx.family == "fallback"
    warnings = [ln for ln in lines if ": warning:" in ln]
    assert len(warnings) == 1 and warnings[0].startswith(f"{where}: warning: {words}"), lines


def test_json_schema_carries_the_new_forms():
    schema = S.to_json_schema()
    props = schema["properties"]
    method = props["training"]["properties"]["alignment"]["properties"]["method"]
    assert {"type": "string"} in [{k: v for k, v in alt.items() if k == "type"} for alt in method["anyOf"]]
    item = props["architecture"]["properties"]["components"]["items"]
    assert [alt.get("type") for alt in item["anyOf"]] == ["object", "string"]
    assert props["task"]["properties"]["domain"]["x-metagen-recorded"] is True
    assert "classification" in props["modality"]["properties"]["outputs"]["items"]["examples"]
    yaml.safe_dump(schema)  # plain data


def test_misspelt_task_word_gets_did_you_mean(tmp_path):
    _, lines = diagnose(tmp_path, HEAD + "modality:\n  inputs: [image]\n  outputs: [clasification]\n", tiny=True)
    assert "5:13: warning: unsupported modality \"clasification\" (did you mean \"classification\"?); MetaGen builds a best-effort model for it" in lines


def test_task_type_and_family_steer_the_choice_among_matching_rules(tmp_path, monkeypatch):
    """Two families match text -> embedding when a second rule is declared for it:
    the written task.type (then architecture.family) picks between them."""
    from metagen.compiler import select
    from metagen.compiler.families import FAMILIES, Rule

    ranker = FAMILIES["cross_encoder"]
    monkeypatch.setattr(type(ranker), "rules", type(ranker).rules + (Rule(("text",), ("embedding",), ("contrastive",)),))
    base = HEAD + "modality:\n  inputs: [text]\n  outputs: [embedding]\ntraining:\n  objective: [contrastive]\n"
    for extra, family in (("", "sentence_embedder"), ("task:\n  type: ranking\n", "cross_encoder"), ("task:\n  type: embedding\n", "sentence_embedder")):
        path = tmp_path / "s.yaml"
        path.write_text(base + extra)
        sink = DiagnosticSink()
        spec = build_spec(parse_yaml(path.read_text(), str(path)), sink)
        assert select.select_family(spec, sink) == family, extra


def test_recorded_keys_reach_the_model_card():
    from metagen.synth import synth_files

    card = synth_files(compile_spec(REVIEW, tiny=True), 0)["README.md"].decode("utf-8")
    for text in ("version: 2.3.1", "domain: retail_reviews", "bag_of_words_logreg", "determinism: cuDNN deterministic kernels"):
        assert text in card, text
