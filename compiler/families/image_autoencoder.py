"""Stable Diffusion's image autoencoder (diffusers' `AutoencoderKL`), as IR modules.

The diffusion family includes it when the spec's images are pixels
(`architecture.images: pixels`): the U-Net denoises latents, and the autoencoder
maps images to latents (`vae_encoder`) and latents back to images (`vae_decoder`).
Both are members of the top module that its forward does not call: the generated
`sample()` calls them, and each is its own ONNX graph.

Structure, as diffusers' `Encoder` / `Decoder` with `quant_conv` / `post_quant_conv`:

- encoder: `conv_in`; levels `down0..` of `layers_per_block` ResNet blocks (no
  timestep; GroupNorm eps 1e-6), each but the last followed by zero padding
  (bottom, right) and a stride-2 3x3 conv; a mid block (ResNet, one-head
  self-attention over the pixels with biased q/k/v, ResNet); GroupNorm -> silu ->
  `conv_out` to 2 x latent_channels (mean and log-variance), 1x1 `quant_conv`;
- decoder: 1x1 `post_quant_conv`; `conv_in`; the mid block; levels `upL` (deepest
  first) of layers_per_block + 1 ResNet blocks, nearest 2x upsampling + conv
  between levels; GroupNorm -> silu -> `conv_out` to the image's channels.

Canonical names: diffusers' `encoder.X` / `quant_conv` are `vae_encoder.X` /
`vae_encoder.quant_conv`, `decoder.X` / `post_quant_conv` are `vae_decoder.X` /
`vae_decoder.post_quant_conv`, with blocks named as in the U-Net (`down0.res1`,
`up3.upsample`, `mid.attn0.q_proj`); metagen.hf (`vae_to_canonical`) maps them.
"""

from __future__ import annotations

from dataclasses import dataclass

from metagen.compiler.families.base import ArchConfig, spec_key
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import ModuleDef
from metagen.ir.types import Dim, DType, TensorType, dim_div, dim_mul

HW = tuple[Dim, Dim]
VAE_EPS = 1e-6
IMAGE_CHANNELS = 3


@dataclass
class AutoencoderConfig(ArchConfig):
    """`architecture.autoencoder`: SD 1.5's AutoencoderKL unless pinned otherwise."""

    block_channels: list[int] | None = spec_key()
    layers_per_block: int | None = spec_key()
    norm_groups: int | None = spec_key()
    scaling_factor: float | None = spec_key()


# Stable Diffusion 1.x/2.x's autoencoder (83,653,863 parameters with 4 latent channels).
SD_AUTOENCODER = dict(block_channels=[128, 256, 512, 512], layers_per_block=2, norm_groups=32, scaling_factor=0.18215)


def downsampling_factor(ae) -> int:
    return 2 ** (len(ae["block_channels"]) - 1)


def check(ae, latent_channels: int) -> str | None:
    """Why this autoencoder cannot be built, or None."""
    if not ae["block_channels"]:
        return "autoencoder.block_channels needs at least one level"
    for ch in ae["block_channels"]:
        if ch % ae["norm_groups"]:
            return f"autoencoder.norm_groups {ae['norm_groups']} does not divide {ch} channels (autoencoder.block_channels)"
    if latent_channels < 1:
        return "latent_channels must be at least 1"
    return None


def resnet_module(
    mb: ModelBuilder, groups: int, cin: int, cout: int, hw: HW, tdim: int | None, eps: float, name: str = "ResnetBlock",
    batch: Dim = "batch",
) -> ModuleDef:
    """GroupNorm-SiLU-conv twice, the timestep's projection added between (when
    `tdim`), residual through a 1x1 conv when channels change: diffusers' ResnetBlock2D.
    `batch` is the leading dim (a video U-Net runs it on frames: batch*frames)."""
    b = mb.module(name, doc="GroupNorm-SiLU-conv twice" + (", timestep added between" if tdim else "") + ", residual.")
    x = b.input("x", TensorType(DType.f32, (batch, cin, *hw)))
    temb = b.input("temb", TensorType(DType.f32, (batch, tdim))) if tdim else None
    b.layer("norm1", "group_norm", groups=groups, channels=cin, eps=eps)
    b.layer("conv1", "conv2d", in_channels=cin, out_channels=cout, kernel=3, padding=1)
    if temb is not None:
        b.layer("time_emb_proj", "linear", in_features=tdim, out_features=cout)
    b.layer("norm2", "group_norm", groups=groups, channels=cout, eps=eps)
    b.layer("conv2", "conv2d", in_channels=cout, out_channels=cout, kernel=3, padding=1)
    h = b.op("silu", b.call("norm1", x, hint="h"), hint="h")
    h = b.call("conv1", h, hint="h")
    if temb is not None:
        t = b.call("time_emb_proj", b.op("silu", temb, hint="t"), hint="t")
        h = b.op("add", h, b.op("unsqueeze", t, axes=(2, 3), hint="t"), hint="h")
    h = b.op("silu", b.call("norm2", h, hint="h"), hint="h")
    h = b.call("conv2", h, hint="h")
    if cin != cout:
        b.layer("conv_shortcut", "conv2d", in_channels=cin, out_channels=cout, kernel=1)
        x = b.call("conv_shortcut", x, hint="shortcut")
    return b.ret(b.op("add", x, h, hint="out"))


