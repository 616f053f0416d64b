"""The transformer families besides the decoder LM: vision transformer, text encoder
classifier, CLIP-style dual encoder and the fallback for unsupported modalities.

Exact parameter counts of the reference specs, fitting of the tutorial specs, tiny
forward passes, and outputs against the published implementations (transformers,
random weights mapped onto the canonical names)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compile_to, example, load_module
from metagen.diagnostics import DiagnosticSink
from metagen.pipeline import compile_spec

REFERENCE_COUNTS = {
    "vit_base_patch16.yaml": ("vit", 86_567_656),
    "bert_base_classifier.yaml": ("encoder", 109_483_778),
    "clip_vit_b32.yaml": ("clip", 151_277_313),
}


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    bad = np.abs(a - b) > 1e-5 + 1e-4 * np.abs(b)
    assert not bad.any(), f"max |a-b| = {np.abs(a - b).max()}"


@pytest.mark.parametrize("spec", sorted(REFERENCE_COUNTS))
def test_reference_parameter_count(tmp_path, spec):
    family, expected = REFERENCE_COUNTS[spec]
    path, comp = compile_to(tmp_path, example("reference", spec), "torch", tiny=False)
    assert comp.ctx.family == family
    assert comp.model.param_count() == expected
    assert comp.ctx.report["total_params"] == expected
    mod = load_module(str(path))
    with torch.device("meta"):
        model = mod.Model()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert [n for n, _ in comp.model.walk_params()] == list(model.state_dict())


@pytest.mark.parametrize(
    "spec,family",
    [("step5_image.yaml", "vit"), ("step7_clip.yaml", "clip"), ("pattern_taste.yaml", "fallback")],
)
def test_tutorial_fits_budget(spec, family):
    comp = compile_spec(example("tutorial", spec))
    r = comp.ctx.report
    assert comp.ctx.family == family
    budget = r["budget"]["max"]  # the spec's, or the family's task default (pattern_taste gives none)
    assert 0.9 * budget <= r["total_params"] <= budget
    assert r["binding_constraint"] == "parameter_budget.max"
    assert r["total_params"] == comp.model.param_count()


def test_clip_fit_scales_both_towers():
    comp = compile_spec(example("tutorial", "step7_clip.yaml"))
    a = comp.ctx.arch
    t, v = a["text_encoder"], a["image_encoder"]
    # Both towers grew past CLIP B/32 (512 / 768) for the 400M budget, in CLIP's 2 : 3 ratio.
    assert v["hidden_size"] > 768 and t["hidden_size"] > 512
    assert abs(t["hidden_size"] / v["hidden_size"] - 2 / 3) < 0.05
    assert t["layers"] == v["layers"]
    assert a["projection_dim"] == t["hidden_size"]
    assert not any("." in k for k in a)


TINY_SHAPES = {
    ("tutorial", "step5_image.yaml"): {"logits": (2, 10)},
    ("tutorial", "step7_clip.yaml"): {
        "text_embeds": (2, 32), "image_embeds": (2, 32), "logits_per_image": (2, 2), "logits_per_text": (2, 2)
    },
    ("tutorial", "pattern_taste.yaml"): {"logits": (2, 16, 256)},
    ("reference", "vit_base_patch16.yaml"): {"logits": (2, 10)},
    ("reference", "bert_base_classifier.yaml"): {"logits": (2, 2)},
}


@pytest.mark.parametrize("where", sorted(TINY_SHAPES), ids=lambda w: w[1])
def test_tiny_torch_forward(tmp_path, where):
    path, comp = compile_to(tmp_path, example(*where), "torch")
    mod = load_module(str(path))
    model = mod.init(0)
    out = mod.run(model, mod.example_inputs(batch_size=2))
    assert list(out) == mod.OUTPUTS
    assert {k: v.shape for k, v in out.items()} == TINY_SHAPES[where]
    assert all(np.isfinite(v).all() for v in out.values())
    assert sum(p.numel() for p in model.parameters()) == comp.model.param_count()


def test_clip_tiny_outputs_are_consistent(tmp_path):
    path, _ = compile_to(tmp_path, example("tutorial", "step7_clip.yaml"), "torch")
    mod = load_module(str(path))
    out = mod.run(mod.init(0), mod.example_inputs(batch_size=3))
    np.testing.assert_allclose(np.linalg.norm(out["text_embeds"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out["logits_per_image"], out["logits_per_text"].T)
    scale = np.exp(np.log(1 / 0.07))
    np.testing.assert_allclose(out["logits_per_text"], scale * out["text_embeds"] @ out["image_embeds"].T, rtol=1e-4)


def _diagnostics(path: str) -> list[str]:
    sink = DiagnosticSink()
    compile_spec(path, sink=sink, tiny=True)
    return [f"{d.severity}: {d.message}" for d in sink.items]


def test_image_output_classifier_is_explained():
    msgs = _diagnostics(example("tutorial", "step5_image.yaml"))
    assert any(m.startswith("warning:") and "outputs class logits" in m for m in msgs)
    assert not any("outputs class logits" in m for m in _diagnostics(example("reference", "vit_base_patch16.yaml")))


def test_unsupported_modality_says_what_was_built():
    msgs = _diagnostics(example("tutorial", "pattern_taste.yaml"))
    built = [m for m in msgs if "best-effort transformer encoder" in m]
    # One warning per problem: the spec builder warns at the word; the family adds a note.
    assert len(built) == 1 and built[0].startswith("note:")
    assert len([m for m in msgs if m.startswith("warning:") and "taste" in m]) == 1
    assert "'features' float32 [batch, seq, " in built[0] and "'logits'" in built[0]


def test_fallback_label_and_embedding_heads(tmp_path):
    for outputs, name, shape in (('["label"]', "logits", (2, 2)), ('["taste"]', "embedding", (2, 64))):
        spec = tmp_path / "smell.yaml"
        spec.write_text(
            'metagen_version: "1.0"\nname: "nose"\nmodality:\n  inputs: ["smell"]\n'
            f"  outputs: {outputs}\n"
        )
        path, comp = compile_to(tmp_path, str(spec), "torch")
        assert comp.ctx.family == "fallback"
        mod = load_module(str(path))
        out = mod.run(mod.init(0), mod.example_inputs(batch_size=2))
        assert {k: v.shape for k, v in out.items()} == {name: shape}
        assert mod.INPUTS["features"]["shape"] == ["batch", "seq", 16]


# ------------------------------------------------------------ reference outputs

import transformers  # noqa: E402
from metagen import hf as hf_mapping  # noqa: E402


def _perturbed(hf_model) -> None:
    """Random init leaves biases at zero and norms at one; make every weight count."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _compile_tiny(tmp_path, *where):
    path, comp = compile_to(tmp_path, example(*where), "torch")
    return load_module(str(path))


