"""The diffusion U-Net and audio families: exact SD 1.5 count, fitted tutorial
specs, tiny forward passes, and agreement with diffusers' UNet2DConditionModel."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import example, load_module

from metagen.diagnostics import CompileError
from metagen.pipeline import compile_spec

SD15_TOTAL = 982_581_444
SD15_UNET = 859_520_964  # diffusers UNet2DConditionModel(cross_attention_dim=768)
CLIP_L_TEXT = 123_060_480  # transformers CLIPTextModel, ViT-L/14 text tower
GB = 1024**3



@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """The tiny SD 1.5 model's torch module, compiled once (emitting it is the slow part)."""
    from conftest import compile_to

    path, comp = compile_to(tmp_path_factory.mktemp("sd15_tiny"), example("reference", "sd15_unet.yaml"), "torch")
    return load_module(str(path)), comp


def _close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    bad = np.abs(a - b) > 1e-5 + 1e-4 * np.abs(b)
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ; max |a-b| = {np.abs(a - b).max():.3g}"


# ------------------------------------------------------------------ counts and fitting


def test_sd15_exact_count_from_ir():
    comp = compile_spec(example("reference", "sd15_unet.yaml"))
    report = comp.ctx.report
    assert report["total_params"] == SD15_TOTAL
    assert report["by_module"]["text_encoder"]["total"] == CLIP_L_TEXT
    assert comp.model.family == "diffusion_unet"
    assert [i.name for i in comp.model.inputs] == ["sample", "timestep", "input_ids", "attention_mask"]
    assert comp.model.output_names == ["noise_pred"]
    assert report["memory"]["inference"]["total"] <= 24 * GB


@pytest.mark.slow
def test_sd15_torch_model_count_on_meta(tmp_path):
    import torch
    from conftest import compile_to

    path, comp = compile_to(tmp_path, example("reference", "sd15_unet.yaml"), "torch", tiny=False)
    mod = load_module(str(path))
    with torch.device("meta"):
        model = mod.Model()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(int(np.prod(s)) for s in shapes.values()) == SD15_TOTAL
    assert shapes == {name: tuple(p.type.shape) for name, p in comp.model.walk_params()}


@pytest.mark.slow
def test_diffusers_sd15_unet_count_matches_reference():
    import torch
    from diffusers import UNet2DConditionModel

    from hf_mapping_unet import diffusers_config

    comp = compile_spec(example("reference", "sd15_unet.yaml"))
    with torch.device("meta"):
        ref = UNet2DConditionModel(**diffusers_config(comp.ctx.arch))
    n = sum(p.numel() for p in ref.parameters())
    assert n == SD15_UNET
    assert comp.ctx.report["total_params"] - comp.ctx.report["by_module"]["text_encoder"]["total"] == n


def test_step6_diffusion_fitted_within_budget():
    comp = compile_spec(example("tutorial", "step6_diffusion.yaml"))
    report = comp.ctx.report
    params = report["total_params"]
    assert 0.9 * 2e9 <= params <= 2e9
    assert report["memory"]["inference"]["total"] <= 24 * GB
    assert report["binding_constraint"] == "parameter_budget.max"
    # Design rule unet-scaling: SD's 320 channels and 2 ResNet blocks per level; the
    # budget beyond SD 1.5's size goes to transformer depth, as SDXL's does.
    a = comp.ctx.arch
    assert a["base_channels"] == 320 and a["res_blocks"] == 2 and a["transformer_depth"] > 1
    assert all((a["base_channels"] * m) % a["norm_groups"] == 0 for m in a["channel_mults"])


def test_pattern_audio_fitted_within_default_budget():
    comp = compile_spec(example("tutorial", "pattern_audio.yaml"))
    report = comp.ctx.report
    assert comp.model.family == "audio_lm"
    assert 0.9 * 300e6 <= report["total_params"] <= 300e6  # the audio task default: MusicGen-small's 300M
    assert report["binding_constraint"] == "parameter_budget.max"
    assert comp.model.config["codebooks"] == 4 and comp.model.config["codebook_size"] == 2048


def test_text_to_image_selects_the_diffusion_unet():
    comp = compile_spec(example("tutorial", "step6_diffusion.yaml"), overrides=[("modality.inputs", '["text"]')])
    assert comp.model.family == "diffusion_unet"


