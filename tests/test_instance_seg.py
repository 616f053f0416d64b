"""Instance segmentation: DETR with a query-based mask head (family `detr_mask`).

Selection and shapes, the four backends on perturbed weights (pred_masks included),
the loss against transformers' DETR loss plus torch's BCE and transformers' Dice on
the matched masks, torch and flax agreeing on loss and gradients, and synthetic
training lowering the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from conftest import example, load_module
from metagen.backends import registry
from metagen.diagnostics import DiagnosticSink
from metagen.pipeline import compile_spec
from test_families_cnn import _close, _perturb_state

SPEC = example("vision", "instance_segmentation.yaml")


def _near(a, b) -> None:
    """Float32 agreement relative to the output's scale: a mask logit is a d-long dot
    product of perturbed-weight features (values up to ~30), summed in a different order
    by each backend."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    err = np.abs(a - b).max()
    assert err <= 1e-5 * np.abs(b).max() + 1e-6, f"max |a-b| = {err}, scale {np.abs(b).max()}"


def test_selected_for_instance_segmentation_with_masks_at_mask_resolution(tmp_path):
    comp = compile_spec(SPEC, DiagnosticSink())
    assert comp.ctx.family == "detr_mask"
    out = {n: v.type.shape for n, v in zip(comp.model.output_names, comp.model.top_module.outputs)}
    assert out == {"logits": ("batch", 100, 81), "pred_boxes": ("batch", 100, 4), "pred_masks": ("batch", 100, 128, 128)}
    # A mask side the upsampled grid does not divide is cropped, not refused.
    spec = tmp_path / "s.yaml"
    spec.write_text(open(SPEC).read().replace("mask_resolution: 128", "mask_resolution: 10"))
    tiny = compile_spec(str(spec), DiagnosticSink(), tiny=True)
    assert tiny.model.top_module.outputs[2].type.shape == ("batch", 10, 10, 10)
    # The same spec asking for semantic segmentation gets the U-Net, not this family.
    spec.write_text(open(SPEC).read().replace('"instance_segmentation"', '"semantic_segmentation"'))
    assert compile_spec(str(spec), DiagnosticSink(), tiny=True).ctx.family != "detr_mask"


def test_four_backends_agree_on_perturbed_weights(tmp_path):
    comp = compile_spec(SPEC, DiagnosticSink(), tiny=True)
    ref = registry.reference()
    mods = {}
    for name in ("numpy", "torch", "flax"):
        (tmp_path / f"{name}.py").write_bytes(registry.get(name).lower(comp.model, seed=0)[""])
        mods[name] = load_module(str(tmp_path / f"{name}.py"))
    weights = _perturb_state(mods[ref.name].to_canonical(mods[ref.name].init(0)))
    x = mods["numpy"].example_inputs(batch_size=2)
    want = mods["numpy"].run(mods["numpy"].load_canonical(weights), x)
    assert want["pred_masks"].shape == (2, 10, 16, 16) and np.std(want["pred_masks"]) > 0
    for name in ("torch", "flax"):
        got = mods[name].run(mods[name].load_canonical(weights), x)
        for k in ("logits", "pred_boxes", "pred_masks"):
            _near(got[k], want[k])
    import onnxruntime as ort

    (tmp_path / "m.onnx").write_bytes(registry.get("onnx").lower(comp.model, seed=0, weights=weights)[""])
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    _near(sess.run(["pred_masks"], {"pixel_values": x["pixel_values"]})[0], want["pred_masks"])


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    from metagen.synth import synth_files

    root = tmp_path_factory.mktemp("instseg_synth")
    for rel, data in synth_files(compile_spec(SPEC, tiny=True), 0).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return load_module(str(root / "code/torch/train.py")), load_module(str(root / "code/flax/train.py"))


def test_loss_is_detr_plus_bce_and_dice_on_matched_masks(programs):
    """transformers' DETR loss (its matcher, on scipy) for classes and boxes, plus on
    our matched queries torch's mean BCE and transformers' Dice, each over the number
    of targets; flax agrees with torch on the loss and every gradient."""
    from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss, dice_loss

    torch_train, flax_train = programs
    batch = torch_train.DataSource(None, 0).batch(0, 3)
    m = batch["masks"]
    assert m.shape == (3, 4, 16, 16) and m[batch["object_mask"] > 0].sum((1, 2)).min() > 0
    assert m[batch["object_mask"] == 0].sum() == 0
    model = torch_train.M.init(0)
    t = torch_train.to_tensors(batch, "cpu")
    ours = torch_train.compute_loss(model, t)
    ours.backward()
    with torch.no_grad():
        out = model(pixel_values=t["pixel_values"])
    c = torch_train.M.CONFIG
    labels = [
        {"class_labels": t["classes"][i][t["object_mask"][i] > 0], "boxes": t["boxes"][i][t["object_mask"][i] > 0]}
        for i in range(3)
    ]
    config = transformers.DetrConfig(num_labels=c["num_classes"], use_timm_backbone=False, use_pretrained_backbone=False)
    detr = ForObjectDetectionLoss(out["logits"], labels, "cpu", out["pred_boxes"], config)[0]
    matched_batch = dict(batch)
    torch_train.after_forward(matched_batch, {k: v.numpy() for k, v in out.items()})
    matched = matched_batch["box_weight"] > 0
    num = int(batch["object_mask"].sum())
    assert matched.sum() == num
    pred = out["pred_masks"][torch.from_numpy(matched)]
    target = torch.from_numpy(matched_batch["target_masks"][matched])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none").mean((1, 2)).sum() / num
    dice = dice_loss(pred, target.flatten(1), num)
    _close(ours.item(), (detr + bce + dice).item())
    loss_f, grads_f = flax_train.loss_and_grads(flax_train.M.init(0), batch)
    _close(loss_f, ours.item())
    for name, p in model.named_parameters():
        want = p.grad.numpy().astype(np.float64)
        assert np.abs(grads_f[name] - want).max() <= 1e-3 * np.abs(want).max() + 1e-6, name


@pytest.mark.slow
def test_synthetic_training_lowers_the_loss(programs, tmp_path):
    torch_train, flax_train = programs
    torch.set_num_threads(1)
    args = ["--synthetic", "--steps", "60", "--log-every", "1", "--batch-size", "8"]
    t = [loss for _, loss in torch_train.train(args + ["--checkpoint-dir", str(tmp_path / "t")])]
    assert np.mean(t[-10:]) < np.mean(t[:10]) - 0.5, t  # measured: 7.90 -> 6.62
    f = [loss for _, loss in flax_train.train(args[:2] + ["3"] + args[3:] + ["--checkpoint-dir", str(tmp_path / "f")])]
    _close(f[0], t[0])