def test_vit_matches_transformers(tmp_path):
    mod = _compile_tiny(tmp_path, "reference", "vit_base_patch16.yaml")
    c = mod.CONFIG
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(
        transformers.ViTConfig(
            hidden_size=c["hidden_size"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
            intermediate_size=c["ffn_size"], image_size=c["image_size"], patch_size=c["patch_size"],
            num_channels=c["channels"], num_labels=c["num_classes"], layer_norm_eps=c["norm_eps"],
            hidden_act="gelu", attn_implementation="eager",
        )
    ).eval()
    _perturbed(hf)
    ours = mod.load_canonical(hf_mapping.vit_to_canonical(hf.state_dict()))
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x["pixel_values"])).logits.numpy()
    _close(mod.run(ours, x)["logits"], ref)


def test_bert_matches_transformers(tmp_path):
    mod = _compile_tiny(tmp_path, "reference", "bert_base_classifier.yaml")
    c = mod.CONFIG
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_hidden_layers=c["layers"],
            num_attention_heads=c["heads"], intermediate_size=c["ffn_size"],
            max_position_embeddings=c["context_window"], type_vocab_size=c["type_vocab_size"],
            num_labels=c["num_classes"], layer_norm_eps=c["norm_eps"], hidden_act="gelu",
            attn_implementation="eager",
        )
    ).eval()
    _perturbed(hf)
    ours = mod.load_canonical(hf_mapping.bert_to_canonical(hf.state_dict()))
    x = mod.example_inputs(batch_size=2)
    assert x["token_type_ids"].max() > 0  # the token-type path is exercised
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
    _close(mod.run(ours, x)["logits"], ref)