def test_memory_budget_binds_diffusion():
    comp = compile_spec(example("tutorial", "step6_diffusion.yaml"), overrides=[("constraints.memory_budget", "2GB")])
    report = comp.ctx.report
    assert report["memory"]["inference"]["total"] <= 2 * GB
    assert report["binding_constraint"] == "memory_budget"


@pytest.mark.parametrize(
    "override, message",
    [
        (("architecture.attention_levels", "[0, 5]"), "attention_levels names level 5"),
        (("architecture.cross_attention_dim", "512"), "cross_attention_dim 512 must equal text_encoder.hidden_size 768"),
        (("architecture.norm_groups", "48"), "norm_groups 48 does not divide"),
    ],
)
def test_bad_unet_dimensions_are_diagnosed(override, message):
    with pytest.raises(CompileError) as err:
        compile_spec(example("reference", "sd15_unet.yaml"), overrides=[override])
    assert message in str(err.value)


# ------------------------------------------------------------------ tiny forward passes


def test_tiny_unet_forward_shapes(tiny_sd):
    mod, comp = tiny_sd
    state = mod.init(0)
    assert sum(p.numel() for p in state.parameters()) == comp.ctx.report["total_params"]
    inputs = mod.example_inputs(batch_size=2)
    assert inputs["sample"].shape == (2, 4, 8, 8) and inputs["timestep"].shape == (2,)
    out = mod.run(state, inputs)["noise_pred"]
    assert out.shape == inputs["sample"].shape and np.isfinite(out).all()
    # Every branch survives --tiny: levels with and without attention, channel changes.
    a = comp.ctx.arch
    assert len(a["channel_mults"]) == 4 and set(a["attention_levels"]) == {0, 1, 2}
    # The timestep and the prompt both condition the prediction.
    other_t = mod.run(state, dict(inputs, timestep=inputs["timestep"] + 100.0))["noise_pred"]
    other_ids = mod.run(state, dict(inputs, input_ids=(inputs["input_ids"] + 1) % 256))["noise_pred"]
    assert np.abs(other_t - out).max() > 1e-4 and np.abs(other_ids - out).max() > 1e-4


def test_tiny_audio_forward_wiring_and_causality(compiled):
    import torch

    path, comp = compiled(example("tutorial", "pattern_audio.yaml"), "torch")
    mod = load_module(str(path))
    state = mod.init(0)
    inputs = mod.example_inputs(batch_size=2)
    k, v = comp.model.config["codebooks"], comp.model.config["codebook_size"]
    seq = inputs["codes"].shape[2]
    assert inputs["codes"].shape == (2, k, seq) and inputs["codes"].max() < v
    logits = mod.run(state, inputs)["logits"]
    assert logits.shape == (2, k, seq, v)
    # Summed per-codebook embeddings, shared trunk, one head per codebook.
    with torch.no_grad():
        codes = torch.from_numpy(inputs["codes"])
        x = sum(getattr(state, f"embed_{i}")(codes[:, i]) for i in range(k))
        bias = mod._attention_bias(torch.ones(2, seq, dtype=torch.int64), x, True, 0)  # causal, no padding
        positions = torch.arange(seq)[None].expand(2, -1)
        _, kv_heads, _, head_dim = mod.INPUTS["past_key_values.0.key"]["shape"]
        empty = torch.zeros(2, kv_heads, 0, head_dim)  # no cache
        for block in state.blocks:
            x = block(x, bias, positions, empty, empty)[0]
        x = state.norm_f(x)
        want = torch.stack([getattr(state, f"head_{i}")(x) for i in range(k)], dim=1).numpy()
    _close(logits, want)
    # Causal: changing the last frame leaves earlier frames' logits unchanged.
    changed = inputs["codes"].copy()
    changed[:, :, -1] = (changed[:, :, -1] + 1) % v
    other = mod.run(state, {"codes": changed})["logits"]
    _close(other[:, :, :-1], logits[:, :, :-1])
    assert np.abs(other[:, :, -1] - logits[:, :, -1]).max() > 1e-4


# ------------------------------------------------------------------ reference outputs


