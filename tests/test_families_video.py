"""The video families: the factorised video transformer classifier (ViViT model 2)
is selected for video -> label, counts what its structure says, and agrees across
every backend at two clip lengths (frames are symbolic)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import example

from metagen.diagnostics import CompileError
from metagen.pipeline import compile_spec

SPEC = example("tutorial", "pattern_video_classifier.yaml")


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _vivit_count(d: int, ffn: int, layers: int, temporal: int, frames: int, patch: int, image: int, classes: int, ch: int = 3) -> int:
    """ViViT-FE's parameters from its structure (pre-LN ViT blocks with biases)."""
    block = (4 * d * d + 4 * d) + (2 * d * ffn + ffn + d) + 2 * 2 * d
    spatial = ch * patch * patch * d + d + d + ((image // patch) ** 2 + 1) * d + layers * block + 2 * d
    temporal_part = d + (frames + 1) * d + temporal * block + 2 * d
    return spatial + temporal_part + d * classes + classes


def test_video_label_selects_the_video_transformer_and_fits_the_budget():
    comp = compile_spec(SPEC)
    assert comp.model.family == "video_vit"
    a = comp.ctx.arch
    assert comp.model.param_count() <= 30_000_000
    assert comp.model.param_count() == _vivit_count(
        a["hidden_size"], a["ffn_size"], a["layers"], a["temporal_layers"], a["frames"], a["patch_size"], a["image_size"], 400
    )
    assert comp.model.inputs[0].type.shape == ("batch", "frames", 3, 224, 224)


def test_vivit_base_count():
    """ViViT-B factorised encoder (768 wide, 12 + 4 layers, 16 frames, 400 classes):
    the count the family's default budget cites."""
    over = [("architecture.hidden_size", "768"), ("architecture.layers", "12"), ("architecture.heads", "12"),
            ("architecture.ffn_size", "3072"), ("constraints.parameter_budget.max", '"200M"')]
    comp = compile_spec(SPEC, overrides=over)
    n = comp.model.param_count()
    assert n == _vivit_count(768, 3072, 12, 4, 16, 16, 224, 400)
    assert 114_000_000 < n < 115_000_000


@pytest.mark.parametrize("override, message", [
    (("architecture.pooling", "mean"), "reads each frame's class token"),
    (("architecture.position", "none"), "use 'learned'"),
])
def test_bad_video_conventions_are_diagnosed(override, message):
    with pytest.raises(CompileError, match=message):
        compile_spec(SPEC, overrides=[override])


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    from metagen import verify
    from metagen.backends import registry

    comp = compile_spec(SPEC, tiny=True)
    session = verify.Session(comp.model, str(tmp_path_factory.mktemp("video_vit")), 0)
    mod = session.module(registry.reference())
    return comp, session, mod, mod.to_canonical(mod.init(0))


@pytest.mark.parametrize("backend", ["torch", "onnx", pytest.param("flax", marks=pytest.mark.slow)])
def test_tiny_video_transformer_any_clip_length_in_every_backend(tiny_session, backend):
    """One compiled graph runs clips of 1 and 3 frames in every backend, each
    agreeing with the numpy reference; the logits depend on every frame."""
    from metagen.backends import registry

    comp, session, mod, weights = tiny_session
    assert comp.model.inputs[0].type.shape[:2] == ("batch", "frames")
    ref, b = registry.reference(), registry.BACKENDS[backend]
    rng = np.random.default_rng(0)
    for frames in (1, 3):
        video = rng.standard_normal((2, frames, 3, 32, 32)).astype(np.float32)
        want = registry.resolve(ref.runner)(session, ref, weights, {"pixel_values": video}).outputs["logits"]
        assert want.shape == (2, comp.ctx.arch["num_classes"])
        _close(registry.resolve(b.runner)(session, b, weights, {"pixel_values": video}).outputs["logits"], want)
    changed = video.copy()
    changed[:, -1] += 1.0
    other = registry.resolve(ref.runner)(session, ref, weights, {"pixel_values": changed}).outputs["logits"]
    assert not np.allclose(other, want)


# ------------------------------------------------------------------ video diffusion U-Net

T2V = example("tutorial", "pattern_text_to_video.yaml")
PIN = [("architecture.base_channels", "64"), ("architecture.res_blocks", "2"), ("architecture.transformer_depth", "1"),
       ("architecture.frames", "8"), ("constraints.parameter_budget.max", '"2B"')]


def _temporal_params(ch: int, frames: int) -> int:
    """One temporal transformer: norm, proj_in, frame positions, pre-LN attention
    (fused qkv without bias, o_proj with), pre-LN 4x GELU MLP, proj_out."""
    return 2 * ch + (ch * ch + ch) + frames * ch + 2 * ch + (3 * ch * ch + ch * ch + ch) + 2 * ch + (4 * ch * ch + 4 * ch) + (4 * ch * ch + ch) + (ch * ch + ch)


@pytest.mark.parametrize("inputs", ['["text"]', '["text", "video"]', '["video"]'])
def test_video_outputs_select_the_video_unet(inputs):
    comp = compile_spec(T2V, overrides=[("modality.inputs", inputs)])
    assert comp.model.family == "video_unet"
    assert comp.model.inputs[0].type.shape == ("batch", "frames", 4, "height", "width")


def test_video_unet_is_the_image_unet_plus_temporal_layers():
    video = compile_spec(T2V, overrides=PIN)
    image = compile_spec(T2V, overrides=PIN[:3] + [("modality.outputs", '["image"]'), ("constraints.parameter_budget.max", '"2B"')])
    assert image.model.family == "diffusion_unet"
    a = video.ctx.arch
    chans = [64 * m for m in a["channel_mults"]]
    temporal = sum((2 * 2 + 1) * _temporal_params(ch, 8) for ch in chans) + _temporal_params(chans[-1], 8)
    assert video.model.param_count() == image.model.param_count() + temporal


def test_video_unet_refuses_pixels():
    with pytest.raises(CompileError, match="denoises latents"):
        compile_spec(T2V, overrides=[("architecture.images", "pixels")])


@pytest.fixture(scope="module")
def tiny_t2v(tmp_path_factory):
    from metagen import verify
    from metagen.backends import registry

    comp = compile_spec(T2V, tiny=True)
    session = verify.Session(comp.model, str(tmp_path_factory.mktemp("video_unet")), 0)
    mod = session.module(registry.reference())
    return comp, session, mod, mod.to_canonical(mod.init(0))


@pytest.mark.parametrize("backend", ["torch", "onnx", pytest.param("flax", marks=pytest.mark.slow)])
def test_tiny_video_unet_any_clip_in_every_backend(tiny_t2v, backend):
    """One compiled graph (frames, height, width symbolic) runs a 1-frame square
    clip and a 3-frame non-square one in every backend, each agreeing with the numpy
    reference; a frame's noise prediction depends on the other frames (the temporal
    layers mix them)."""
    from metagen.backends import registry

    comp, session, mod, weights = tiny_t2v
    ref, b = registry.reference(), registry.BACKENDS[backend]
    rng = np.random.default_rng(0)
    for frames, hw in [(1, (8, 8)), (3, (8, 16))]:
        inputs = dict(mod.example_inputs(batch_size=1), sample=rng.standard_normal((1, frames, 4, *hw)).astype(np.float32))
        want = registry.resolve(ref.runner)(session, ref, weights, inputs).outputs["noise_pred"]
        assert want.shape == (1, frames, 4, *hw)
        _close(registry.resolve(b.runner)(session, b, weights, inputs).outputs["noise_pred"], want)
    changed = dict(inputs, sample=inputs["sample"].copy())
    changed["sample"][:, 2] += 1.0
    other = registry.resolve(ref.runner)(session, ref, weights, changed).outputs["noise_pred"]
    assert not np.allclose(other[:, 0], want[:, 0])


@pytest.fixture(scope="module")
def t2v_modules(tmp_path_factory):
    from conftest import compile_to, load_module

    folder = tmp_path_factory.mktemp("t2v_sampling")
    return {b: load_module(str(compile_to(folder, T2V, b)[0])) for b in ("torch", "numpy")}


def test_sample_clips_torch_equals_numpy(t2v_modules):
    """sample() reuses the image loop: text -> video with guidance, then video ->
    video from that clip; torch and numpy draw the same noise and agree."""
    torch_mod, np_mod = t2v_modules["torch"], t2v_modules["numpy"]
    weights = np_mod.to_canonical(np_mod.init(0))
    ts, ns = torch_mod.load_canonical(weights), np_mod.load_canonical(weights)
    ids = np_mod.example_inputs(batch_size=1, seed=2)["input_ids"]
    clip = np_mod.sample(ns, ids, steps=2, guidance_scale=3.0, frames=3, height=8, width=16, seed=1)
    assert clip.shape == (1, 3, 4, 8, 16) and np.isfinite(clip).all()
    _close(torch_mod.sample(ts, ids, steps=2, guidance_scale=3.0, frames=3, height=8, width=16, seed=1), clip)
    again = np_mod.sample(ns, ids, video=clip, strength=0.5, steps=4, guidance_scale=1.0, scheduler="euler", seed=2)
    assert again.shape == clip.shape
    _close(torch_mod.sample(ts, ids, video=clip, strength=0.5, steps=4, guidance_scale=1.0, scheduler="euler", seed=2), again)
    with pytest.raises(ValueError, match="frames must be in 1..4"):
        np_mod.sample(ns, ids, steps=1, frames=5)
