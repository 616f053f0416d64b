"""Hugging Face `transformers` weights -> MetaGen canonical names.

Each function takes a transformers model's `state_dict()` (torch tensors) and
returns name -> numpy array in MetaGen's canonical layout, ready for the generated
module's `load_canonical`. Attention q, k and v are fused into `qkv_proj` (rows in
q, k, v order). Both the transformers 4.x and 5.x spellings of ViT are accepted.
"""

from __future__ import annotations

import re

import numpy as np


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _pick(sd: dict, *names: str):
    for n in names:
        if n in sd:
            return sd[n]
    raise KeyError(f"none of {names} in the reference state dict")


def _layers(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return 1 + max(int(m.group(1)) for k in sd for m in [rx.match(k)] if m)


def _qkv(q, k, v) -> np.ndarray:
    return np.concatenate([_np(q), _np(k), _np(v)], axis=0)


def _ln(out: dict, dst: str, sd: dict, *srcs: str) -> None:
    out[f"{dst}.weight"] = _np(_pick(sd, *(s + ".weight" for s in srcs)))
    out[f"{dst}.bias"] = _np(_pick(sd, *(s + ".bias" for s in srcs)))


def _lin(out: dict, dst: str, sd: dict, *srcs: str, bias: bool = True) -> None:
    out[f"{dst}.weight"] = _np(_pick(sd, *(s + ".weight" for s in srcs)))
    if bias:
        out[f"{dst}.bias"] = _np(_pick(sd, *(s + ".bias" for s in srcs)))


def vit_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`ViTForImageClassification` -> the `vit` family."""
    out = {
        "patch_embed.weight": _np(sd["vit.embeddings.patch_embeddings.projection.weight"]),
        "patch_embed.bias": _np(sd["vit.embeddings.patch_embeddings.projection.bias"]),
        "cls_token": _np(sd["vit.embeddings.cls_token"]),
        "pos_embed": _np(sd["vit.embeddings.position_embeddings"]),
    }
    n = _layers(sd, r"vit\.(?:layers|encoder\.layer)\.(\d+)\.")
    for i in range(n):
        v5, v4 = f"vit.layers.{i}", f"vit.encoder.layer.{i}"
        b = f"blocks.{i}"
        _ln(out, f"{b}.attn_norm", sd, f"{v5}.layernorm_before", f"{v4}.layernorm_before")
        _ln(out, f"{b}.mlp_norm", sd, f"{v5}.layernorm_after", f"{v4}.layernorm_after")
        for part in ("weight", "bias"):
            q = _pick(sd, f"{v5}.attention.q_proj.{part}", f"{v4}.attention.attention.query.{part}")
            k = _pick(sd, f"{v5}.attention.k_proj.{part}", f"{v4}.attention.attention.key.{part}")
            v = _pick(sd, f"{v5}.attention.v_proj.{part}", f"{v4}.attention.attention.value.{part}")
            out[f"{b}.attn.qkv_proj.{part}"] = _qkv(q, k, v)
        _lin(out, f"{b}.attn.o_proj", sd, f"{v5}.attention.o_proj", f"{v4}.attention.output.dense")
        _lin(out, f"{b}.mlp.fc_in", sd, f"{v5}.mlp.fc1", f"{v4}.intermediate.dense")
        _lin(out, f"{b}.mlp.fc_out", sd, f"{v5}.mlp.fc2", f"{v4}.output.dense")
    _ln(out, "norm_f", sd, "vit.layernorm")
    _lin(out, "head", sd, "classifier")
    return out


def bert_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`BertForSequenceClassification` -> the `encoder` family (post-norm, pooler)."""
    e = "bert.embeddings"
    out = {
        "tok_embeddings.weight": _np(sd[f"{e}.word_embeddings.weight"]),
        "pos_embeddings.weight": _np(sd[f"{e}.position_embeddings.weight"]),
        "type_embeddings.weight": _np(sd[f"{e}.token_type_embeddings.weight"]),
    }
    _ln(out, "embed_norm", sd, f"{e}.LayerNorm")
    for i in range(_layers(sd, r"bert\.encoder\.layer\.(\d+)\.")):
        h, b = f"bert.encoder.layer.{i}", f"blocks.{i}"
        for part in ("weight", "bias"):
            s = f"{h}.attention.self"
            out[f"{b}.attn.qkv_proj.{part}"] = _qkv(sd[f"{s}.query.{part}"], sd[f"{s}.key.{part}"], sd[f"{s}.value.{part}"])
        _lin(out, f"{b}.attn.o_proj", sd, f"{h}.attention.output.dense")
        _ln(out, f"{b}.attn_norm", sd, f"{h}.attention.output.LayerNorm")
        _lin(out, f"{b}.mlp.fc_in", sd, f"{h}.intermediate.dense")
        _lin(out, f"{b}.mlp.fc_out", sd, f"{h}.output.dense")
        _ln(out, f"{b}.mlp_norm", sd, f"{h}.output.LayerNorm")
    _lin(out, "pooler", sd, "bert.pooler.dense")
    _lin(out, "classifier", sd, "classifier")
    return out


def _clip_blocks(out: dict, sd: dict, src: str, dst: str) -> None:
    for i in range(_layers(sd, re.escape(src) + r"\.encoder\.layers\.(\d+)\.")):
        h, b = f"{src}.encoder.layers.{i}", f"{dst}.blocks.{i}"
        _ln(out, f"{b}.attn_norm", sd, f"{h}.layer_norm1")
        for part in ("weight", "bias"):
            a = f"{h}.self_attn"
            out[f"{b}.attn.qkv_proj.{part}"] = _qkv(sd[f"{a}.q_proj.{part}"], sd[f"{a}.k_proj.{part}"], sd[f"{a}.v_proj.{part}"])
        _lin(out, f"{b}.attn.o_proj", sd, f"{h}.self_attn.out_proj")
        _ln(out, f"{b}.mlp_norm", sd, f"{h}.layer_norm2")
        _lin(out, f"{b}.mlp.fc_in", sd, f"{h}.mlp.fc1")
        _lin(out, f"{b}.mlp.fc_out", sd, f"{h}.mlp.fc2")


def clip_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`CLIPModel` -> the `clip` family."""
    t, v = "text_model", "vision_model"
    out = {
        "logit_scale": _np(sd["logit_scale"]).reshape(1),
        "text_encoder.tok_embeddings.weight": _np(sd[f"{t}.embeddings.token_embedding.weight"]),
        "text_encoder.pos_embeddings.weight": _np(sd[f"{t}.embeddings.position_embedding.weight"]),
    }
    _clip_blocks(out, sd, t, "text_encoder")
    _ln(out, "text_encoder.norm_f", sd, f"{t}.final_layer_norm")
    cls = _np(sd[f"{v}.embeddings.class_embedding"])
    out["image_encoder.patch_embed.weight"] = _np(sd[f"{v}.embeddings.patch_embedding.weight"])
    out["image_encoder.cls_token"] = cls.reshape(1, 1, -1)
    out["image_encoder.pos_embed"] = _np(sd[f"{v}.embeddings.position_embedding.weight"])[None]
    _ln(out, "image_encoder.pre_norm", sd, f"{v}.pre_layrnorm")
    _clip_blocks(out, sd, v, "image_encoder")
    _ln(out, "image_encoder.post_norm", sd, f"{v}.post_layernorm")
    _lin(out, "text_projection", sd, "text_projection", bias=False)
    _lin(out, "image_projection", sd, "visual_projection", bias=False)
    return out
