"""The diffusion family's image autoencoder (SD's AutoencoderKL) and the pipeline
parts: exact SD 1.5 counts, agreement with diffusers on mapped weights, the
parts in every backend at two sizes, and the budget counting the autoencoder."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import example

from metagen.compiler.families.diffusion_pipeline import pipeline_parts
from metagen.pipeline import compile_spec

SD15_VAE = 83_653_863  # diffusers AutoencoderKL(block_out_channels=[128,256,512,512], layers_per_block=2, latent_channels=4)
SD15_PIPELINE = 1_066_235_307


def _close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    bad = np.abs(a - b) > 1e-5 + 1e-4 * np.abs(b)
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ; max |a-b| = {np.abs(a - b).max():.3g}"


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """The tiny SD 1.5 pipeline (with autoencoder): compilation and torch module."""
    from conftest import compile_to, load_module

    path, comp = compile_to(tmp_path_factory.mktemp("sd15_pipeline"), example("reference", "sd15_pipeline.yaml"), "torch")
    return load_module(str(path)), comp


def test_sd15_pipeline_exact_counts():
    comp = compile_spec(example("reference", "sd15_pipeline.yaml"))
    by = comp.ctx.report["by_module"]
    assert comp.ctx.report["total_params"] == SD15_PIPELINE
    assert by["vae_encoder"]["total"] + by["vae_decoder"]["total"] == SD15_VAE
    parts = pipeline_parts(comp.model)
    assert sorted(parts) == ["text_encoder", "unet", "vae_decoder", "vae_encoder"]
    assert sum(p.param_count() for p in parts.values()) == SD15_PIPELINE
    # the parts partition the model's weights, under the same canonical names
    names = [n for part in parts.values() for n, _ in part.walk_params()]
    assert sorted(names) == sorted(n for n, _ in comp.model.walk_params())
    assert comp.model.output_names == ["noise_pred"]  # the forward is still one denoising step


@pytest.mark.slow  # importing diffusers: ~15 s on a loaded 2-core machine
def test_diffusers_counts_the_sd15_autoencoder_the_same():
    import torch
    from diffusers import AutoencoderKL

    from hf_mapping_unet import diffusers_vae_config

    comp = compile_spec(example("reference", "sd15_pipeline.yaml"))
    with torch.device("meta"):
        ref = AutoencoderKL(**diffusers_vae_config(comp.ctx.arch))
    assert sum(p.numel() for p in ref.parameters()) == SD15_VAE


def test_latent_specs_have_no_autoencoder():
    comp = compile_spec(example("reference", "sd15_unet.yaml"))
    assert "vae_encoder" not in comp.model.top_module.children
    assert sorted(pipeline_parts(comp.model)) == ["text_encoder", "unet"]


def test_budget_counts_the_autoencoder():
    """With pixels the same budget buys a smaller U-Net: the autoencoder is counted."""
    latents = compile_spec(example("tutorial", "step6_diffusion.yaml"), overrides=[("constraints.parameter_budget.max", "500M")])
    pixels = compile_spec(
        example("tutorial", "step6_diffusion.yaml"),
        overrides=[("constraints.parameter_budget.max", "500M"), ("architecture.images", "pixels")],
    )
    by = pixels.ctx.report["by_module"]
    assert by["vae_encoder"]["total"] + by["vae_decoder"]["total"] == SD15_VAE
    assert pixels.ctx.report["total_params"] <= 500e6
    assert pixels.ctx.report["total_params"] == pixels.model.param_count()
    # the U-Net (with its text encoder) gets what the autoencoder leaves
    def unet_share(c):
        return c.ctx.report["total_params"] - sum(
            c.ctx.report["by_module"].get(p, {}).get("total", 0) for p in ("vae_encoder", "vae_decoder")
        )

    unet = [unet_share(c) for c in (pixels, latents)]
    assert unet[0] <= 500e6 - SD15_VAE < unet[1]


def test_autoencoder_under_latents_is_a_warning():
    comp = compile_spec(example("reference", "sd15_unet.yaml"), overrides=[("architecture.autoencoder.layers_per_block", "3")])
    assert any("built only when the images are pixels" in d.message for d in comp.ctx.sink.items)


def test_tiny_autoencoder_matches_diffusers(tiny_pipeline):
    import torch
    from diffusers import AutoencoderKL

    from hf_mapping_unet import diffusers_vae_config
    from metagen.hf import vae_to_canonical

    mod, comp = tiny_pipeline
    a = comp.ctx.arch
    torch.manual_seed(0)
    ref = AutoencoderKL(**diffusers_vae_config(a)).eval()
    with torch.no_grad():
        for p in ref.parameters():  # move norms off 1/0 too, so a mis-mapped one shows
            p.add_(0.05 * torch.randn_like(p))
    weights = {k: v for k, v in mod.to_canonical(mod.init(0)).items() if not k.startswith("vae_")}
    weights.update(vae_to_canonical(ref.state_dict(), len(a["autoencoder"]["block_channels"])))
    state = mod.load_canonical(weights)  # strict: every canonical name mapped exactly once
    image = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 32)).astype(np.float32))
    latents = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 4, 8, 16)).astype(np.float32))
    with torch.no_grad():
        _close(state.vae_encoder(image).numpy(), ref.quant_conv(ref.encoder(image)).numpy())
        _close(state.vae_decoder(latents).numpy(), ref.decode(latents).sample.numpy())


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    from metagen import verify
    from metagen.backends import registry

    comp = compile_spec(example("reference", "sd15_pipeline.yaml"), tiny=True)
    out = {}
    for name, part in pipeline_parts(comp.model).items():
        session = verify.Session(part, str(tmp_path_factory.mktemp(name)), 0)
        mod = session.module(registry.reference())
        out[name] = (session, mod, mod.to_canonical(mod.init(0)))
    return out


SIZES = {"vae_encoder": ("image", [(64, 64), (32, 96)]), "vae_decoder": ("latents", [(8, 8), (4, 12)])}


@pytest.mark.parametrize("backend", ["torch", "onnx", pytest.param("flax", marks=pytest.mark.slow)])
@pytest.mark.parametrize("part", ["vae_encoder", "vae_decoder", "text_encoder", "unet"])
def test_tiny_pipeline_parts_agree_in_every_backend(tiny_parts, part, backend):
    """Each part on the reference's weights, in each backend, against numpy; the
    autoencoder at two sizes (square and not)."""
    from metagen.backends import registry

    session, mod, weights = tiny_parts[part]
    ref, b = registry.reference(), registry.BACKENDS[backend]
    feeds = [mod.example_inputs(batch_size=1)]
    if part in SIZES:
        name, sizes = SIZES[part]
        rng = np.random.default_rng(0)
        feeds = [{name: rng.uniform(-1, 1, (1, feeds[0][name].shape[1], *hw)).astype(np.float32)} for hw in sizes]
    for inputs in feeds:
        want = registry.resolve(ref.runner)(session, ref, weights, inputs).outputs
        got = registry.resolve(b.runner)(session, b, weights, inputs).outputs
        assert list(got) == list(want) == list(session.model.output_names)
        for k in want:
            _close(got[k], want[k])


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_padded_prompts_text_states_in_every_backend(tiny_parts, backend):
    """A right-padded batch of prompts through the text encoder part: at every real
    position each row's states are its states alone, in numpy (the reference),
    torch and onnxruntime alike, and all states (padded positions' too, which
    attend to the real tokens only) agree across backends."""
    from metagen.backends import registry

    session, mod, weights = tiny_parts["text_encoder"]
    ref, b = registry.reference(), registry.BACKENDS[backend]
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 256, (2, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    ids[1, 4:] = 0

    def states(feed, backend):
        return registry.resolve(backend.runner)(session, backend, weights, feed).outputs["last_hidden_state"]

    want = states({"input_ids": ids, "attention_mask": mask}, ref)
    got = states({"input_ids": ids, "attention_mask": mask}, b)
    _close(got, want)
    for r in range(2):
        real = mask[r] == 1
        alone = states({"input_ids": ids[r : r + 1, real], "attention_mask": mask[r : r + 1, real]}, b)
        _close(got[r, real], alone[0])
    # the mask matters: unmasked, the padded positions attend to the padding before them
    unmasked = states({"input_ids": ids, "attention_mask": np.ones_like(ids)}, b)
    assert np.abs(unmasked[1, 5:] - got[1, 5:]).max() > 1e-3


def test_autoencoder_rejects_sizes_it_cannot_halve(tiny_pipeline):
    mod, _ = tiny_pipeline
    with pytest.raises(ValueError, match=r"image height and width \(the autoencoder halves them 3 times\): got 60 x 64"):
        import torch

        mod.init(0).vae_encoder(torch.zeros(1, 3, 60, 64))
