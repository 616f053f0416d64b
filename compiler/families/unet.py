"""Text-conditioned diffusion U-Net (Stable Diffusion 1.5 conventions).

The model predicts the noise in a noisy *latent* (SD's 4-channel, 8x-downsampled
VAE space) at a timestep, conditioned on a prompt encoded by a CLIP text
transformer that is part of the model. The image autoencoder (SD's AutoencoderKL,
image_autoencoder.py) is included only when the spec's images are pixels
(`images: pixels`): it runs once per image, not once per denoising step, and is
usually a frozen pretrained component shared between models, so by default the
budget goes to the denoiser alone. `sample()` (backends/runtime/sampling.py) runs
the whole loop. A pixel-space U-Net without autoencoder: `latent_channels: 3` and
`sample_size` the image side.

Structure, as diffusers' `UNet2DConditionModel` with `CLIPTextModel`:

- sinusoidal timestep embedding (flip_sin_to_cos, freq_shift 0) of width
  `base_channels`, then linear -> silu -> linear to 4 * base_channels;
- `conv_in`; down levels of `res_blocks` ResNet blocks (each followed by a spatial
  transformer at `attention_levels`) and a stride-2 downsampling conv between
  levels; a mid block (resnet, transformer, resnet); up levels of res_blocks + 1
  ResNet blocks each consuming a skip connection (channel concat), nearest 2x
  upsampling + conv between levels; GroupNorm -> silu -> `conv_out`;
- ResNet block: GroupNorm -> silu -> conv3x3, + linear(silu(temb)), GroupNorm ->
  silu -> conv3x3, plus the input (through a 1x1 conv when channels change);
- spatial transformer: GroupNorm(eps 1e-6) -> 1x1 conv -> `transformer_depth`
  blocks (LN -> self-attention, LN -> cross-attention to the text states, LN ->
  GEGLU feed-forward; q/k/v without bias, output projections with) -> 1x1 conv,
  plus the input.

The latent's height and width are IR symbols (`height`, `width`; level l works at
`height/2^l`), so one model takes every size whose sides are multiples of
2^(levels - 1); `sample_size` only sizes example inputs and the cost estimates.

Canonical names are flat per level (`down1.res0.conv1.weight`,
`up2.attn1.blocks.0.attn2.kv_proj.weight`, `text_encoder.blocks.3.mlp.fc_in.bias`);
metagen.hf (`unet_to_canonical`) maps diffusers' names onto them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import math

from metagen.compiler import design_rules as R
from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.compiler.objectives import DIFFUSION_SCHEDULE
from metagen.compiler.families.base import ArchConfig, Family, Knobs, Rule, derived, spec_key, tower, unbuilt_family
from metagen.compiler.families import image_autoencoder as vae
from metagen.compiler.families.blocks import (
    TransformerStack,
    TRAIN_ACT_BYTES, act_nbytes, block_stack, class_name, inference, read_spec, tower_training_activations, training,
    weight_nbytes, resolve_tower, tower_block, mask_input,
)
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Model, ModuleDef, Value
from metagen.ir.types import Dim, DType, TensorType, dim_div, dim_mul

SIZE_KEYS = ("base_channels", "res_blocks")
UNET_RES_BLOCKS = 2  # SD 1.5, SD 2, SDXL (design rule unet-scaling)


@dataclass
class UNetTextTower(TransformerStack):
    """The CLIP text transformer the U-Net cross-attends to (no pooling)."""

    vocab_size: int | None = spec_key()
    position: str | None = spec_key()
    bias: bool | None = spec_key()
    pooling: str | None = spec_key()


@dataclass
class UNetConfig(ArchConfig):
    """SD 1.5's U-Net layout; base_channels and transformer_depth are fitted unless pinned (res_blocks 2)."""

    latent_channels: int = spec_key(4)
    sample_size: int = spec_key(64)
    base_channels: int | None = spec_key()
    channel_mults: list[int] = spec_key([1, 2, 4, 4])
    res_blocks: int | None = spec_key()
    attention_levels: list[int] = spec_key([0, 1, 2])
    heads: int = spec_key(8)
    transformer_depth: int = spec_key(1)
    norm_groups: int = spec_key(32)
    cross_attention_dim: int | None = spec_key()
    images: str = spec_key("latents")
    text_encoder: UNetTextTower = tower(UNetTextTower)
    autoencoder: vae.AutoencoderConfig = tower(vae.AutoencoderConfig)
    context: int = derived(0)


