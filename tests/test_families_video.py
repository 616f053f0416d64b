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