def test_tiny_unet_matches_diffusers(tiny_sd):
    import torch
    from diffusers import UNet2DConditionModel

    from hf_mapping_unet import diffusers_config
    from metagen.hf import unet_to_canonical

    mod, comp = tiny_sd
    a = comp.ctx.arch
    torch.manual_seed(0)
    ref = UNet2DConditionModel(**diffusers_config(a)).eval()
    with torch.no_grad():
        for p in ref.parameters():  # move norms off 1/0 too, so a mis-mapped one shows
            p.add_(0.05 * torch.randn_like(p))
    weights = {k: v for k, v in mod.to_canonical(mod.init(0)).items() if k.startswith("text_encoder.")}
    weights.update(unet_to_canonical(ref.state_dict(), len(a["channel_mults"])))
    state = mod.load_canonical(weights)  # strict: every canonical name mapped exactly once
    inputs = mod.example_inputs(batch_size=2, seed=1)
    got = mod.run(state, inputs)["noise_pred"]
    with torch.no_grad():
        context = state.text_encoder(torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"]))
        want = ref(
            torch.from_numpy(inputs["sample"]), torch.from_numpy(inputs["timestep"]), encoder_hidden_states=context
        ).sample.numpy()
    _close(got, want)


def test_tiny_text_encoder_matches_transformers_clip(tiny_sd):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from metagen.hf import clip_text_to_canonical

    mod, comp = tiny_sd
    te = comp.ctx.arch["text_encoder"]
    torch.manual_seed(0)
    ref = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=te["vocab_size"], hidden_size=te["hidden_size"], intermediate_size=te["ffn_size"],
            num_hidden_layers=te["layers"], num_attention_heads=te["heads"],
            max_position_embeddings=comp.ctx.arch["context"], hidden_act="quick_gelu", layer_norm_eps=te["norm_eps"],
        )
    ).eval()
    weights = {k: v for k, v in mod.to_canonical(mod.init(0)).items() if not k.startswith("text_encoder.")}
    weights.update(clip_text_to_canonical(ref.state_dict()))
    state = mod.load_canonical(weights)
    ids = torch.from_numpy(mod.example_inputs(batch_size=2)["input_ids"])
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded prompt: transformers masks the padded keys, the padded positions' states included
    with torch.no_grad():
        for m in (torch.ones_like(ids), mask):
            _close(state.text_encoder(ids, m).numpy(), ref(input_ids=ids, attention_mask=m).last_hidden_state.numpy())


# ------------------------------------------------------------------ any latent size


@pytest.fixture(scope="module")
def tiny_sd_session(tmp_path_factory):
    """The tiny SD 1.5 model, its reference (numpy) module and canonical weights."""
    from metagen import verify
    from metagen.backends import registry

    comp = compile_spec(example("reference", "sd15_unet.yaml"), tiny=True)
    session = verify.Session(comp.model, str(tmp_path_factory.mktemp("sd15_sizes")), 0)
    mod = session.module(registry.reference())
    return comp, session, mod, mod.to_canonical(mod.init(0))


@pytest.mark.parametrize(
    "backend", ["torch", "onnx", pytest.param("flax", marks=pytest.mark.slow)]  # flax: ~30 s of tracing on 2 cores
)
def test_tiny_unet_any_latent_size_in_every_backend(tiny_sd_session, backend):
    """One compiled graph (spatial dims symbolic) runs at two latent sizes, square
    and not, in every backend, each agreeing with the numpy reference."""
    from metagen.backends import registry

    comp, session, mod, weights = tiny_sd_session
    sample = comp.model.inputs[0]
    assert sample.name == "sample" and sample.type.shape[2:] == ("height", "width")
    ref, b = registry.reference(), registry.BACKENDS[backend]
    rng = np.random.default_rng(0)
    for hw in [(16, 16), (8, 16)]:
        inputs = dict(mod.example_inputs(batch_size=1), sample=rng.standard_normal((1, 4, *hw)).astype(np.float32))
        want = registry.resolve(ref.runner)(session, ref, weights, inputs).outputs["noise_pred"]
        assert want.shape == (1, 4, *hw)
        _close(registry.resolve(b.runner)(session, b, weights, inputs).outputs["noise_pred"], want)


def test_unet_rejects_latent_sizes_it_cannot_halve(tiny_sd):
    mod, _ = tiny_sd
    inputs = dict(mod.example_inputs(batch_size=1), sample=np.zeros((1, 4, 12, 16), np.float32))
    with pytest.raises(ValueError, match=r"sample height and width \(the U-Net halves them 3 times\): got 12 x 16, not multiples of 8"):
        mod.run(mod.init(0), inputs)
