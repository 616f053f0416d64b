"""The fitter's design rules (compiler/design_rules.py, docs/families.md "Design
rules"): each rule holds across a sweep of budgets and contexts, not only for one
spec's numbers, and a pinned value that breaks a rule is kept with a located warning."""

from __future__ import annotations

import math

import pytest

from conftest import example
from metagen.compiler import design_rules as R
from metagen.compiler.devices import DEVICES
from metagen.compiler.families import FAMILIES
from metagen.diagnostics import DiagnosticSink
from metagen.pipeline import compile_spec

LM = """\
metagen_version: "1.0"
name: "lm"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  device: "{device}"
{extra}"""


def lm(tmp_path, device: str = "consumer_gpu", extra: str = "", name: str = "lm.yaml") -> str:
    path = tmp_path / name
    path.write_text(LM.format(device=device, extra=extra))
    return str(path)


def compile_with(path: str, *ov: tuple[str, str]):
    sink = DiagnosticSink()
    comp = compile_spec(path, sink, list(ov))
    return comp, sink


def warnings(sink: DiagnosticSink) -> list[str]:
    return [f"{d.loc}: {d.message}" for d in sink.items if d.severity == "warning"]


@pytest.mark.parametrize("budget", ["2B", "7B", "13B", "34B", "70B", "180B"])
def test_datacenter_fits_split_over_the_tensor_parallel_degree(tmp_path, budget):
    dev = DEVICES["datacenter_gpu"]
    tp, tile = dev.tensor_parallel, dev.tile
    assert tp == 8
    comp, _ = compile_with(lm(tmp_path, "datacenter_gpu"), ("constraints.parameter_budget.max", budget))
    a = comp.ctx.arch
    assert a["heads"] % tp == 0 and a["kv_heads"] % tp == 0
    assert a["heads"] // a["kv_heads"] <= R.MAX_GROUP
    assert a["ffn_size"] % (tp * tile) == 0 and a["ffn_size"] % 256 == 0
    assert a["hidden_size"] % tile == 0 and a["head_dim"] % tile == 0
    assert any(e["rule"] == "parallel-shapes" for e in comp.ctx.report["fit"]["rules"])


def test_single_device_fits_keep_whole_tiles(tmp_path):
    for device in ("edge", "consumer_gpu", "cpu"):
        comp, _ = compile_with(lm(tmp_path, device), ("constraints.parameter_budget.max", "300M"))
        a = comp.ctx.arch
        assert a["hidden_size"] % DEVICES[device].tile == 0 and a["ffn_size"] % 256 == 0
        assert a["heads"] % a["kv_heads"] == 0


def test_pinned_heads_that_do_not_split_are_kept_with_a_warning(tmp_path):
    path = lm(tmp_path, "datacenter_gpu", 'architecture:\n  hidden_size: 8192\n  heads: 84\n  head_dim: 128\n')
    path_text = open(path).read()
    comp, sink = compile_with(path, ("constraints.parameter_budget.max", "70B"))
    assert comp.ctx.arch["heads"] == 84
    line = path_text.splitlines().index("  heads: 84") + 1
    assert any(w.startswith(f"{path}:{line}:") and "heads 84 does not split over the 8-way" in w for w in warnings(sink))


def test_rope_base_rises_with_context(tmp_path):
    path = lm(tmp_path)
    bases = []
    for ctx in ("2k", "4k", "8k", "32k", "128k"):
        comp, sink = compile_with(path, ("constraints.context_window", ctx), ("constraints.parameter_budget.max", "100M"))
        bases.append(comp.ctx.arch["rope_theta"])
        assert not warnings(sink)
    assert bases == sorted(bases) and bases[0] < bases[3] < bases[4]
    assert bases[1] == 10_000.0  # Llama 2 at 4k
    assert bases[3] >= 1_000_000.0  # Qwen2 and Mistral 7B v0.2 at 32k
    assert R.rope_base(4096) == 10_000.0 and all(
        R.rope_base(a) <= R.rope_base(b) for a, b in zip([512, 4096, 8192, 32768], [4096, 8192, 32768, 1 << 20])
    )