# The text tower defaults to CLIP ViT-L/14's, the encoder SD 1.5 is conditioned on.
TEXT_DEFAULTS: dict[str, Any] = dict(hidden_size=768, layers=12, heads=12, ffn_size=3072, vocab_size=49408, pooling="none")
TEXT_CONTEXT = 77
RESNET_EPS = 1e-5
TRANSFORMER_NORM_EPS = 1e-6
BLOCK_NORM_EPS = 1e-5


def level_channels(a: dict[str, Any]) -> list[int]:
    return [a["base_channels"] * m for m in a["channel_mults"]]


def downsampling_factor(a: dict[str, Any]) -> int:
    """What the latent's height and width must be multiples of: 2 per level change."""
    return 2 ** (len(a["channel_mults"]) - 1)


HW = tuple[Dim, Dim]


def level_hw(lvl: int) -> HW:
    """Level `lvl`'s symbolic feature-map size: the sample's halved lvl times."""
    return (dim_div("height", 2**lvl), dim_div("width", 2**lvl))


class DiffusionUNet(Family):
    name = "diffusion_unet"
    pipeline_tag = "text-to-image"
    doc = "Text-conditioned latent diffusion U-Net with its CLIP text encoder (SD 1.5 conventions); SD's autoencoder when images are pixels."
    inputs_doc = (
        "sample: float32 [batch, latent_channels, height, width] noisy latent x_t (height, width multiples of 2^(levels-1)); "
        "timestep: float32 [batch] diffusion step t (0..999 for a 1000-step schedule); "
        "input_ids: int64 [batch, seq] prompt token ids from the CLIP tokenizer, seq <= context_window (77)"
    )
    outputs_doc = "noise_pred: float32 [batch, latent_channels, height, width], the predicted noise epsilon"
    msl_family_name = "diffusion"
    accepts_families = ("auto", "diffusion", "unet")
    built = "the diffusion U-Net (ResNet blocks with spatial transformers)"
    rules = (
        Rule(
            ("text", "image"), ("image",), ("diffusion", None),
            "latent-space U-Net with its CLIP text encoder; no image autoencoder unless images: pixels",
        ),
        # Text-to-image written without the noisy image among the inputs: the same model.
        Rule(
            ("text",), ("image",), ("diffusion", None),
            "the same model: text-to-image written without the noisy sample among the inputs",
        ),
    )
    default_objective = "diffusion"
    tasks = ("denoising", "generation")
    default_budget = 1_000_000_000
    default_budget_source = "Stable Diffusion 1.5 (860M U-Net + 123M CLIP text encoder = 983M)"
    unit = UnitOfWork("denoising step", "step")
    config = UNetConfig
    tiny_doc = (
        "base 32 channels, the same number of levels with multipliers capped at 2, 1 ResNet block per level, 2 heads, "
        "8 GroupNorm groups, 8 x 8 sample (larger only for more than 4 levels), the same attention levels; "
        "text encoder d = 32, 2 layers, 2 heads, vocab 256, context 16; "
        "autoencoder (images: pixels) channels 16 then 32 per level, 1 block per level, 8 groups"
    )

    def family_mismatch(self, written: str) -> str:
        return f"{unbuilt_family(written) or f'family {written!r} does not fit a text-conditioned diffusion objective'}; building {self.built} instead"

    def configure(self, ctx: CompileContext) -> None:
        spec_arch = ctx.spec.architecture
        a = read_spec(ctx, UNetConfig())
        te = resolve_tower(ctx, "clip_text", UNetTextTower, section=spec_arch.text_encoder, prefix="text_encoder.")
        for key, value in TEXT_DEFAULTS.items():
            if f"text_encoder.{key}" not in ctx.pinned:
                te[key] = value
        if te.kv_heads is None:
            te.kv_heads = te.heads
        if te.head_dim is None and te.hidden_size % te.heads == 0:
            te.head_dim = te.hidden_size // te.heads
        if te.pooling != "none":
            ctx.sink.warning(
                spec_arch.text_encoder.loc("pooling"),
                "text_encoder.pooling is ignored by the diffusion U-Net: it cross-attends to the whole sequence "
                "of final hidden states",
            )
            te.pooling = "none"
        a.text_encoder = te
        ae = read_spec(ctx, vae.AutoencoderConfig(), section=spec_arch.autoencoder, prefix="autoencoder.")
        if a.images == "pixels":
            for key, value in vae.SD_AUTOENCODER.items():
                if ae[key] is None:
                    ae[key] = list(value) if isinstance(value, list) else value
        elif spec_arch.given("autoencoder"):
            ctx.sink.warning(
                spec_arch.loc("autoencoder"),
                "the autoencoder is built only when the images are pixels (architecture.images: pixels); "
                "with latents it is ignored",
            )
        a.autoencoder = ae
        if a.cross_attention_dim is None:
            a.cross_attention_dim = te.hidden_size
        # CLIP's prompt length, unless the spec sets its own context window.
        c = ctx.spec.constraints
        ctx.context_window = c.context_window if c.given("context_window") else TEXT_CONTEXT
        a.context = ctx.context_window
        ctx.arch = a

    def finalize(self, ctx: CompileContext) -> str | None:
        a = ctx.arch
        te = a["text_encoder"]
        mults, levels = a["channel_mults"], len(a["channel_mults"])
        if not mults:
            return "channel_mults needs at least one level"
        for lvl in a["attention_levels"]:
            if lvl >= levels:
                return f"attention_levels names level {lvl}, but channel_mults has {levels} levels (0..{levels - 1})"
        if a["sample_size"] % (2 ** (levels - 1)):
            return f"sample_size {a['sample_size']} must be divisible by 2^{levels - 1} for {levels} levels"
        for ch in level_channels(a):
            if ch % a["norm_groups"]:
                return f"norm_groups {a['norm_groups']} does not divide {ch} channels (base_channels x channel_mults)"
        attn_ch = [level_channels(a)[lvl] for lvl in a["attention_levels"]] + [level_channels(a)[-1]]
        for ch in attn_ch:
            if ch % a["heads"]:
                return f"heads {a['heads']} does not divide {ch} channels of a spatial transformer"
        if a["base_channels"] % 2:
            return "base_channels must be even (the sinusoidal timestep embedding has base_channels features)"
        if te["hidden_size"] % te["heads"]:
            return f"text_encoder.heads {te['heads']} does not divide text_encoder.hidden_size {te['hidden_size']}"
        if a["images"] == "pixels":
            problem = vae.check(a["autoencoder"], a["latent_channels"])
            if problem:
                return problem
        if a["cross_attention_dim"] != te["hidden_size"]:
            return (
                f"cross_attention_dim {a['cross_attention_dim']} must equal text_encoder.hidden_size "
                f"{te['hidden_size']}: the U-Net cross-attends to the text encoder's hidden states"
            )
        return None

    def knobs(self, ctx: CompileContext) -> Knobs | None:
        """Design rule unet-scaling: two ResNet blocks per level (SD, SDXL); base
        channels as close to 320 as the budget allows; the budget beyond SD 1.5's
        size goes to transformer depth, as SDXL's does. A pinned transformer_depth
        leaves res_blocks as the depth (ideal 2)."""
        a = ctx.arch
        if "res_blocks" in ctx.pinned and a["res_blocks"] != UNET_RES_BLOCKS:
            R.pinned_breaks(
                ctx, ctx.spec.architecture.loc("res_blocks"), R.UNET,
                f"res_blocks {a['res_blocks']}: SD 1.5, SD 2 and SDXL use {UNET_RES_BLOCKS} ResNet blocks per level",
            )
        if "transformer_depth" not in ctx.pinned:
            depth_keys = ["transformer_depth"]
            if "res_blocks" not in ctx.pinned:
                a["res_blocks"] = UNET_RES_BLOCKS
                R.applied(ctx, R.UNET, f"res_blocks = {UNET_RES_BLOCKS} (SD 1.5, SDXL)")
        elif "res_blocks" not in ctx.pinned:
            depth_keys = ["res_blocks"]
        else:
            depth_keys = []
        if "base_channels" in ctx.pinned:
            if not depth_keys:
                return None
            candidates = [a["base_channels"]]
        else:
            # Multiples of 64 whose every level keeps GroupNorm groups and heads whole,
            # and SD's 320.
            candidates = [
                c for c in sorted(set(range(64, 4096 + 1, 64)) | {R.UNET_BASE})
                if all((c * m) % a["norm_groups"] == 0 and (c * m) % a["heads"] == 0 for m in a["channel_mults"])
            ]
        widths = [{"base_channels": c} for c in candidates]
        if depth_keys == ["transformer_depth"]:
            return Knobs(
                widths=widths,
                depth_keys=depth_keys,
                max_depth=16,
                ideal_depth=lambda w: 1.0,
                score=lambda w, depth: abs(math.log(w["base_channels"] / R.UNET_BASE)),
                choice=(
                    "the one whose base_channels is closest to SD's 320, its transformer depth filling the budget "
                    "(design rule unet-scaling)"
                ),
                chosen=lambda ctx, w: R.applied(
                    ctx, R.UNET, f"base_channels = {w['base_channels']}, transformer_depth fitted to the budget"
                ),
            )
        return Knobs(
            widths=widths,
            depth_keys=depth_keys,
            max_depth=8,
            ideal_depth=lambda w: float(UNET_RES_BLOCKS),
            choice="the one whose res_blocks is closest to 2 (design rule unet-scaling)",
        )

    def tiny(self, ctx: CompileContext) -> None:
        a = ctx.arch
        levels = len(a["channel_mults"])
        a.update(
            base_channels=32,
            channel_mults=[min(m, 2) for m in a["channel_mults"]],
            res_blocks=1,
            heads=2,
            transformer_depth=1,
            norm_groups=8,
            sample_size=max(8, 2 ** (levels - 1)),
            latent_channels=min(a["latent_channels"], 4),
            context=16,
        )
        te = a["text_encoder"]
        te.update(hidden_size=32, layers=2, heads=2, kv_heads=2, head_dim=16, ffn_size=64, vocab_size=256)
        a["cross_attention_dim"] = 32
        ctx.context_window = 16
        if a["images"] == "pixels":
            ae = a["autoencoder"]
            n = len(ae["block_channels"])
            ae.update(block_channels=[16] + [32] * (n - 1), layers_per_block=1, norm_groups=8)

    # ---------------------------------------------------------------- graph

    def build(self, ctx: CompileContext) -> Model:
        a = ctx.arch
        te = a["text_encoder"]
        mb = self.model_builder(ctx)
        lc = a["latent_channels"]
        chans = level_channels(a)
        levels = len(chans)
        ch0 = chans[0]
        tdim = 4 * ch0

        text_block = tower_block(
            mb, ctx, te, "seq", causal=True, name="TextBlock", section=ctx.spec.architecture.text_encoder, masked=True
        )
        text = text_encoder_module(mb, te, a["context"], text_block)
        top = mb.module(class_name(ctx.spec.name), doc=self.top_doc)
        sample = top.input("sample", self.sample_type(a))
        timestep = top.input("timestep", TensorType(DType.f32, ("batch",)))
        ids = top.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        mask, mask_spec = mask_input(top, ids)

        top.sub("text_encoder", text)
        context = top.call("text_encoder", ids, mask, hint="context")

        t = top.op("timestep_embedding", timestep, dim=ch0, flip_sin_to_cos=True, freq_shift=0.0, hint="t_emb")
        top.sub("time_embedding", time_embedding_module(mb, ch0, tdim))
        temb = top.call("time_embedding", t, hint="temb")
        # A video U-Net runs every layer but its temporal ones on frames folded into the batch.
        temb, context = self.per_frame(top, temb, sample), self.per_frame(top, context, sample)
        temb_type, seq_type = temb.type, context.type
        temporal = self.temporal_layer(mb, a, temb_type.shape[0])
        video = (sample,) if temporal is not None else ()

        factor = downsampling_factor(a)
        checked = top.op(
            "require_multiple", self.fold(top, sample), axes=(2, 3), multiple=factor,
            what=f"sample height and width (the U-Net halves them {levels - 1} times)", hint="sample",
        )
        top.layer("conv_in", "conv2d", in_channels=lc, out_channels=ch0, kernel=3, padding=1)
        x = top.call("conv_in", checked, hint="x")
        skips: list[Value] = [x]
        for lvl in range(levels):
            down = down_level_module(
                mb, a, lvl, x.type.shape[1], level_hw(lvl), temb_type, seq_type, last=lvl == levels - 1, temporal=temporal
            )
            top.sub(f"down{lvl}", down)
            outs = top.call_multi(f"down{lvl}", x, temb, context, *video, hint="h")
            skips.extend(outs)
            x = outs[-1]
        top.sub("mid", mid_module(mb, a, chans[-1], level_hw(levels - 1), temb_type, seq_type, temporal))
        x = top.call("mid", x, temb, context, *video, hint="x")
        for lvl in reversed(range(levels)):
            n = a["res_blocks"] + 1
            taken, skips = skips[-n:][::-1], skips[:-n]
            up = up_level_module(
                mb, a, lvl, x.type, [v.type for v in taken], temb_type, seq_type, first=lvl == 0, temporal=temporal
            )
            top.sub(f"up{lvl}", up)
            x = top.call(f"up{lvl}", x, *taken, temb, context, *video, hint="x")
        top.layer("conv_norm_out", "group_norm", groups=a["norm_groups"], channels=ch0, eps=RESNET_EPS)
        x = top.op("silu", top.call("conv_norm_out", x, hint="h"), hint="h")
        top.layer("conv_out", "conv2d", in_channels=ch0, out_channels=lc, kernel=3, padding=1)
        out = self.unfold(top, top.call("conv_out", x, hint="noise_pred"), sample)
        symbols = {
            "batch": "batch size",
            "seq": f"prompt length in tokens, at most {a['context']}",
            "height": f"latent height, a multiple of {factor}",
            "width": f"latent width, a multiple of {factor}",
        }
        examples = {"seq": a["context"], "height": a["sample_size"], "width": a["sample_size"]}
        if a["images"] == "pixels":
            # Not called by the forward (one denoising step): sample() and the ONNX
            # pipeline folder call them once per image.
            ae = a["autoencoder"]
            top.sub("vae_encoder", vae.encoder_module(mb, ae, lc))
            top.sub("vae_decoder", vae.decoder_module(mb, ae, lc))
            f = vae.downsampling_factor(ae)
            symbols.update(image_height=f"image height in pixels, a multiple of {f}", image_width=f"image width in pixels, a multiple of {f}")
            examples.update(image_height=a["sample_size"] * f, image_width=a["sample_size"] * f)
        top_def = top.ret(out, names=["noise_pred"])

        config = a.pick(type(a).spec_keys())
        config["context_window"] = a["context"]
        config["text_encoder"] = dict(te)
        config["noise_schedule"] = dict(DIFFUSION_SCHEDULE)  # the training schedule sample() steps over
        if a["images"] == "pixels":
            config["autoencoder"] = dict(a["autoencoder"])
        return mb.finish(
            top_def,
            name=top_def.name,
            spec_name=ctx.spec.name,
            inputs=[
                InputSpec("sample", sample.type, "normal", 0.0, 0.0, self.sample_doc(factor)),
                InputSpec("timestep", timestep.type, "uniform", 0.0, 1000.0, "diffusion timestep t per sample (float)"),
                InputSpec("input_ids", ids.type, "tokens", 0, te["vocab_size"], "prompt token ids (CLIP tokenizer)"),
                mask_spec,
            ],
            config=config,
            family=self.name,
            symbols=symbols,
            examples=examples,
        )

    # -- what a video U-Net (video_unet.py) changes; the image U-Net's are identities

    top_doc = "Text-conditioned latent diffusion U-Net (predicts the noise)."

    def sample_type(self, a: UNetConfig) -> TensorType:
        return TensorType(DType.f32, ("batch", a["latent_channels"], "height", "width"))

    def sample_doc(self, factor: int) -> str:
        return f"noisy latent x_t, float32 [batch, C, H, W], H and W multiples of {factor}"

    def fold(self, top, sample: Value) -> Value:
        """The sample as the 2D layers take it, [batch, C, H, W]."""
        return sample

    def unfold(self, top, out: Value, sample: Value) -> Value:
        """The 2D layers' output [batch, C, H, W] in the sample's layout."""
        return out

    def per_frame(self, top, v: Value, sample: Value) -> Value:
        """A per-sample conditioning tensor (timestep embedding, text states) as the 2D layers take it."""
        return v

    def temporal_layer(self, mb: ModelBuilder, a: UNetConfig, batch: Dim) -> TemporalLayer | None:
        return None

    # ---------------------------------------------------------------- cost

    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """Inference: weights at the deployment precision plus the activations of
        one denoising step at batch 1: every skip tensor (kept until the up path
        consumes it), the largest level's working set (about 6 feature maps, plus in
        a spatial transformer its h*heads attention scores over (s_l^2)^2 and the
        8x-wide GEGLU projection), and the text encoder's states (context * (4d +
        ffn) + heads * context^2). Affine in res_blocks, as the fitter needs.
        Training (one sample): every block's feature maps kept (2 * res_blocks + 1
        blocks per level: down, up, and the up path's extra block; fused attention
        keeps no scores) plus the text encoder's; checkpointed, the skips plus the
        largest block recomputed."""
        a = ctx.arch
        te = a["text_encoder"]
        nbytes = act_nbytes(ctx)
        chans = level_channels(a)
        levels = len(chans)
        area = [(a["sample_size"] >> lvl) ** 2 for lvl in range(levels)]
        skips = chans[0] * area[0]
        for lvl in range(levels):
            skips += a["res_blocks"] * chans[lvl] * area[lvl]
            if lvl < levels - 1:
                skips += chans[lvl] * area[lvl + 1]
        work = 0
        stored = 0
        for lvl in range(levels):
            w = 6 * chans[lvl] * area[lvl]
            if lvl in a["attention_levels"] or lvl == levels - 1:
                w += 8 * chans[lvl] * area[lvl]
                stored += (2 * a["res_blocks"] + 1) * w
                w += a["heads"] * area[lvl] ** 2
            else:
                stored += (2 * a["res_blocks"] + 1) * w
            work = max(work, w)
        n = a["context"]
        text = n * (4 * te["hidden_size"] + te["ffn_size"]) + te["heads"] * n * n
        acts = (skips + work + text) * nbytes
        ts, tc = tower_training_activations(te["layers"], n, te["hidden_size"])
        t = TRAIN_ACT_BYTES
        return {
            "inference": inference(params * weight_nbytes(ctx), 0, acts),
            "training": training(params, stored * t + ts, (skips + work) * t + tc),
        }

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        s = ctx.arch["sample_size"]
        return {"bindings": {"batch": 1, "seq": ctx.arch["context"], "height": s, "width": s}, "per_unit": 1}


