"""Vision transformer classifiers (ViT conventions: patch convolution with bias, a
class token, learned positions as one free parameter, pre-norm blocks, a final norm,
the head on the class token). The vision tower is shared with the CLIP family
(blocks.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families.base import Family, Knobs, Rule, derived
from metagen.compiler.families.blocks import (
    finish_image_model,
    VisionTower, block_stack, check_vision, class_name, act_nbytes, inference, tower_training_activations, training, weight_nbytes, num_classes, num_patches, pixel_input,
    pool_tokens, report_structure, resolve_tower, single_tower_knobs, tower_activations, tower_block, vision_embed,
    vision_structure, vision_tiny,
)
from metagen.ir.graph import Model

DEFAULT_IMAGE_CLASSES = 1000  # ImageNet-1k, when task.num_classes is absent


@dataclass
class ViTConfig(VisionTower):
    num_classes: int = derived(0)
    context: int = derived(0)


class ViTClassifier(Family):
    name = "vit"
    pipeline_tag = "image-classification"
    doc = "Vision transformer image classifier."
    inputs_doc = "pixel_values: float32 [batch, channels, image_size, image_size], normalized pixels"
    outputs_doc = "logits: float32 [batch, num_classes], class scores"
    rules = (
        Rule(("image",), ("label",), ("classification", None)),
        Rule(("image",), ("image",), ("classification",), "tutorial step 5's spelling; a warning says the model outputs class logits"),
    )
    default_objective = "classification"
    tasks = ("classification",)
    default_budget = 87_000_000
    default_budget_source = "ViT-B/16 (86.6M with 1000 classes; Dosovitskiy et al. 2021), the standard ImageNet baseline"
    unit = UnitOfWork("image", "image")
    config = ViTConfig
    built = "a vision transformer classifier"
    tiny_doc = (
        "32 x 32 images in 8 x 8 patches (16 patches + class token), d = 64, 2 layers, 4 heads, at most 10 classes, "
        "at most 4 channels"
    )

    def configure(self, ctx: CompileContext) -> None:
        ctx.arch = resolve_tower(ctx, "vit", self.config)
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_IMAGE_CLASSES)
        ctx.arch["context"] = num_patches(ctx.arch) + 1 if ctx.arch["image_size"] % ctx.arch["patch_size"] == 0 else 0
        report_structure(ctx, vision_structure(ctx.arch))
        outs = list(ctx.spec.modality.outputs or [])
        if outs == ["image"]:
            ctx.sink.warning(
                ctx.spec.modality.loc("outputs"),
                "outputs ['image'] with a classification objective: the model outputs class logits "
                f"('logits' [batch, {ctx.arch['num_classes']}]), not an image; write outputs: [\"label\"] to say so",
            )
        if ctx.spec.task.num_classes is None:
            ctx.sink.note(
                ctx.spec.task.loc(),
                f"task.num_classes is not given; using {DEFAULT_IMAGE_CLASSES} classes (ImageNet-1k)",
            )

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, check_vision)

    def tiny(self, ctx: CompileContext) -> None:
        vision_tiny(ctx.arch)
        ctx.arch["num_classes"] = min(ctx.arch["num_classes"], 10)
        ctx.arch["context"] = num_patches(ctx.arch) + 1

    def finalize(self, ctx: CompileContext) -> str | None:
        problem = check_vision(ctx.arch, ctx.pinned)
        if problem is None:
            ctx.arch["context"] = num_patches(ctx.arch) + 1
        return problem

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        d = a.hidden_size
        block = tower_block(mb, ctx, a, num_patches(a) + 1, causal=False)
        top = mb.module(class_name(ctx.spec.name), doc="Vision transformer classifier.")
        pixels = top.input("pixel_values", pixel_input(a))
        x = vision_embed(top, a, pixels, patch_bias=bool(a.bias))
        x = block_stack(top, block, x, a)
        pooled = pool_tokens(top, a, x)
        top.layer("head", "linear", in_features=d, out_features=a.num_classes, bias=True)
        logits = top.call("head", pooled, hint="logits")
        top_def = top.ret(logits, names=["logits"])
        config = a.pick(VisionTower.spec_keys())
        config["num_classes"] = a.num_classes
        return finish_image_model(self, ctx, mb, top_def, pixels, config)

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """One forward of one image (one block live at a time); training keeps every
        block's activations for one image."""
        a = ctx.arch
        tokens = num_patches(a) + 1
        acts = tower_activations(a, tokens, act_nbytes(ctx))
        stored, ckpt = tower_training_activations(a["layers"], tokens, a["hidden_size"])
        return {"inference": inference(params * weight_nbytes(ctx), 0, acts), "training": training(params, stored, ckpt)}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1}, "per_unit": 1}
