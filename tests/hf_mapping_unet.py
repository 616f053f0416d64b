"""MetaGen's diffusion U-Net -> diffusers' `UNet2DConditionModel` keyword arguments.

The weight mappings (diffusers and transformers names -> canonical) live in
`metagen.hf` (`unet_to_canonical`, `clip_text_to_canonical`).
"""

from __future__ import annotations


def diffusers_config(arch: dict) -> dict:
    """UNet2DConditionModel keyword arguments for a resolved MetaGen architecture."""
    levels = len(arch["channel_mults"])
    attn = set(arch["attention_levels"])
    return dict(
        sample_size=arch["sample_size"],
        in_channels=arch["latent_channels"],
        out_channels=arch["latent_channels"],
        block_out_channels=tuple(arch["base_channels"] * m for m in arch["channel_mults"]),
        layers_per_block=arch["res_blocks"],
        down_block_types=tuple("CrossAttnDownBlock2D" if lvl in attn else "DownBlock2D" for lvl in range(levels)),
        up_block_types=tuple("CrossAttnUpBlock2D" if lvl in attn else "UpBlock2D" for lvl in reversed(range(levels))),
        cross_attention_dim=arch["cross_attention_dim"],
        attention_head_dim=arch["heads"],  # diffusers' legacy name for the number of heads
        norm_num_groups=arch["norm_groups"],
        transformer_layers_per_block=arch["transformer_depth"],
    )


def diffusers_vae_config(arch: dict) -> dict:
    """diffusers `AutoencoderKL` keyword arguments for the diffusion family's
    resolved architecture (its `autoencoder` section)."""
    ae = arch["autoencoder"]
    n = len(ae["block_channels"])
    return dict(
        block_out_channels=list(ae["block_channels"]),
        layers_per_block=ae["layers_per_block"],
        latent_channels=arch["latent_channels"],
        norm_num_groups=ae["norm_groups"],
        scaling_factor=ae["scaling_factor"],
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
    )