# -------------------------------------------------------------------- modules


def text_encoder_module(mb: ModelBuilder, te: UNetTextTower, context: int, block: ModuleDef) -> ModuleDef:
    """CLIP's text transformer without pooling: token + learned position
    embeddings, causal pre-LN blocks, final LayerNorm; its hidden states are the
    U-Net's cross-attention context. `attention_mask` (1 = token, 0 = padding)
    masks padded keys as transformers' CLIPTextModel does; positions stay 0..seq-1."""
    d = te["hidden_size"]
    b = mb.module("TextEncoder", doc="CLIP text transformer; its final hidden states condition the U-Net.")
    ids = b.input("input_ids", TensorType(DType.i64, ("batch", "seq")))
    mask = b.input("attention_mask", TensorType(DType.i64, ("batch", "seq")))
    b.layer("tok_embeddings", "embedding", num=te["vocab_size"], dim=d)
    b.layer("pos_embeddings", "embedding", num=context, dim=d, init_std=0.01)
    x = b.call("tok_embeddings", ids, hint="x")
    pos = b.op("positions", ids, axis=1, hint="pos")
    x = b.op("add", x, b.call("pos_embeddings", pos, hint="pos_emb"), hint="x")
    bias = b.op("attention_bias", mask, x, causal=True, hint="attn_bias")
    return b.ret(block_stack(b, block, x, te, shared=(bias,), hint="context"))