def test_pinned_low_rope_base_at_long_context_is_kept_with_a_warning(tmp_path):
    path = lm(tmp_path, extra='  context_window: "32k"\narchitecture:\n  rope_theta: 10000\n')
    comp, sink = compile_with(path, ("constraints.parameter_budget.max", "100M"))
    assert comp.ctx.arch["rope_theta"] == 10000
    (w,) = [w for w in warnings(sink) if "rope_theta" in w]
    assert w.startswith(f"{path}:10:") and "1,000,000" in w and "rope-base" in w


@pytest.mark.parametrize("budget", ["50M", "125M", "350M", "1B", "3B"])
def test_small_language_models_tie_their_embeddings(tmp_path, budget):
    comp, _ = compile_with(lm(tmp_path), ("constraints.parameter_budget.max", budget))
    assert comp.ctx.arch["tie_embeddings"] is True
    assert "lm_head" not in comp.ctx.report["by_module"]


def test_large_language_models_do_not_tie(tmp_path):
    comp, _ = compile_with(lm(tmp_path, "datacenter_gpu"), ("constraints.parameter_budget.max", "7B"))
    assert comp.ctx.arch["tie_embeddings"] is False


def test_pinned_untied_small_model_is_kept_with_a_warning(tmp_path):
    path = lm(tmp_path, extra="architecture:\n  tie_embeddings: false\n")
    comp, sink = compile_with(path, ("constraints.parameter_budget.max", "100M"))
    assert comp.ctx.arch["tie_embeddings"] is False
    assert any(w.startswith(f"{path}:9:") and "tied-embeddings" in w for w in warnings(sink))


@pytest.mark.parametrize("budget", ["50M", "125M", "350M"])
def test_small_language_models_are_deep_and_thin(tmp_path, budget):
    """MobileLLM's finding: below ~1B, depth beats width (125M: 576 wide, 30
    layers, against GPT-2's 768 and 12)."""
    comp, _ = compile_with(lm(tmp_path), ("constraints.parameter_budget.max", budget))
    a = comp.ctx.arch
    assert a["layers"] >= 20 and a["hidden_size"] / a["layers"] <= 48


def test_pocket_lm_shrinks_its_vocabulary_and_says_so(tmp_path):
    path = lm(tmp_path, "mobile", '  parameter_budget:\n    max: "3M"\n  memory_budget: "64MB"\n')
    comp, sink = compile_with(path)
    a, r = comp.ctx.arch, comp.ctx.report
    assert 0.9 * 3e6 <= r["total_params"] <= 3e6
    vocab = a["vocab_size"]
    assert R.MIN_VOCAB <= vocab < 32000 and vocab & (vocab - 1) == 0
    assert vocab * a["hidden_size"] <= 3e6 / 2
    (w,) = [w for w in warnings(sink) if "vocab" in w]
    assert w.startswith(f"{path}:9:") and f"shrunk to {vocab:,}" in w and "32,000" in w


def test_vocabulary_is_kept_when_the_budget_holds_it(tmp_path):
    for budget in ("50M", "1B"):
        comp, sink = compile_with(lm(tmp_path), ("constraints.parameter_budget.max", budget))
        assert comp.ctx.arch["vocab_size"] == 32000
        assert not [w for w in warnings(sink) if "vocab" in w]


def test_unet_scales_like_sd_and_sdxl(tmp_path):
    """Two ResNet blocks per level, SD's 320 channels, and a larger budget goes to
    transformer depth (SDXL), never to one block per level."""
    spec = example("tutorial", "step6_diffusion.yaml")
    depths = []
    for budget in ("1B", "2B", "3B"):
        comp, _ = compile_with(spec, ("constraints.parameter_budget.max", budget))
        a = comp.ctx.arch
        assert a["res_blocks"] == 2 and a["base_channels"] == R.UNET_BASE
        depths.append(a["transformer_depth"])
        assert "0.41" not in comp.ctx.report["fit"]["rule"] and "unet-scaling" in comp.ctx.report["fit"]["rule"]
    assert depths == sorted(depths) and depths[0] < depths[-1]


