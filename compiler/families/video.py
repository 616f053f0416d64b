"""Video classifier: a factorised video transformer (ViViT's factorised encoder,
Arnab et al. 2021, model 2).

The video is `pixel_values` float32 [batch, frames, channels, height, width] (the
layout of transformers' VideoMAE and ViViT inputs), `frames` a symbolic dimension:
one compiled model takes clips of any length up to `frames`. Each frame goes
through the ViT tower of the `vit` family (blocks.py: patch convolution, class
token, learned spatial positions, pre-norm blocks, final norm) with the frames
folded into the batch (`merge_axes`); each frame's class token is its summary.
The frame summaries [batch, frames, d] then go through a temporal transformer (a
class token, learned temporal positions for up to `frames` + 1 tokens,
`temporal_layers` blocks, a final norm), and the head reads its class token.

Frames are embedded one by one (ViViT's "uniform frame sampling"), not as tubelets:
a tubelet embedding would fix how many frames make a token and tie the count to a
multiple of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.families import transformer as T
from metagen.compiler.families.base import Family, Knobs, Rule, derived, spec_key
from metagen.compiler.families.blocks import (
    VisionTower, act_nbytes, block_stack, check_vision, class_name, inference, num_classes, num_patches, pool_tokens,
    report_structure, resolve_tower, single_tower_knobs, tower_activations, tower_training_activations, training,
    vision_embed, vision_structure, vision_tiny, weight_nbytes,
)
from metagen.ir.graph import InputSpec, Model, normal
from metagen.ir.types import DType, TensorType

DEFAULT_VIDEO_CLASSES = 400  # Kinetics-400, when task.num_classes is absent


@dataclass
class VideoViTConfig(VisionTower):
    frames: int = spec_key(16)  # the longest clip (ViViT-B on Kinetics: 32 frames, 16 temporal tokens)
    temporal_layers: int = spec_key(4)  # ViViT-B factorised encoder: 12 spatial + 4 temporal layers
    num_classes: int = derived(0)


def video_structure(cfg: Any) -> tuple[str, str] | None:
    problem = vision_structure(cfg)
    if problem:
        return problem
    if cfg["pooling"] != "cls":
        return "pooling", f"pooling '{cfg['pooling']}' is not supported by the video transformer; it reads each frame's class token ('cls')"
    if cfg["position"] != "learned":
        return "position", f"position '{cfg['position']}' is not supported by the video transformer; use 'learned'"
    if cfg["frames"] < 1 or cfg["temporal_layers"] < 1:
        key = "frames" if cfg["frames"] < 1 else "temporal_layers"
        return key, f"{key} must be at least 1, got {cfg[key]}"
    return None


class VideoViTClassifier(Family):
    name = "video_vit"
    pipeline_tag = "video-classification"
    doc = "Factorised video transformer classifier (ViViT model 2: a ViT per frame, then a temporal transformer)."
    inputs_doc = "pixel_values: float32 [batch, frames, channels, image_size, image_size], normalized pixels, frames <= `frames`"
    outputs_doc = "logits: float32 [batch, num_classes], class scores"
    rules = (Rule(("video",), ("label",), ("classification", None)),)
    default_objective = "classification"
    tasks = ("classification",)
    default_budget = 115_000_000
    default_budget_source = (
        "ViViT-B factorised encoder (12 spatial + 4 temporal layers at width 768, 400 classes: 114.5M; Arnab et al. 2021)"
    )
    unit = UnitOfWork("clip", "sample")
    config = VideoViTConfig
    built = "a factorised video transformer classifier"
    tiny_doc = "as `vit` per frame (32 x 32 images, 8 x 8 patches, d = 64, 2 layers), 1 temporal layer, clips of at most 4 frames"

    def configure(self, ctx: CompileContext) -> None:
        ctx.arch = resolve_tower(ctx, "vit", self.config)
        ctx.arch["num_classes"] = num_classes(ctx, DEFAULT_VIDEO_CLASSES)
        report_structure(ctx, video_structure(ctx.arch))
        if ctx.spec.task.num_classes is None:
            ctx.sink.note(ctx.spec.task.loc(), f"task.num_classes is not given; using {DEFAULT_VIDEO_CLASSES} classes (Kinetics-400)")

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        return single_tower_knobs(ctx, check_vision)

    def tiny(self, ctx: CompileContext) -> None:
        vision_tiny(ctx.arch)
        ctx.arch.update(frames=min(ctx.arch["frames"], 4), temporal_layers=1)
        ctx.arch["num_classes"] = min(ctx.arch["num_classes"], 10)

    def finalize(self, ctx: CompileContext) -> str | None:
        return check_vision(ctx.arch, ctx.pinned)

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        mb = self.model_builder(ctx)
        d, n = a.hidden_size, num_patches(a)
        with mb.at(Family.key_loc(ctx, "layers")):
            spatial = T.block_module(mb, a, TensorType(DType.f32, ("batch*frames", n + 1, d)), causal=False, name="Block")
        temporal_cfg = dict(a, layers=a.temporal_layers)
        with mb.at(Family.key_loc(ctx, "temporal_layers")):
            temporal = T.block_module(
                mb, temporal_cfg, TensorType(DType.f32, ("batch", "frames+1", d)), causal=False, name="TemporalBlock"
            )
        top = mb.module(class_name(ctx.spec.name), doc="Factorised video transformer classifier (spatial, then temporal).")
        s = a.image_size
        video = top.input("pixel_values", TensorType(DType.f32, ("batch", "frames", a.channels, s, s)))
        # Spatial: every frame through the ViT tower, its class token its summary.
        frames = top.op("merge_axes", video, start=0, count=2, hint="frames")
        x = vision_embed(top, a, frames, patch_bias=bool(a.bias))
        x = block_stack(top, spatial, x, a)
        per_frame = pool_tokens(top, a, x)
        x = top.op("split_axis", per_frame, video, axis=0, like_axes=(0, 1), hint="frame_tokens")
        # Temporal: a transformer over the frame summaries.
        cls = top.param("temporal_cls_token", (1, 1, d), normal(0.02), hint="temporal_cls_token")
        x = top.op("prepend", x, cls, hint="x")
        top.layer("temporal_pos_embed", "embedding", num=a.frames + 1, dim=d, init_std=0.02)
        pos = top.call("temporal_pos_embed", top.op("positions", x, axis=1, hint="pos"), hint="temporal_pos")
        x = top.op("add", x, pos, hint="x")
        top.repeat("temporal_blocks", temporal, a.temporal_layers)
        x = top.call("temporal_blocks", x, hint="x")
        T.norm_layer(top, "temporal_norm", a)
        x = top.call("temporal_norm", x, hint="x")
        pooled = top.op("select", x, axis=1, index=0, hint="pooled")
        top.layer("head", "linear", in_features=d, out_features=a.num_classes, bias=True)
        logits = top.call("head", pooled, hint="logits")
        top_def = top.ret(logits, names=["logits"])
        config = a.pick(VideoViTConfig.spec_keys())
        config["num_classes"] = a.num_classes
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[InputSpec("pixel_values", video.type, "normal", doc="normalized pixels, [batch, frames, channels, height, width]")],
            config=config,
            family=self.name,
            symbols={"batch": "batch size", "frames": f"frames in the clip, at most {a.frames}"},
            examples={"frames": a.frames},
        )

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """One forward of one clip of `frames` frames (one block live at a time: the
        spatial one over every frame, or the temporal one); training keeps every
        block's activations for one clip."""
        a = ctx.arch
        tokens, frames, d = num_patches(a) + 1, a["frames"], a["hidden_size"]
        nbytes = act_nbytes(ctx)
        acts = max(frames * tower_activations(a, tokens, nbytes), tower_activations(a, frames + 1, nbytes))
        s_stored, s_ckpt = tower_training_activations(a["layers"], frames * tokens, d)
        t_stored, t_ckpt = tower_training_activations(a["temporal_layers"], frames + 1, d)
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, acts),
            "training": training(params, s_stored + t_stored, max(s_ckpt, t_ckpt)),
        }

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        return {"bindings": {"batch": 1, "frames": ctx.arch["frames"]}, "per_unit": 1}