def time_embedding_module(mb: ModelBuilder, ch0: int, tdim: int) -> ModuleDef:
    b = mb.module("TimestepEmbedding", doc="MLP on the sinusoidal timestep features.")
    t = b.input("t_emb", TensorType(DType.f32, ("batch", ch0)))
    b.layer("linear_1", "linear", in_features=ch0, out_features=tdim)
    b.layer("linear_2", "linear", in_features=tdim, out_features=tdim)
    h = b.op("silu", b.call("linear_1", t, hint="h"), hint="h")
    return b.ret(b.call("linear_2", h, hint="temb"))


def resnet_module(mb: ModelBuilder, a: dict, cin: int, cout: int, hw: HW, tdim: int, batch: Dim = "batch") -> ModuleDef:
    return vae.resnet_module(mb, a["norm_groups"], cin, cout, hw, tdim, RESNET_EPS, batch=batch)


# A video U-Net's temporal layer for a level: (channels, feature-map size) -> the
# module, called as module(x, video) after each ResNet (+ spatial transformer) pair,
# and the type of `video`, the extra input the level takes to unfold the frames
# (families/video_unet.py). None: the image U-Net, no temporal layers.
TemporalLayer = Callable[[int, HW], tuple[ModuleDef, TensorType]]


def _attention(mb: ModelBuilder, dim: int, heads: int, x_type, context_type=None) -> ModuleDef:
    """SD's attention: q/k/v projections without bias, output projection with.
    Self-attention fuses q, k and v into one matmul (`qkv_proj`); cross-attention
    projects queries from x and keys/values from the text states (`kv_proj`)."""
    hd = dim // heads
    b = mb.module("CrossAttention" if context_type is not None else "SelfAttention", doc="Multi-head attention.")
    x = b.input("x", x_type)
    if context_type is None:
        b.layer("qkv_proj", "linear", in_features=dim, out_features=3 * dim, bias=False)
        qkv = b.call("qkv_proj", x, hint="qkv")
        q = b.op("slice", qkv, axis=-1, start=0, end=dim, hint="q")
        k = b.op("slice", qkv, axis=-1, start=dim, end=2 * dim, hint="k")
        v = b.op("slice", qkv, axis=-1, start=2 * dim, end=3 * dim, hint="v")
    else:
        ctx = b.input("context", context_type)
        b.layer("q_proj", "linear", in_features=dim, out_features=dim, bias=False)
        b.layer("kv_proj", "linear", in_features=context_type.shape[-1], out_features=2 * dim, bias=False)
        q = b.call("q_proj", x, hint="q")
        kv = b.call("kv_proj", ctx, hint="kv")
        k = b.op("slice", kv, axis=-1, start=0, end=dim, hint="k")
        v = b.op("slice", kv, axis=-1, start=dim, end=2 * dim, hint="v")
    o = b.op("attention", q, k, v, heads=heads, kv_heads=heads, head_dim=hd, causal=False, hint="attn")
    b.layer("o_proj", "linear", in_features=dim, out_features=dim, bias=True)
    return b.ret(b.call("o_proj", o, hint="out"))