def _pixel_attention(mb: ModelBuilder, groups: int, ch: int, hw: HW) -> ModuleDef:
    """One-head self-attention over the feature map's pixels, residual."""
    b = mb.module("VAEAttention", doc="GroupNorm, one-head self-attention over the pixels, residual.")
    x = b.input("x", TensorType(DType.f32, ("batch", ch, *hw)))
    b.layer("norm", "group_norm", groups=groups, channels=ch, eps=VAE_EPS)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        b.layer(name, "linear", in_features=ch, out_features=ch)
    h = b.op("flatten_spatial", b.call("norm", x, hint="h"), hint="tokens")
    q, k, v = (b.call(n, h, hint=n[0]) for n in ("q_proj", "k_proj", "v_proj"))
    o = b.op("attention", q, k, v, heads=1, kv_heads=1, head_dim=ch, causal=False, hint="attn")
    o = b.op("unflatten_spatial", b.call("o_proj", o, hint="out"), x, hint="h")
    return b.ret(b.op("add", o, x, hint="out"))


def _mid_module(mb: ModelBuilder, groups: int, ch: int, hw: HW) -> ModuleDef:
    res = resnet_module(mb, groups, ch, ch, hw, None, VAE_EPS, "VAEResnetBlock")
    attn = _pixel_attention(mb, groups, ch, hw)
    b = mb.module("VAEMidBlock", doc="ResNet, pixel self-attention, ResNet at the lowest resolution.")
    x = b.input("x", TensorType(DType.f32, ("batch", ch, *hw)))
    b.sub("res0", res)
    b.sub("attn0", attn)
    b.sub("res1", res)
    return b.ret(b.call("res1", b.call("attn0", b.call("res0", x, hint="h"), hint="h"), hint="h"))


def _scaled_hw(hw: HW, factor: int, up: bool) -> HW:
    return tuple(dim_mul(d, factor) if up else dim_div(d, factor) for d in hw)  # type: ignore[return-value]


