"""Convolutional image classifiers: the ResNet family (He et al. 2015, "Deep
Residual Learning for Image Recognition"), with the conventions torchvision's
`resnet18..152` and transformers' `ResNetForImageClassification` share (v1.5: the
stride of a bottleneck sits on its 3 x 3 convolution).

Stem: 7 x 7 stride-2 convolution without bias, batch norm, activation, 3 x 3
stride-2 max pool. Four stages of residual blocks; stage i is `hidden_size * 2^i`
wide (times 4 at a bottleneck's output), its first block strides by 2 (except in
stage 1) and has a projection shortcut (1 x 1 strided convolution + batch norm)
wherever the shape changes. Global average pool, then the linear classifier.
The conv and batch-norm pieces (`conv_bn`) are shared with the other CNN families.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    finish_image_model,
    act_nbytes, class_name, inference, num_classes, read_spec, training, weight_nbytes,
)
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import Model, ModuleDef, Value
from metagen.ir.types import DType, TensorType

# depth -> (block kind, blocks per stage): the table of He et al., Table 1.
RESNET_DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
CNN_ACTIVATIONS = ("relu", "silu", "gelu", "gelu_tanh", "quick_gelu")  # ungated: one op each
DEFAULT_IMAGE_CLASSES = 1000
TINY_DEPTHS = [2, 1, 1, 1]  # stage 1 keeps an identity block after its first one


@dataclass
class ResNetArch(ArchConfig):
    image_size: int | None = spec_key()
    channels: int | None = spec_key()
    hidden_size: int | None = spec_key()  # the stem's width; stage i is hidden_size * 2^i
    layers: int | None = spec_key()  # the ResNet depth: 18, 34, 50, 101 or 152
    activation: str | None = spec_key()
    norm_eps: float | None = spec_key()
    block: str = derived("")
    depths: list = derived([])
    num_classes: int = derived(0)


def kaiming_std(out_channels: int, kernel: int) -> float:
    """He initialisation, fan-out mode, for a ReLU network (torchvision's ResNet init)."""
    return math.sqrt(2.0 / (out_channels * kernel * kernel))


# ---------------------------------------------------------------- shared pieces


def conv_bn(
    b: ModuleBuilder, name: str, x: Value, out_channels: int, kernel: int, stride: int, eps: float, bn: str,
    frozen: bool = False,
) -> Value:
    """A bias-free convolution (padding kernel // 2) and its batch norm, children
    `name` and `bn` (frozen: DETR's backbone)."""
    cin = x.type.shape[1]
    b.layer(
        name, "conv2d", in_channels=cin, out_channels=out_channels, kernel=kernel, stride=stride,
        padding=kernel // 2, bias=False, init_std=kaiming_std(out_channels, kernel),
    )
    b.layer(bn, "batch_norm", channels=out_channels, eps=eps, frozen=frozen)
    return b.call(bn, b.call(name, x))


def feature_type(channels: int, side: int) -> TensorType:
    return TensorType(DType.f32, ("batch", channels, side, side))


def conv_side(side: int, kernel: int, stride: int) -> int:
    return (side + 2 * (kernel // 2) - kernel) // stride + 1


def residual_block(
    mb: ModelBuilder, kind: str, cin: int, width: int, side: int, stride: int, act: str, eps: float, frozen: bool = False
) -> ModuleDef:
    """One ResNet block on [batch, cin, side, side]: basic (3x3, 3x3) or bottleneck
    (1x1 to `width`, 3x3 strided, 1x1 to 4 * width), plus the shortcut."""
    cout = width * EXPANSION[kind]
    b = mb.module("BasicBlock" if kind == "basic" else "Bottleneck", doc=f"ResNet {kind} block.")
    x = b.input("x", feature_type(cin, side))
    if kind == "basic":
        h = b.op(act, conv_bn(b, "conv1", x, width, 3, stride, eps, "bn1", frozen))
        h = conv_bn(b, "conv2", h, cout, 3, 1, eps, "bn2", frozen)
    else:
        h = b.op(act, conv_bn(b, "conv1", x, width, 1, 1, eps, "bn1", frozen))
        h = b.op(act, conv_bn(b, "conv2", h, width, 3, stride, eps, "bn2", frozen))
        h = conv_bn(b, "conv3", h, cout, 1, 1, eps, "bn3", frozen)
    shortcut = x
    if stride != 1 or cin != cout:
        d = mb.module("Downsample", doc="Projection shortcut: 1x1 strided convolution and batch norm.")
        dx = d.input("x", feature_type(cin, side))
        b.sub("downsample", d.ret(conv_bn(d, "conv", dx, cout, 1, stride, eps, "bn", frozen)))
        shortcut = b.call("downsample", x)
    return b.ret(b.op(act, b.op("add", h, shortcut), hint="out"))


def resnet_stage(
    mb: ModelBuilder, kind: str, cin: int, width: int, side: int, stride: int, depth: int, act: str, eps: float,
    frozen: bool = False,
) -> ModuleDef:
    """`depth` blocks: `first` (strided, projecting), then `rest` (a Repeat of identical blocks)."""
    cout = width * EXPANSION[kind]
    out_side = conv_side(side, 3, stride)
    s = mb.module("Stage", doc=f"ResNet stage of {depth} {kind} blocks.")
    x = s.input("x", feature_type(cin, side))
    s.sub("first", residual_block(mb, kind, cin, width, side, stride, act, eps, frozen))
    h = s.call("first", x)
    if depth > 1:
        s.repeat("rest", residual_block(mb, kind, cout, width, out_side, 1, act, eps, frozen), depth - 1)
        h = s.call("rest", h)
    return s.ret(h)


def stage_sides(image_size: int, stages: int) -> list[int]:
    """The input side of each stage: the stem's conv and pool each halve, then
    every stage but the first halves again."""
    sides = [conv_side(conv_side(image_size, 7, 2), 3, 2)]
    for i in range(stages - 1):
        sides.append(conv_side(sides[-1], 3, 1 if i == 0 else 2))
    return sides


def resnet_trunk(mb: ModelBuilder, top: ModuleBuilder, a: Any, pixels: Value) -> Value:
    """Stem and stages on `pixels`: the last stage's feature map. Children of `top`:
    `conv1`, `bn1`, `layer1`..`layer4`. `frozen` batch norm: DETR's backbone."""
    act, eps, kind, frozen = a["activation"], a["norm_eps"], a["block"], bool(a.get("frozen", False))
    h = top.op(act, conv_bn(top, "conv1", pixels, a["hidden_size"], 7, 2, eps, "bn1", frozen))
    h = top.op("max_pool2d", h, kernel=3, stride=2, padding=1, hint="pooled")
    for i, depth in enumerate(a["depths"]):
        width = a["hidden_size"] * 2**i
        stage = resnet_stage(
            mb, kind, h.type.shape[1], width, h.type.shape[2], 1 if i == 0 else 2, depth, act, eps, frozen
        )
        top.sub(f"layer{i + 1}", stage)
        h = top.call(f"layer{i + 1}", h)
    return h


def resnet_structure(a: Any) -> tuple[str, str] | None:
    if a["layers"] is not None and a["layers"] not in RESNET_DEPTHS:
        return "layers", f"a ResNet's depth is one of {', '.join(map(str, RESNET_DEPTHS))}, not {a['layers']}"
    if a["activation"] not in CNN_ACTIVATIONS:
        return "activation", f"a ResNet's activation is one of {', '.join(CNN_ACTIVATIONS)}, not {a['activation']!r}"
    return None


def block_maps(a: Any) -> list[int]:
    """Elements of the feature maps (conv and norm outputs alike) one image makes
    in the stem and in each block, one entry per piece."""
    s = a["image_size"]
    stem = conv_side(s, 7, 2)
    maps = [3 * a["hidden_size"] * stem * stem]
    kind = a["block"]
    for i, (side, depth) in enumerate(zip(stage_sides(s, len(a["depths"])), a["depths"])):
        width, out = a["hidden_size"] * 2**i, conv_side(side, 3, 1 if i == 0 else 2)
        cout = width * EXPANSION[kind]
        if kind == "basic":
            per_block = 4 * width * out * out + 3 * cout * out * out
        else:
            per_block = 2 * width * side * side + 3 * width * out * out + 3 * cout * out * out
        maps += [per_block] * depth
    return maps


class ResNet(Family):
    name = "resnet"
    pipeline_tag = "image-classification"
    doc = "ResNet image classifier (convolutional)."
    inputs_doc = "pixel_values: float32 [batch, channels, image_size, image_size], normalized pixels"
    outputs_doc = "logits: float32 [batch, num_classes], class scores"
    msl_family_name = "cnn"
    accepts_families = ("cnn",)
    rules = (Rule(("image",), ("label",), ("classification", None), families=("cnn",)),)
    default_objective = "classification"
    tasks = ("classification",)
    default_budget = 26_000_000
    default_budget_source = "ResNet-50 (25.6M with 1000 classes; He et al. 2016), the standard ImageNet CNN baseline"
    unit = UnitOfWork("image", "image")
    config = ResNetArch
    tiny_doc = (
        "32 x 32 images, stem width 8 (stages 8, 16, 32, 64 wide; x4 at a bottleneck's output), blocks per stage "
        "2, 1, 1, 1 (the depth's block kind kept), at most 10 classes, at most 4 channels"
    )

    def configure(self, ctx: CompileContext) -> None:
        a = ResNetArch(image_size=224, channels=3, hidden_size=64, activation="relu", norm_eps=1e-5)
        ctx.arch = read_spec(ctx, a)
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_IMAGE_CLASSES)
        problem = resnet_structure(ctx.arch)
        if problem:
            key, reason = problem
            ctx.sink.error(ctx.spec.architecture.loc(key), f"architecture: {reason}")
        if ctx.spec.task.num_classes is None:
            ctx.sink.note(
                ctx.spec.task.loc(), f"task.num_classes is not given; using {DEFAULT_IMAGE_CLASSES} classes (ImageNet-1k)"
            )

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        if "layers" in ctx.pinned:
            return None
        return Knobs(widths=[{"layers": d} for d in RESNET_DEPTHS], depth_keys=[])

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        a["layers"] = a["layers"] or 18
        a["block"] = RESNET_DEPTHS[a["layers"]][0]
        a.update(image_size=32, hidden_size=8, depths=list(TINY_DEPTHS))
        a["channels"] = a["channels"] if a["channels"] <= 4 else 3
        a["num_classes"] = min(a["num_classes"], 10)

    def finalize(self, ctx: CompileContext) -> str | None:
        a = ctx.arch
        if a["layers"] not in RESNET_DEPTHS:
            return f"a ResNet's depth is one of {', '.join(map(str, RESNET_DEPTHS))}"
        if not a["depths"]:
            a["block"], a["depths"] = RESNET_DEPTHS[a["layers"]][0], list(RESNET_DEPTHS[a["layers"]][1])
        if a["image_size"] < 32:
            return f"image_size {a['image_size']} is smaller than a ResNet's 32x downsampling (32 or more)"
        return None

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        top = mb.module(class_name(ctx.spec.name), doc=f"ResNet-{a['layers']} image classifier.")
        s = a["image_size"]
        pixels = top.input("pixel_values", TensorType(DType.f32, ("batch", a["channels"], s, s)))
        h = resnet_trunk(mb, top, a, pixels)
        pooled = top.op("mean", top.op("flatten_spatial", h), axis=1, hint="pooled")
        top.layer("fc", "linear", in_features=h.type.shape[1], out_features=a["num_classes"], bias=True, init_std=0.01)
        logits = top.call("fc", pooled, hint="logits")
        top_def = top.ret(logits, names=["logits"])
        config = a.pick(ResNetArch.spec_keys()) if isinstance(a, ArchConfig) else {k: a[k] for k in ResNetArch.spec_keys()}
        config.update(block=a["block"], depths=list(a["depths"]), num_classes=a["num_classes"])
        return finish_image_model(self, ctx, mb, top_def, pixels, config)

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Inference: one block's feature maps live at a time, for one image.
        Training: every feature map of one image kept at 16 bits; checkpointed, each
        block's input kept and one block recomputed."""
        maps = block_maps(ctx.arch)
        inputs = sum(m // 4 for m in maps)  # a block's input is about a quarter of its maps
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, max(maps) * act_nbytes(ctx)),
            "training": training(params, sum(maps) * 2, (inputs + max(maps)) * 2),
        }