def test_clip_patch_follows_the_image_tower_width():
    spec = example("tutorial", "step7_clip.yaml")
    for budget in ("150M", "400M", "1B"):
        comp, _ = compile_with(spec, ("constraints.parameter_budget.max", budget))
        v = comp.ctx.arch["image_encoder"]
        assert v["patch_size"] == (14 if v["hidden_size"] >= 1024 else 32)
    assert v["patch_size"] == 14  # 1B: a ViT-H/14-sized image tower


def test_depth_anchors_reproduce_their_sources():
    for width, layers in R.LM_DEPTH_ANCHORS:
        assert math.isclose(R.lm_depth(width), layers)
    for width, layers in R.TOWER_DEPTH_ANCHORS:
        assert math.isclose(R.tower_depth(width), layers)
    assert R.tower_depth(384) == 12  # ViT-S


def test_every_family_has_a_sourced_task_default():
    for fam in FAMILIES.values():
        assert fam.default_budget > 0 and fam.default_budget_source, fam.name


def test_image_classifier_without_a_budget_is_vit_base(tmp_path):
    path = tmp_path / "img.yaml"
    path.write_text(
        'metagen_version: "1.0"\nname: "img"\nmodality:\n  inputs: ["image"]\n  outputs: ["label"]\n'
        "task:\n  num_classes: 1000\n"
    )
    comp, _ = compile_with(str(path))
    a, r = comp.ctx.arch, comp.ctx.report
    assert r["total_params"] < 100e6 and r["budget"].get("max_is_task_default")
    assert (a["hidden_size"], a["layers"], a["patch_size"]) == (768, 12, 16)  # ViT-B/16


def test_every_rule_is_documented():
    text = open(example("..", "docs/families.md")).read()
    for name in R.RULES:
        assert f"`{name}`" in text, name


def test_pinned_values_that_break_the_other_rules_are_kept_with_warnings(tmp_path):
    # A vocabulary too large for the budget, pinned.
    path = lm(tmp_path, "mobile", '  parameter_budget:\n    max: "3M"\narchitecture:\n  vocab_size: 32000\n')
    comp, sink = compile_with(path)
    assert comp.ctx.arch["vocab_size"] == 32000
    assert any(w.startswith(f"{path}:11:") and "vocab-shrink" in w for w in warnings(sink))
    # A CLIP patch that does not suit the fitted width, pinned.
    comp, sink = compile_with(
        example("tutorial", "step7_clip.yaml"),
        ("constraints.parameter_budget.max", "1B"), ("architecture.image_encoder.patch_size", "32"),
    )
    assert comp.ctx.arch["image_encoder"]["patch_size"] == 32
    assert any("clip-patch" in w and "use 14" in w for w in warnings(sink))
    # One ResNet block per level, pinned.
    comp, sink = compile_with(example("tutorial", "step6_diffusion.yaml"), ("architecture.res_blocks", "1"))
    assert comp.ctx.arch["res_blocks"] == 1
    assert any("unet-scaling" in w for w in warnings(sink))


def test_explain_and_params_estimate_show_the_rules_applied(tmp_path, capsys):
    from metagen.artifacts import params_estimate
    from metagen.cli import main

    spec = example("tutorial", "pattern_large_lm.yaml")
    assert main(["explain", spec]) == 0
    out = capsys.readouterr().out
    assert "design rules applied" in out
    for name in ("parallel-shapes", "rope-base", "tied-embeddings", "lm-depth"):
        assert f"  {name}: " in out
        assert f"    source: {R.RULES[name].source}" in out
    comp, _ = compile_with(spec)
    rules = params_estimate(comp)["fit"]["rules"]
    assert {e["rule"] for e in rules} == {"parallel-shapes", "rope-base", "tied-embeddings", "lm-depth"}
    # The U-Net's rule says what it does, not the language models' depth formula.
    assert main(["explain", example("tutorial", "step6_diffusion.yaml")]) == 0
    out = capsys.readouterr().out
    assert "unet-scaling" in out and "lm-depth" not in out and "0.41" not in out