def basic_block_module(mb: ModelBuilder, dim: int, heads: int, x_type, seq_type) -> ModuleDef:
    inner = 4 * dim
    self_attn = _attention(mb, dim, heads, x_type)
    cross_attn = _attention(mb, dim, heads, x_type, seq_type)
    b = mb.module("BasicTransformerBlock", doc="Self-attention, cross-attention to the text, GEGLU feed-forward.")
    x = b.input("x", x_type)
    context = b.input("context", seq_type)
    for name in ("norm1", "norm2", "norm3"):
        b.layer(name, "layer_norm", dim=dim, eps=BLOCK_NORM_EPS)
    b.sub("attn1", self_attn)
    b.sub("attn2", cross_attn)
    b.layer("ff_proj", "linear", in_features=dim, out_features=2 * inner)
    b.layer("ff_out", "linear", in_features=inner, out_features=dim)
    x = b.op("add", x, b.call("attn1", b.call("norm1", x, hint="h"), hint="h"), hint="x")
    x = b.op("add", x, b.call("attn2", b.call("norm2", x, hint="h"), context, hint="h"), hint="x")
    h = b.call("ff_proj", b.call("norm3", x, hint="h"), hint="h")
    value = b.op("slice", h, axis=-1, start=0, end=inner, hint="value")
    gate = b.op("slice", h, axis=-1, start=inner, end=2 * inner, hint="gate")
    h = b.op("mul", value, b.op("gelu", gate, hint="gate"), hint="h")
    return b.ret(b.op("add", x, b.call("ff_out", h, hint="h"), hint="x"))