def encoder_module(mb: ModelBuilder, ae, latent_channels: int) -> ModuleDef:
    """Image [B, 3, image_height, image_width] -> moments [B, 2 * latent_channels,
    image_height / f, image_width / f] (mean, then log-variance)."""
    chans, groups, n = ae["block_channels"], ae["norm_groups"], ae["layers_per_block"]
    levels = len(chans)
    factor = downsampling_factor(ae)
    hw: HW = ("image_height", "image_width")
    down = []
    cin = chans[0]
    for lvl, ch in enumerate(chans):
        level_hw = _scaled_hw(hw, 2**lvl, up=False)
        blocks = [resnet_module(mb, groups, cin if j == 0 else ch, ch, level_hw, None, VAE_EPS, "VAEResnetBlock") for j in range(n)]
        b = mb.module(f"VAEDownLevel{lvl}", doc="ResNet blocks, then (but at the last level) pad and a stride-2 conv.")
        x = b.input("x", TensorType(DType.f32, ("batch", cin, *level_hw)))
        for j, block in enumerate(blocks):
            b.sub(f"res{j}", block)
            x = b.call(f"res{j}", x, hint="h")
        if lvl < levels - 1:
            b.layer("downsample", "conv2d", in_channels=ch, out_channels=ch, kernel=3, stride=2)
            x = b.call("downsample", b.op("pad2d", x, pads=(0, 1, 0, 1), hint="h"), hint="h")
        down.append(b.ret(x))
        cin = ch
    low = _scaled_hw(hw, factor, up=False)
    mid = _mid_module(mb, groups, chans[-1], low)
    b = mb.module("VAEEncoder", doc="Image to the latent distribution's mean and log-variance.")
    image = b.input("image", TensorType(DType.f32, ("batch", IMAGE_CHANNELS, *hw)))
    x = b.op(
        "require_multiple", image, axes=(2, 3), multiple=factor,
        what=f"image height and width (the autoencoder halves them {levels - 1} times)", hint="image",
    )
    b.layer("conv_in", "conv2d", in_channels=IMAGE_CHANNELS, out_channels=chans[0], kernel=3, padding=1)
    x = b.call("conv_in", x, hint="h")
    for lvl, level in enumerate(down):
        b.sub(f"down{lvl}", level)
        x = b.call(f"down{lvl}", x, hint="h")
    b.sub("mid", mid)
    x = b.call("mid", x, hint="h")
    b.layer("conv_norm_out", "group_norm", groups=groups, channels=chans[-1], eps=VAE_EPS)
    b.layer("conv_out", "conv2d", in_channels=chans[-1], out_channels=2 * latent_channels, kernel=3, padding=1)
    b.layer("quant_conv", "conv2d", in_channels=2 * latent_channels, out_channels=2 * latent_channels, kernel=1)
    x = b.call("conv_out", b.op("silu", b.call("conv_norm_out", x, hint="h"), hint="h"), hint="h")
    return b.ret(b.call("quant_conv", x, hint="moments"))


def decoder_module(mb: ModelBuilder, ae, latent_channels: int) -> ModuleDef:
    """Latents [B, latent_channels, height, width] -> image [B, 3, height * f, width * f]."""
    chans, groups, n = ae["block_channels"], ae["norm_groups"], ae["layers_per_block"]
    levels = len(chans)
    hw: HW = ("height", "width")
    mid = _mid_module(mb, groups, chans[-1], hw)
    up = []
    cin = chans[-1]
    for lvl in reversed(range(levels)):
        ch = chans[lvl]
        level_hw = _scaled_hw(hw, 2 ** (levels - 1 - lvl), up=True)
        blocks = [resnet_module(mb, groups, cin if j == 0 else ch, ch, level_hw, None, VAE_EPS, "VAEResnetBlock") for j in range(n + 1)]
        b = mb.module(f"VAEUpLevel{lvl}", doc="ResNet blocks, then (but at level 0) nearest 2x upsampling and a conv.")
        x = b.input("x", TensorType(DType.f32, ("batch", cin, *level_hw)))
        for j, block in enumerate(blocks):
            b.sub(f"res{j}", block)
            x = b.call(f"res{j}", x, hint="h")
        if lvl > 0:
            b.layer("upsample", "conv2d", in_channels=ch, out_channels=ch, kernel=3, padding=1)
            x = b.call("upsample", b.op("upsample_nearest", x, factor=2, hint="h"), hint="h")
        up.append((lvl, b.ret(x)))
        cin = ch
    b = mb.module("VAEDecoder", doc="Latents to an image (values about [-1, 1]).")
    z = b.input("latents", TensorType(DType.f32, ("batch", latent_channels, *hw)))
    b.layer("post_quant_conv", "conv2d", in_channels=latent_channels, out_channels=latent_channels, kernel=1)
    b.layer("conv_in", "conv2d", in_channels=latent_channels, out_channels=chans[-1], kernel=3, padding=1)
    x = b.call("conv_in", b.call("post_quant_conv", z, hint="z"), hint="h")
    b.sub("mid", mid)
    x = b.call("mid", x, hint="h")
    for lvl, level in up:
        b.sub(f"up{lvl}", level)
        x = b.call(f"up{lvl}", x, hint="h")
    b.layer("conv_norm_out", "group_norm", groups=groups, channels=chans[0], eps=VAE_EPS)
    b.layer("conv_out", "conv2d", in_channels=chans[0], out_channels=IMAGE_CHANNELS, kernel=3, padding=1)
    x = b.op("silu", b.call("conv_norm_out", x, hint="h"), hint="h")
    return b.ret(b.call("conv_out", x, hint="image"))
