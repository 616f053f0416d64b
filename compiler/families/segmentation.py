"""Semantic segmentation: a U-Net (Ronneberger et al. 2015, "U-Net: Convolutional
Networks for Biomedical Image Segmentation") with the conventions of today's common
implementations: padded 3 x 3 convolutions (so the mask keeps the image's side), batch
norm after every convolution, 2 x 2 max pooling down, nearest 2x upsampling and a
3 x 3 "up-convolution" up, skips joined by channel concatenation, a 1 x 1 head to
the class scores. The conv + batch-norm pieces are the ResNet family's (cnn.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    finish_image_model,
    act_nbytes, class_name, inference, num_classes, read_spec, training, weight_nbytes,
)
from metagen.compiler.families.cnn import CNN_ACTIVATIONS, conv_bn, feature_type
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import Model, ModuleDef, Value
from metagen.ir.types import DType, TensorType

DEFAULT_MULTS = [1, 2, 4, 8, 16]  # Ronneberger et al.: 64, 128, 256, 512, 1024 channels
DEFAULT_SIDE = 256
DEFAULT_SEGMENT_CLASSES = 2  # foreground / background
WIDTHS = list(range(8, 257, 8))  # base_channels the fitter tries


@dataclass
class SegmentationArch(ArchConfig):
    image_size: int | None = spec_key()
    channels: int | None = spec_key()
    base_channels: int | None = spec_key()
    channel_mults: list | None = spec_key()
    activation: str | None = spec_key()
    norm_eps: float | None = spec_key()
    num_classes: int = derived(0)
    mask_resolution: int = derived(0)
    dice: bool = derived(False)


def double_conv(b: ModuleBuilder, x: Value, width: int, act: str, eps: float) -> Value:
    """(3 x 3 conv, batch norm, activation) twice: children conv1, bn1, conv2, bn2."""
    h = b.op(act, conv_bn(b, "conv1", x, width, 3, 1, eps, "bn1"))
    return b.op(act, conv_bn(b, "conv2", h, width, 3, 1, eps, "bn2"))


def down_level(mb: ModelBuilder, cin: int, width: int, side: int, act: str, eps: float) -> ModuleDef:
    b = mb.module("Down", doc="2x2 max pool, then two 3x3 conv + batch norm + activation.")
    x = b.input("x", feature_type(cin, side))
    return b.ret(double_conv(b, b.op("max_pool2d", x, kernel=2, stride=2), width, act, eps))


def up_level(mb: ModelBuilder, cin: int, width: int, side: int, act: str, eps: float) -> ModuleDef:
    """x [cin, side] up to [width, 2 side] (nearest 2x, 3x3 up-convolution), joined
    with the skip [width, 2 side], then two conv blocks."""
    b = mb.module("Up", doc="Upsample, up-convolution, concatenate the skip, two 3x3 conv + batch norm + activation.")
    x = b.input("x", feature_type(cin, side))
    skip = b.input("skip", feature_type(width, 2 * side))
    b.layer("up_conv", "conv2d", in_channels=cin, out_channels=width, kernel=3, padding=1, bias=True, init_std=(2.0 / (9 * width)) ** 0.5)
    up = b.call("up_conv", b.op("upsample_nearest", x, factor=2))
    joined = b.op("concat", skip, up, axis=1, hint="joined")
    return b.ret(double_conv(b, joined, width, act, eps))


def output_level(a: Any) -> int:
    """How many levels above full resolution the mask is (image_size / mask = 2^j)."""
    ratio, j = a["image_size"] // a["mask_resolution"], 0
    while ratio > 1:
        ratio //= 2
        j += 1
    return j


def check_segmentation(a: Any) -> tuple[str, str] | None:
    """(key, reason) when the sizes cannot make a U-Net."""
    levels = len(a["channel_mults"])
    if a["activation"] not in CNN_ACTIVATIONS:
        return "activation", f"a U-Net's activation is one of {', '.join(CNN_ACTIVATIONS)}, not {a['activation']!r}"
    if levels < 2:
        return "channel_mults", "a U-Net needs at least 2 levels (channel_mults of 2 or more entries)"
    if a["image_size"] % 2 ** (levels - 1):
        return "image_size", f"image_size {a['image_size']} is not divisible by 2^{levels - 1} (one halving per level below the first)"
    m = a["mask_resolution"]
    ratio = a["image_size"] // m if m and a["image_size"] % m == 0 else 0
    if not ratio or ratio & (ratio - 1) or ratio > 2 ** (levels - 2):
        return "mask_resolution", (
            f"mask_resolution {m} must be the image side {a['image_size']} divided by a power of two up to "
            f"2^{levels - 2} (the decoder stops at that level, after at least one upsampling)"
        )
    return None


class SegmentationUNet(Family):
    name = "segmentation_unet"
    pipeline_tag = "image-segmentation"
    doc = "U-Net semantic segmentation (convolutional encoder-decoder with skips)."
    inputs_doc = "pixel_values: float32 [batch, channels, image_size, image_size], normalized pixels"
    outputs_doc = "logits: float32 [batch, num_classes, mask_resolution, mask_resolution], per-pixel class scores"
    msl_family_name = "cnn"
    accepts_families = ("auto", "cnn", "unet")
    built = "a U-Net segmenter"
    rules = (Rule(("image",), ("segmentation_mask",), ("semantic_segmentation", None)),)
    default_objective = "semantic_segmentation"
    default_budget = 35_000_000
    default_budget_source = (
        "U-Net with 64 base channels and 5 levels (Ronneberger et al. 2015): 31M with transposed convolutions, "
        "34.5M here with 3x3 up-convolutions"
    )
    tasks = ("semantic_segmentation",)
    unit = UnitOfWork("image", "image")
    config = SegmentationArch
    tiny_doc = (
        "32 x 32 images (larger only beyond 6 levels), base 8 channels, the same number of levels with multipliers "
        "capped at 4, the mask at the same fraction of the image, at most 10 classes, at most 4 channels"
    )

    def configure(self, ctx: CompileContext) -> None:
        task = ctx.spec.task
        mask = task.mask_resolution if task.given("mask_resolution") else None
        a = SegmentationArch(
            image_size=mask or DEFAULT_SIDE, channels=3, channel_mults=list(DEFAULT_MULTS), activation="relu", norm_eps=1e-5
        )
        ctx.arch = read_spec(ctx, a)
        a = ctx.arch
        a["mask_resolution"] = mask or a["image_size"]
        a["num_classes"] = num_classes(ctx, DEFAULT_SEGMENT_CLASSES)
        a["dice"] = "dice" in (ctx.spec.training.objective or [])
        problem = check_segmentation(a)
        if problem:
            key, reason = problem
            section = task if key == "mask_resolution" else ctx.spec.architecture
            where = section.loc(key) if section.given(key) else self.origin(ctx)
            ctx.sink.error(where, f"{'task' if key == 'mask_resolution' else 'architecture'}: {reason}")
        if task.num_classes is None:
            ctx.sink.note(task.loc(), f"task.num_classes is not given; using {DEFAULT_SEGMENT_CLASSES} classes (foreground, background)")

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if "base_channels" in ctx.pinned:
            return None
        return Knobs(widths=[{"base_channels": w} for w in WIDTHS], depth_keys=[])

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        levels = len(a["channel_mults"])
        j = output_level(a)
        a["channel_mults"] = [min(m, 4) for m in a["channel_mults"]]
        a["image_size"] = max(32, 2 ** levels)
        a["mask_resolution"] = a["image_size"] // 2**j
        a["base_channels"] = 8
        a["channels"] = a["channels"] if a["channels"] <= 4 else 3
        a["num_classes"] = min(a["num_classes"], 10)

    def finalize(self, ctx: CompileContext) -> str | None:
        problem = check_segmentation(ctx.arch)
        return problem[1] if problem else None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        act, eps = a["activation"], a["norm_eps"]
        widths = [a["base_channels"] * m for m in a["channel_mults"]]
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc="U-Net semantic segmentation.")
        s = a["image_size"]
        pixels = top.input("pixel_values", TensorType(DType.f32, ("batch", a["channels"], s, s)))
        # Encoder: `inc` at full resolution, `down{i}` halving.
        inc = mb.module("InConv", doc="Two 3x3 conv + batch norm + activation at full resolution.")
        ix = inc.input("x", pixels.type)
        top.sub("inc", inc.ret(double_conv(inc, ix, widths[0], act, eps)))
        skips = [top.call("inc", pixels)]
        for i in range(1, len(widths)):
            side = s // 2 ** (i - 1)
            top.sub(f"down{i}", down_level(mb, widths[i - 1], widths[i], side, act, eps))
            skips.append(top.call(f"down{i}", skips[-1]))
        # Decoder: `up{k}` doubling, down to the mask's level.
        h = skips.pop()
        stop = output_level(a)
        for k, i in enumerate(range(len(widths) - 1, stop, -1), start=1):
            side = s // 2**i
            top.sub(f"up{k}", up_level(mb, widths[i], widths[i - 1], side, act, eps))
            h = top.call(f"up{k}", h, skips[i - 1])
        top.layer("head", "conv2d", in_channels=h.type.shape[1], out_channels=a["num_classes"], kernel=1, bias=True, init_std=0.01)
        logits = top.call("head", h, hint="logits")
        top_def = top.ret(logits, names=["logits"])
        keys = SegmentationArch.spec_keys()
        config = {k: (list(a[k]) if isinstance(a[k], list) else a[k]) for k in keys}
        config.update(num_classes=a["num_classes"], mask_resolution=a["mask_resolution"], dice=a["dice"])
        return finish_image_model(self, ctx, mb, top_def, pixels, config)

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Every skip is live until its decoder level; the largest level's working
        set (its skip, two conv outputs with their norms, the joined input) on top.
        Training keeps every feature map of one image at 16 bits."""
        a = ctx.arch
        s = a["image_size"]
        widths = [a["base_channels"] * m for m in a["channel_mults"]]
        level = [w * (s // 2**i) ** 2 for i, w in enumerate(widths)]
        skips = sum(level)
        working = 6 * max(level)
        per_level_stored = sum(10 * n for n in level)
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, (skips + working) * act_nbytes(ctx)),
            "training": training(params, per_level_stored * 2, (skips + working) * 2),
        }