def spatial_transformer_module(mb: ModelBuilder, a: dict, ch: int, hw: HW, seq_type, batch: Dim = "batch") -> ModuleDef:
    x_type = TensorType(DType.f32, (batch, ch, *hw))
    tok_type = TensorType(DType.f32, (batch, dim_mul(*hw), ch))
    block = basic_block_module(mb, ch, a["heads"], tok_type, seq_type)
    b = mb.module("SpatialTransformer", doc="Transformer over the feature map's pixels, conditioned on the text.")
    x = b.input("x", x_type)
    context = b.input("context", seq_type)
    b.layer("norm", "group_norm", groups=a["norm_groups"], channels=ch, eps=TRANSFORMER_NORM_EPS)
    b.layer("proj_in", "conv2d", in_channels=ch, out_channels=ch, kernel=1)
    b.repeat("blocks", block, a["transformer_depth"])
    b.layer("proj_out", "conv2d", in_channels=ch, out_channels=ch, kernel=1)
    h = b.call("proj_in", b.call("norm", x, hint="h"), hint="h")
    h = b.op("flatten_spatial", h, hint="tokens")
    h = b.call("blocks", h, context, hint="tokens")
    h = b.op("unflatten_spatial", h, x, hint="h")
    return b.ret(b.op("add", b.call("proj_out", h, hint="h"), x, hint="out"))