def test_clip_matches_transformers(tmp_path):
    mod = _compile_tiny(tmp_path, "reference", "clip_vit_b32.yaml")
    c = mod.CONFIG
    t, v = c["text_encoder"], c["image_encoder"]
    torch.manual_seed(0)
    eot = t["vocab_size"] - 1
    cfg = transformers.CLIPConfig(
        text_config=dict(
            eos_token_id=eot, bos_token_id=0, pad_token_id=0,
            vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"], intermediate_size=t["ffn_size"],
            max_position_embeddings=c["context_window"], layer_norm_eps=t["norm_eps"], hidden_act="quick_gelu",
        ),
        vision_config=dict(
            hidden_size=v["hidden_size"], num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
            intermediate_size=v["ffn_size"], image_size=v["image_size"], patch_size=v["patch_size"],
            num_channels=v["channels"], layer_norm_eps=v["norm_eps"], hidden_act="quick_gelu",
        ),
        projection_dim=c["projection_dim"],
    )
    cfg._attn_implementation = "eager"
    hf = transformers.CLIPModel(cfg).eval()
    _perturbed(hf)
    ours = mod.load_canonical(hf_mapping.clip_to_canonical(hf.state_dict()))
    x = mod.example_inputs(batch_size=3)
    # End-of-text is the highest id, at a different position in each row (CLIP's tokenizer).
    x["input_ids"] = np.minimum(x["input_ids"], eot - 1)
    for row, pos in enumerate((3, 9, x["input_ids"].shape[1] - 1)):
        x["input_ids"][row, pos] = eot
    with torch.no_grad():
        r = hf(input_ids=torch.from_numpy(x["input_ids"]), pixel_values=torch.from_numpy(x["pixel_values"]))
    got = mod.run(ours, x)
    for name in mod.OUTPUTS:
        _close(got[name], getattr(r, name).numpy())


@pytest.mark.parametrize(
    "body,message",
    [
        (
            'modality: {inputs: ["image"], outputs: ["label"]}\narchitecture: {image_size: 100, patch_size: 16}\n',
            "6:45: error: architecture: patch_size 16 does not divide image_size 100",
        ),
        (
            'modality: {inputs: ["text"], outputs: ["label"]}\narchitecture: {pooling: "eot"}\n',
            "6:25: error: architecture: pooling 'eot' is not supported by the encoder family",
        ),
        (
            'modality: {inputs: ["image", "text"], outputs: ["text", "image"]}\n'
            "architecture:\n  text_encoder: {pooling: last}\n",
            "7:27: error: architecture: text_encoder: pooling 'last' is not supported by text towers",
        ),
    ],
)
def test_unbuildable_conventions_are_located(tmp_path, body, message):
    from metagen.diagnostics import CompileError

    spec = tmp_path / "bad.yaml"
    spec.write_text('metagen_version: "1.0"\nname: "bad"\n# line 3\n# line 4\n' + body)
    with pytest.raises(CompileError) as exc:
        compile_spec(str(spec), tiny=True)
    rendered = [f"{d.loc.line}:{d.loc.col}: {d.severity}: {d.message}" for d in exc.value.diagnostics]
    assert any(message in r for r in rendered), rendered
