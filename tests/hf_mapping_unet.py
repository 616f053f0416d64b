"""Published weights -> MetaGen canonical names for the diffusion U-Net family.

`unet_to_canonical` maps a diffusers `UNet2DConditionModel` state dict,
`clip_text_to_canonical` a transformers `CLIPTextModel` one. Self-attention q/k/v
are fused into `qkv_proj`, cross-attention k/v into `kv_proj`; everything else is a
rename. Up blocks are numbered by level (diffusers counts them from the bottom).
"""

from __future__ import annotations

import re

import numpy as np


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=np.float32)


_BLOCK_RENAMES = [
    (r"attn1\.to_out\.0\.", "attn1.o_proj."),
    (r"attn2\.to_out\.0\.", "attn2.o_proj."),
    (r"attn2\.to_q\.", "attn2.q_proj."),
    (r"ff\.net\.0\.proj\.", "ff_proj."),
    (r"ff\.net\.2\.", "ff_out."),
    (r"\.transformer_blocks\.", ".blocks."),
]


def unet_to_canonical(state: dict, levels: int, prefix: str = "") -> dict[str, np.ndarray]:
    """diffusers UNet2DConditionModel state dict -> canonical arrays (`prefix` is
    prepended to every name)."""
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in state.items():
        value = _np(tensor)
        new = name
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", name)
        if m:
            lvl, kind, j, rest = m.groups()
            new = f"down{lvl}." + {"resnets": f"res{j}.", "attentions": f"attn{j}.", "downsamplers": "downsample."}[kind]
            new += rest[len("conv."):] if kind == "downsamplers" else rest
        m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", name)
        if m:
            i, kind, j, rest = m.groups()
            lvl = levels - 1 - int(i)
            new = f"up{lvl}." + {"resnets": f"res{j}.", "attentions": f"attn{j}.", "upsamplers": "upsample."}[kind]
            new += rest[len("conv."):] if kind == "upsamplers" else rest
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name)
        if m:
            kind, j, rest = m.groups()
            new = f"mid.{'res' if kind == 'resnets' else 'attn'}{j}.{rest}"
        for pat, rep in _BLOCK_RENAMES:
            new = re.sub(pat, rep, new)
        m = re.match(r"(.*)\.attn1\.to_([qkv])\.weight$", new)
        if m:
            fused.setdefault(m.group(1) + ".attn1.qkv_proj.weight", {})[m.group(2)] = value
            continue
        m = re.match(r"(.*)\.attn2\.to_([kv])\.weight$", new)
        if m:
            fused.setdefault(m.group(1) + ".attn2.kv_proj.weight", {})[m.group(2)] = value
            continue
        out[prefix + new] = value
    for name, parts in fused.items():
        order = "qkv" if name.endswith("qkv_proj.weight") else "kv"
        out[prefix + name] = np.concatenate([parts[c] for c in order], axis=0)
    return out


def clip_text_to_canonical(state: dict, prefix: str = "text_encoder.") -> dict[str, np.ndarray]:
    """transformers CLIPTextModel state dict -> canonical arrays under `prefix`."""
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in state.items():
        if name.endswith("position_ids"):
            continue
        value = _np(tensor)
        new = name.removeprefix("text_model.")
        new = new.replace("embeddings.token_embedding.", "tok_embeddings.")
        new = new.replace("embeddings.position_embedding.", "pos_embeddings.")
        new = new.replace("final_layer_norm.", "norm_f.")
        new = re.sub(r"^encoder\.layers\.", "blocks.", new)
        new = new.replace(".layer_norm1.", ".attn_norm.").replace(".layer_norm2.", ".mlp_norm.")
        new = new.replace(".self_attn.out_proj.", ".attn.o_proj.")
        new = new.replace(".mlp.fc1.", ".mlp.fc_in.").replace(".mlp.fc2.", ".mlp.fc_out.")
        m = re.match(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", new)
        if m:
            fused.setdefault(f"{m.group(1)}.attn.qkv_proj.{m.group(3)}", {})[m.group(2)] = value
            continue
        out[prefix + new] = value
    for name, parts in fused.items():
        out[prefix + name] = np.concatenate([parts[c] for c in "qkv"], axis=0)
    return out


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
