"""Diffusion sampling (backends/runtime/sampling.py, copied into every generated
module as `sample()`): scheduler steps equal diffusers', the whole loop equals a
diffusers-scheduler loop over the same U-Net, and `sample` agrees across backends
at two resolutions, with and without the autoencoder."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compile_to, example, load_module

from metagen.backends.runtime import sampling
from metagen.compiler.objectives import DIFFUSION_SCHEDULE

TINY_STEPS = 3


def _close(a, b, rtol=1e-4, atol=1e-5):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    bad = np.abs(a - b) > atol + rtol * np.abs(b)
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ; max |a-b| = {np.abs(a - b).max():.3g}"


def _diffusers(kind: str, steps: int):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    s = DIFFUSION_SCHEDULE
    common = dict(num_train_timesteps=s["steps"], beta_start=s["beta_start"], beta_end=s["beta_end"], beta_schedule="scaled_linear")
    if kind == "ddim":  # Stable Diffusion's DDIM settings
        ref = DDIMScheduler(**common, set_alpha_to_one=False, steps_offset=1, clip_sample=False, timestep_spacing="leading")
    else:
        ref = EulerDiscreteScheduler(**common)
    ref.set_timesteps(steps)
    return ref


@pytest.mark.parametrize("kind", ["ddim", "euler"])
def test_scheduler_step_equals_diffusers(kind):
    import torch

    ours = sampling._SCHEDULERS[kind](DIFFUSION_SCHEDULE, 30)
    ref = _diffusers(kind, 30)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=1e-6)
    assert ours.init_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)
    rng = np.random.default_rng(0)
    for i in (0, 11, 29):
        x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32) * 3
        eps = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
        t = ref.timesteps[i]
        if kind == "euler":
            ref._step_index = None  # the step index follows the timestep passed
            _close(ours.scale_input(x, i), ref.scale_model_input(torch.from_numpy(x), t).numpy())
            ref._step_index = None
        want = ref.step(torch.from_numpy(eps), t, torch.from_numpy(x)).prev_sample.numpy()
        _close(ours.step(eps, i, x), want)
    x0, noise = rng.standard_normal((1, 4, 8, 8)).astype(np.float32), rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    if kind == "euler":  # img2img starts at index 12: diffusers' pipeline sets the begin index
        ref._step_index = None
        ref.set_begin_index(12)
    want = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), ref.timesteps[12:13]).numpy()
    _close(ours.add_noise(x0, noise, 12), want)


@pytest.fixture(scope="module")
def tiny_latent(tmp_path_factory):
    """Tutorial step 6 at --tiny (latents, no autoencoder), torch module."""
    path, comp = compile_to(tmp_path_factory.mktemp("step6"), example("tutorial", "step6_diffusion.yaml"), "torch")
    return load_module(str(path)), comp


@pytest.mark.parametrize("kind", ["ddim", "euler"])
def test_sample_equals_a_diffusers_scheduler_loop(tiny_latent, kind):
    """Text to latents with guidance: our loop, and diffusers' scheduler stepping the
    same U-Net from the same noise, give the same latents."""
    import torch

    mod, comp = tiny_latent
    state = mod.init(0)
    ids = mod.example_inputs(batch_size=1, seed=1)["input_ids"]
    got = mod.sample(state, ids, steps=TINY_STEPS, guidance_scale=5.0, seed=3, scheduler=kind)
    s = comp.model.config["sample_size"]
    ref = _diffusers(kind, TINY_STEPS)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 4, s, s)).astype(np.float32)) * ref.init_noise_sigma
    uncond = sampling._unconditional_ids(ids, comp.model.config["text_encoder"]["vocab_size"])
    both = np.concatenate([uncond, ids])
    for t in ref.timesteps:
        x_in = ref.scale_model_input(torch.cat([x, x]), t).numpy()
        eps = mod.run(state, {"sample": x_in, "timestep": np.full(2, float(t), np.float32), "input_ids": both})["noise_pred"]
        eps = eps[:1] + 5.0 * (eps[1:] - eps[:1])
        x = ref.step(torch.from_numpy(eps), t, x).prev_sample
    assert got.shape == (1, 4, s, s) and got.dtype == np.float32
    _close(got, x.numpy(), rtol=1e-3, atol=1e-4)


def test_sample_latents_at_two_resolutions_and_seeds(tiny_latent):
    mod, comp = tiny_latent
    state = mod.init(0)
    ids = mod.example_inputs(batch_size=2, seed=1)["input_ids"]
    s = comp.model.config["sample_size"]
    plain = dict(steps=2, guidance_scale=1.0)  # no guidance: one U-Net call per step (guidance is tested above)
    a = mod.sample(state, ids, seed=0, **plain)
    assert a.shape == (2, 4, s, s) and a.dtype == np.float32
    assert mod.sample(state, ids, height=2 * s, width=s, seed=0, **plain).shape == (2, 4, 2 * s, s)
    np.testing.assert_array_equal(a, mod.sample(state, ids, seed=0, **plain))
    assert np.abs(a - mod.sample(state, ids, seed=1, **plain)).max() > 1e-3
    # image-to-image on latents: fewer steps run from the given latents
    b = mod.sample(state, ids, image=a, strength=0.5, seed=0, **plain)
    assert b.shape == a.shape and np.abs(b - a).max() > 1e-4
    with pytest.raises(ValueError, match="scheduler must be one of"):
        mod.sample(state, ids, steps=2, scheduler="pndm")
    with pytest.raises(ValueError, match="strength must be in"):
        mod.sample(state, ids, image=a, strength=0.0)


@pytest.fixture(scope="module")
def tiny_pixel_modules(tmp_path_factory):
    """The tiny SD 1.5 pipeline (with autoencoder) as torch and numpy modules."""
    folder = tmp_path_factory.mktemp("sd15_pipeline_sampling")
    spec = example("reference", "sd15_pipeline.yaml")
    return {b: load_module(str(compile_to(folder, spec, b)[0])) for b in ("torch", "numpy")}


def test_sample_images_at_two_resolutions_torch_equals_numpy(tiny_pixel_modules):
    torch_mod, np_mod = tiny_pixel_modules["torch"], tiny_pixel_modules["numpy"]
    weights = torch_mod.to_canonical(torch_mod.init(0))
    ts, ns = torch_mod.load_canonical(weights), np_mod.load_canonical(weights)
    ids = torch_mod.example_inputs(batch_size=1, seed=2)["input_ids"]
    for hw in [(64, 64), (128, 64)]:
        got = torch_mod.sample(ts, ids, steps=2, height=hw[0], width=hw[1], seed=4)
        assert got.shape == (1, 3, *hw) and got.dtype == np.float32
        assert got.min() >= -1.0 and got.max() <= 1.0
        _close(got, np_mod.sample(ns, ids, steps=2, height=hw[0], width=hw[1], seed=4))
    # text + image -> image
    image = np.random.default_rng(5).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    got = torch_mod.sample(ts, ids, image=image, strength=0.6, steps=2, scheduler="euler", seed=4)
    assert got.shape == (1, 3, 64, 64)
    _close(got, np_mod.sample(ns, ids, image=image, strength=0.6, steps=2, scheduler="euler", seed=4))
    with pytest.raises(ValueError, match="multiples of 8"):
        torch_mod.sample(ts, ids, steps=1, height=60, width=64)


@pytest.mark.slow  # flax traces the U-Net per shape: ~1 min on a loaded 2-core machine
def test_sample_flax_equals_torch(tmp_path):
    spec = example("reference", "sd15_pipeline.yaml")
    torch_mod = load_module(str(compile_to(tmp_path, spec, "torch")[0]))
    flax_mod = load_module(str(compile_to(tmp_path, spec, "flax")[0]))
    weights = torch_mod.to_canonical(torch_mod.init(0))
    ids = torch_mod.example_inputs(batch_size=1, seed=2)["input_ids"]
    for hw in [(64, 64), (64, 128)]:
        want = torch_mod.sample(torch_mod.load_canonical(weights), ids, steps=2, height=hw[0], width=hw[1], seed=4)
        _close(flax_mod.sample(flax_mod.load_canonical(weights), ids, steps=2, height=hw[0], width=hw[1], seed=4), want)


def test_onnx_pipeline_folder_samples_like_torch(tmp_path, tiny_pixel_modules):
    """The ONNX folder (diffusers' layout: one graph per part, dynamic sizes) samples
    in onnxruntime what the torch module samples, at two resolutions."""
    import onnx

    from metagen.backends import registry
    from metagen.onnx_pipeline import OnnxDiffusionPipeline
    from metagen.pipeline import compile_spec

    torch_mod = tiny_pixel_modules["torch"]
    weights = torch_mod.to_canonical(torch_mod.init(0))
    comp = compile_spec(example("reference", "sd15_pipeline.yaml"), tiny=True)
    files = registry.get("onnx").lower(comp.model, weights=weights)
    assert sorted(files) == [
        "", "pipeline.json", "text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx",
    ]
    for rel, data in files.items():
        path = tmp_path / (rel or "model.onnx")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    unet = onnx.load(str(tmp_path / "unet" / "model.onnx"))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in unet.graph.input}
    assert dims == {"sample": ["batch", 4, "height", "width"], "timestep": ["batch"], "encoder_hidden_states": ["batch", "seq", 32]}
    pipe = OnnxDiffusionPipeline(str(tmp_path))
    state = torch_mod.load_canonical(weights)
    ids = torch_mod.example_inputs(batch_size=1, seed=2)["input_ids"]
    for hw, guidance in [((64, 64), 7.5), ((64, 128), 1.0)]:
        kw = dict(steps=2, height=hw[0], width=hw[1], seed=4, guidance_scale=guidance)
        _close(pipe.sample(ids, **kw), torch_mod.sample(state, ids, **kw))
    image = np.random.default_rng(5).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    kw = dict(image=image, strength=0.5, steps=2, seed=4, guidance_scale=1.0)  # one step, from the encoded image
    _close(pipe.sample(ids, **kw), torch_mod.sample(state, ids, **kw))