def down_level_module(
    mb, a, lvl: int, cin: int, hw: HW, temb_type, seq_type, *, last: bool, temporal: TemporalLayer | None = None
) -> ModuleDef:
    ch = level_channels(a)[lvl]
    tdim = temb_type.shape[1]
    batch = temb_type.shape[0]
    attn = lvl in a["attention_levels"]
    children = []
    for j in range(a["res_blocks"]):
        children.append(resnet_module(mb, a, cin if j == 0 else ch, ch, hw, tdim, batch))
    st = spatial_transformer_module(mb, a, ch, hw, seq_type, batch) if attn else None
    tl = temporal(ch, hw) if temporal is not None else None
    b = mb.module(f"DownLevel{lvl}", doc="ResNet blocks (and spatial transformers), then downsampling; returns every skip.")
    x = b.input("x", TensorType(DType.f32, (batch, cin, *hw)))
    temb = b.input("temb", temb_type)
    context = b.input("context", seq_type)
    video = b.input("video", tl[1]) if tl is not None else None
    outs = []
    for j, res in enumerate(children):
        b.sub(f"res{j}", res)
        x = b.call(f"res{j}", x, temb, hint="h")
        if st is not None:
            b.sub(f"attn{j}", st)
            x = b.call(f"attn{j}", x, context, hint="h")
        if tl is not None:
            b.sub(f"temporal{j}", tl[0])
            x = b.call(f"temporal{j}", x, video, hint="h")
        outs.append(x)
    if not last:
        b.layer("downsample", "conv2d", in_channels=ch, out_channels=ch, kernel=3, stride=2, padding=1)
        outs.append(b.call("downsample", x, hint="h"))
    return b.ret(*outs)


