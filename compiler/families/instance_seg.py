"""Instance segmentation: DETR (detection.py) with a query-based mask head, as
MaskFormer (Cheng et al. 2021, "Per-Pixel Classification is Not All You Need") and
DETR's segmentation head do it without RoI machinery: each decoded object query goes
through a 3-layer MLP to a mask embedding; per-pixel features come from the
projected backbone map, nearest-upsampled to (at least) `task.mask_resolution`, then
a 3 x 3 conv, ReLU and a 1 x 1 conv (a one-level pixel decoder); mask logits are the
dot product of every query's embedding with every pixel's feature, one
[mask_resolution, mask_resolution] map per query (sigmoid: the pixel's probability
of belonging to that query's object). Class and box heads are DETR's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families.base import Rule, derived
from metagen.compiler.families.blocks import act_nbytes, inference, training
from metagen.compiler.families.detection import Detr, DetrArch, box_mlp
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import Value

MASK_STRIDE = 4  # DETR's mask head and MaskFormer's pixel decoder predict at 1/4 of the image side
TINY_MASK = 16


@dataclass
class DetrMaskArch(DetrArch):
    mask_resolution: int = derived(0)


class DetrMask(Detr):
    name = "detr_mask"
    pipeline_tag = "image-segmentation"
    doc = "DETR with a query-based mask head (MaskFormer-style): instance segmentation."
    outputs_doc = Detr.outputs_doc + (
        "; pred_masks: float32 [batch, num_queries, mask_resolution, mask_resolution], per-query mask logits"
    )
    built = "a DETR instance segmenter"
    default_budget = 45_000_000
    default_budget_source = "DETR-R50 (41.5M) plus its mask head (Carion et al. 2020, section 4.4)"
    rules = (Rule(("image",), ("segmentation_mask",), ("instance_segmentation",)),)
    default_objective = "instance_segmentation"
    tasks = ("instance_segmentation",)
    config = DetrMaskArch
    tiny_doc = Detr.tiny_doc + f", masks at most {TINY_MASK} x {TINY_MASK}"

    def configure(self, ctx: CompileContext) -> None:
        super().configure(ctx)
        arch = ctx.arch
        ctx.arch = DetrMaskArch(**{k: arch[k] for k in DetrArch.spec_keys()})
        for k in ("num_queries", "num_classes", "backbone"):
            ctx.arch[k] = arch[k]
        task = ctx.spec.task
        given = task.mask_resolution if task.given("mask_resolution") else None
        ctx.arch["mask_resolution"] = given or max(ctx.arch["image_size"] // MASK_STRIDE, 1)

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch["mask_resolution"] = min(ctx.arch["mask_resolution"], TINY_MASK)

    def extra_heads(self, mb: ModelBuilder, top: ModuleBuilder, a: Any, projected: Value, h: Value) -> dict[str, Value]:
        d, q = h.type.shape[2], h.type.shape[1]
        r = a["mask_resolution"]
        g = projected.type.shape[2]
        factor = -(-r // g)  # ceil: upsample past r, then crop
        top.sub("mask_embed", box_mlp(mb, d, q, out=d, name="MaskMLP"))
        embed = top.call("mask_embed", h, hint="mask_embed")
        up = top.op("upsample_nearest", projected, factor=factor, hint="pixel_up")
        if factor * g != r:
            up = top.op("slice", top.op("slice", up, axis=2, start=0, end=r), axis=3, start=0, end=r, hint="pixel_crop")
        top.layer("pixel_conv", "conv2d", in_channels=d, out_channels=d, kernel=3, padding=1, bias=True)
        top.layer("mask_features", "conv2d", in_channels=d, out_channels=d, kernel=1, bias=True)
        pixels = top.call("mask_features", top.op("relu", top.call("pixel_conv", up)), hint="pixel_features")
        logits = top.op("matmul", embed, top.op("flatten_spatial", pixels), transpose_b=True, hint="mask_flat")
        return {"pred_masks": top.op("reshape", logits, shape=(-1, q, r, r), hint="pred_masks")}

    def extra_config(self, a: Any) -> dict[str, Any]:
        return {"mask_resolution": a["mask_resolution"]}

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """DETR's, plus the mask head's maps: upsampled and convolved pixel features
        (3 d-channel maps) and the query masks, at mask_resolution squared."""
        base = super().memory(ctx, params)
        a = ctx.arch
        maps = (3 * a["hidden_size"] + a["num_queries"]) * a["mask_resolution"] ** 2
        extra = maps * act_nbytes(ctx)
        inf, tr = base["inference"], base["training"]
        return {
            "inference": inference(inf["weights"], 0, inf["activations"] + extra),
            "training": training(params, tr["activations"] + 2 * maps, tr["activations_checkpointed"] + 2 * maps),
        }
