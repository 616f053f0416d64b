"""Text-to-video and video-to-video diffusion: a space-time factorised U-Net.

The image U-Net of `unet.py` (SD 1.5 conventions, its CLIP text encoder) runs on
every frame, the frames folded into the batch (`merge_axes`): its ResNet blocks and
spatial transformers are 2D layers, shared by all frames. After every ResNet (+
spatial transformer) pair of every level, and after the mid block's spatial
transformer, a temporal transformer mixes each pixel's features across frames, as
video latent diffusion models insert temporal layers after their spatial ones
(Blattmann et al. 2023, "Align your Latents" (VideoLDM); Guo et al. 2023,
AnimateDiff's motion modules):

  x [batch*frames, C, h, w] -> [batch*h*w, frames, C] -> LayerNorm -> proj_in ->
  + learned frame positions -> pre-LN self-attention over frames -> pre-LN GELU MLP
  -> proj_out -> back to [batch*frames, C, h, w], added to x.

The sample is `sample` float32 [batch, frames, latent_channels, height, width] (a
clip of latents, frames first as diffusers' video pipelines decode them); `frames`,
`height` and `width` are IR symbols, so one model takes clips of any length up to
`frames` (the size of the temporal position table) and any latent size the U-Net
can halve. The timestep and the prompt are per clip: every frame gets its clip's
(`expand_axis`). Output `noise_pred` has the sample's shape.

Unlike AnimateDiff, proj_out is not zero-initialised: these models are trained from
scratch (and a zero path would leave the temporal layers untested at init).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metagen.compiler.context import CompileContext
from metagen.compiler.families.base import Rule, spec_key
from metagen.compiler.families.blocks import inference, training
from metagen.compiler.families.unet import (
    HW, BLOCK_NORM_EPS, DiffusionUNet, TemporalLayer, UNetConfig, _attention, level_channels,
)
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import Model, ModuleDef, Value
from metagen.ir.types import Dim, DType, TensorType, dim_mul


@dataclass
class VideoUNetConfig(UNetConfig):
    frames: int = spec_key(16)  # the longest clip: the temporal position table (AnimateDiff trains on 16 frames)


def sample_type(a: Any) -> TensorType:
    return TensorType(DType.f32, ("batch", "frames", a["latent_channels"], "height", "width"))


def temporal_module(mb: ModelBuilder, a: Any, ch: int, hw: HW) -> ModuleDef:
    """One temporal transformer over the frames of every pixel of a level."""
    batch = dim_mul("batch", "frames")
    tok_type = TensorType(DType.f32, (dim_mul(dim_mul("batch", hw[0]), hw[1]), "frames", ch))
    attn = _attention(mb, ch, a["heads"], tok_type)
    b = mb.module("TemporalTransformer", doc="Self-attention over frames at every pixel, then an MLP; residual.")
    x = b.input("x", TensorType(DType.f32, (batch, ch, *hw)))
    video = b.input("video", sample_type(a))
    b.layer("norm", "layer_norm", dim=ch, eps=BLOCK_NORM_EPS)
    b.layer("proj_in", "linear", in_features=ch, out_features=ch)
    b.layer("pos_embed", "embedding", num=a["frames"], dim=ch, init_std=0.02)
    b.layer("norm1", "layer_norm", dim=ch, eps=BLOCK_NORM_EPS)
    b.sub("attn", attn)
    b.layer("norm2", "layer_norm", dim=ch, eps=BLOCK_NORM_EPS)
    b.layer("ff_in", "linear", in_features=ch, out_features=4 * ch)
    b.layer("ff_out", "linear", in_features=4 * ch, out_features=ch)
    b.layer("proj_out", "linear", in_features=ch, out_features=ch)
    clip = b.op("split_axis", x, video, axis=0, like_axes=(0, 1), hint="clip")  # [B, T, C, h, w]
    h = b.op("transpose", clip, perm=(0, 3, 4, 1, 2), hint="h")  # [B, h, w, T, C]
    h = b.op("merge_axes", h, start=0, count=3, hint="h")  # [B*h*w, T, C]
    h = b.call("proj_in", b.call("norm", h, hint="h"), hint="h")
    pos = b.call("pos_embed", b.op("positions", h, axis=1, hint="pos"), hint="pos")
    h = b.op("add", h, pos, hint="h")
    h = b.op("add", h, b.call("attn", b.call("norm1", h, hint="t"), hint="t"), hint="h")
    t = b.op("gelu", b.call("ff_in", b.call("norm2", h, hint="t"), hint="t"), hint="t")
    h = b.op("add", h, b.call("ff_out", t, hint="t"), hint="h")
    h = b.call("proj_out", h, hint="h")
    h = b.op("split_axis", h, clip, axis=0, like_axes=(0, 3, 4), hint="h")  # [B, h, w, T, C]
    h = b.op("transpose", h, perm=(0, 3, 4, 1, 2), hint="h")  # [B, T, C, h, w]
    h = b.op("merge_axes", h, start=0, count=2, hint="h")
    return b.ret(b.op("add", x, h, hint="out"))


class VideoDiffusionUNet(DiffusionUNet):
    name = "video_unet"
    pipeline_tag = "text-to-video"
    doc = (
        "Space-time factorised video diffusion U-Net: the image U-Net per frame with a temporal transformer "
        "after every spatial block (VideoLDM, AnimateDiff), and its CLIP text encoder."
    )
    inputs_doc = (
        "sample: float32 [batch, frames, latent_channels, height, width] noisy latent clip x_t (frames <= `frames`; "
        "height, width multiples of 2^(levels-1)); timestep: float32 [batch]; input_ids: int64 [batch, seq] prompt ids"
    )
    outputs_doc = "noise_pred: float32 [batch, frames, latent_channels, height, width], the predicted noise epsilon"
    built = "the video diffusion U-Net (ResNet blocks, spatial and temporal transformers)"
    rules = (
        Rule(("text", "video"), ("video",), ("diffusion", None), "latent-space; the image U-Net per frame plus temporal layers"),
        Rule(("text",), ("video",), ("diffusion", None), "the same model: text-to-video written without the noisy clip among the inputs"),
        Rule(("video",), ("video",), ("diffusion", None), "the same model; the prompt may be the unconditional one"),
    )
    tasks = ("denoising", "generation")
    default_budget = 1_300_000_000
    default_budget_source = (
        "Stable Diffusion 1.5 (983M with its text encoder) plus these temporal layers at its widths for 16 frames "
        "(289M): 1.27B"
    )
    config = VideoUNetConfig
    tiny_doc = "as `diffusion_unet`, with clips of at most 4 frames"
    top_doc = "Text-conditioned video latent diffusion U-Net (predicts the noise of every frame)."

    def configure(self, ctx: CompileContext) -> None:
        super().configure(ctx)
        a = VideoUNetConfig.from_mapping(ctx.arch)
        arch = ctx.spec.architecture
        if arch.given("frames"):
            a.frames = arch.get("frames")
            ctx.pinned.add("frames")
        ctx.arch = a
        if a.images == "pixels":
            ctx.sink.error(
                arch.loc("images"),
                "architecture: the video U-Net denoises latents (images: latents); an autoencoder for video is not built",
            )

    def finalize(self, ctx: CompileContext) -> str | None:
        problem = super().finalize(ctx)
        if problem:
            return problem
        for ch in level_channels(ctx.arch):
            if ch % ctx.arch["heads"]:
                return f"heads {ctx.arch['heads']} does not divide {ch} channels of a temporal transformer"
        return None

    def tiny(self, ctx: CompileContext) -> None:
        super().tiny(ctx)
        ctx.arch["frames"] = min(ctx.arch["frames"], 4)

    def sample_type(self, a: Any) -> TensorType:
        return sample_type(a)

    def sample_doc(self, factor: int) -> str:
        return f"noisy latent clip x_t, float32 [batch, frames, C, H, W], H and W multiples of {factor}"

    def fold(self, top, sample: Value) -> Value:
        return top.op("merge_axes", sample, start=0, count=2, hint="frames")

    def unfold(self, top, out: Value, sample: Value) -> Value:
        return top.op("split_axis", out, sample, axis=0, like_axes=(0, 1), hint="noise_pred")

    def per_frame(self, top, v: Value, sample: Value) -> Value:
        v = top.op("expand_axis", v, sample, axis=1, like_axis=1, hint="per_frame")
        return top.op("merge_axes", v, start=0, count=2, hint="per_frame")

    def temporal_layer(self, mb: ModelBuilder, a: Any, batch: Dim) -> TemporalLayer | None:
        cache: dict[tuple, ModuleDef] = {}

        def layer(ch: int, hw: HW) -> tuple[ModuleDef, TensorType]:
            if (ch, hw) not in cache:
                cache[(ch, hw)] = temporal_module(mb, a, ch, hw)
            return cache[(ch, hw)], sample_type(a)

        return layer

    def build(self, ctx: CompileContext) -> Model:
        model = super().build(ctx)
        model.symbols["frames"] = f"frames in the clip, at most {ctx.arch['frames']}"
        model.examples["frames"] = ctx.arch["frames"]
        return model

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """The image U-Net's, its activations times `frames` (every 2D layer runs on
        every frame; the temporal layers' attention over frames is small beside it)."""
        image = super().memory(ctx, params)
        f = ctx.arch["frames"]
        inf, tr = image["inference"], image["training"]
        train = training(params, tr["activations"] * f, tr["activations_checkpointed"] * f)
        return {"inference": inference(inf["weights"], inf["kv_cache"], inf["activations"] * f), "training": train}

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        w = super().workload(ctx, model)
        w["bindings"]["frames"] = ctx.arch["frames"]
        return w