def mid_module(mb, a, ch: int, hw: HW, temb_type, seq_type, temporal: TemporalLayer | None = None) -> ModuleDef:
    tdim = temb_type.shape[1]
    batch = temb_type.shape[0]
    res = resnet_module(mb, a, ch, ch, hw, tdim, batch)
    st = spatial_transformer_module(mb, a, ch, hw, seq_type, batch)
    tl = temporal(ch, hw) if temporal is not None else None
    b = mb.module("MidBlock", doc="ResNet, spatial transformer, ResNet at the lowest resolution.")
    x = b.input("x", TensorType(DType.f32, (batch, ch, *hw)))
    temb = b.input("temb", temb_type)
    context = b.input("context", seq_type)
    video = b.input("video", tl[1]) if tl is not None else None
    b.sub("res0", res)
    b.sub("attn0", st)
    if tl is not None:
        b.sub("temporal0", tl[0])
    b.sub("res1", res)
    x = b.call("res0", x, temb, hint="h")
    x = b.call("attn0", x, context, hint="h")
    if tl is not None:
        x = b.call("temporal0", x, video, hint="h")
    return b.ret(b.call("res1", x, temb, hint="h"))


def up_level_module(
    mb, a, lvl: int, x_type, skip_types, temb_type, seq_type, *, first: bool, temporal: TemporalLayer | None = None
) -> ModuleDef:
    """res_blocks + 1 ResNet blocks, each on the concat of the running features and
    one skip (latest first), then nearest 2x upsampling + conv unless at level 0."""
    ch = level_channels(a)[lvl]
    hw = x_type.shape[2:]
    tdim = temb_type.shape[1]
    batch = temb_type.shape[0]
    attn = lvl in a["attention_levels"]
    cin = x_type.shape[1]
    resnets = []
    for skip in skip_types:
        resnets.append(resnet_module(mb, a, cin + skip.shape[1], ch, hw, tdim, batch))
        cin = ch
    st = spatial_transformer_module(mb, a, ch, hw, seq_type, batch) if attn else None
    tl = temporal(ch, hw) if temporal is not None else None
    b = mb.module(f"UpLevel{lvl}", doc="ResNet blocks on skip concats (and spatial transformers), then upsampling.")
    x = b.input("x", x_type)
    skips = [b.input(f"skip{j}", t) for j, t in enumerate(skip_types)]
    temb = b.input("temb", temb_type)
    context = b.input("context", seq_type)
    video = b.input("video", tl[1]) if tl is not None else None
    for j, (res, skip) in enumerate(zip(resnets, skips)):
        b.sub(f"res{j}", res)
        x = b.call(f"res{j}", b.op("concat", x, skip, axis=1, hint="h"), temb, hint="h")
        if st is not None:
            b.sub(f"attn{j}", st)
            x = b.call(f"attn{j}", x, context, hint="h")
        if tl is not None:
            b.sub(f"temporal{j}", tl[0])
            x = b.call(f"temporal{j}", x, video, hint="h")
    if not first:
        b.layer("upsample", "conv2d", in_channels=ch, out_channels=ch, kernel=3, padding=1)
        x = b.call("upsample", b.op("upsample_nearest", x, factor=2, hint="h"), hint="h")
    return b.ret(x)
