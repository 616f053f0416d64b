"""Hugging Face interop: a `config.json` becomes a spec, a checkpoint canonical weights.

`import_hf(path)` reads a transformers config (and, when asked, its weights), checks
every field that changes the computation against what the IR honours, and returns
the spec text plus the weights under MetaGen's canonical names. A field the IR cannot
honour is an error located in the JSON ("PATH:LINE:COL: error: ..."), never a
silently different model.

The name mappings (`*_to_canonical`) take a reference model's state dict (torch
tensors or numpy arrays) and return name -> float32 numpy array in the canonical
layout, ready for a generated module's `load_canonical`. Attention q, k and v are
fused into `qkv_proj` (rows in q, k, v order). This module is the one place that
knows transformers' weight names; the tests that compare our models with the
reference classes use it too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from metagen.diagnostics import CompileError, Diagnostic, Loc

# ----------------------------------------------------------------- name mappings


def _np(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().cpu().float().numpy()
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32))


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


def _ln(out: dict, dst: str, sd: dict, *srcs: str, bias: bool = True) -> None:
    out[f"{dst}.weight"] = _np(_pick(sd, *(s + ".weight" for s in srcs)))
    if bias:
        out[f"{dst}.bias"] = _np(_pick(sd, *(s + ".bias" for s in srcs)))


_lin = _ln  # a linear layer's weight and bias have the same names as a norm's


def gpt2_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`GPT2LMHeadModel` -> the decoder LM (learned positions, tied head)."""
    out = {
        "tok_embeddings.weight": _np(sd["transformer.wte.weight"]),
        "pos_embeddings.weight": _np(sd["transformer.wpe.weight"]),
    }
    _ln(out, "norm_f", sd, "transformer.ln_f")
    for i in range(_layers(sd, r"transformer\.h\.(\d+)\.")):
        p, b = f"transformer.h.{i}", f"blocks.{i}"
        _ln(out, f"{b}.attn_norm", sd, f"{p}.ln_1")
        _ln(out, f"{b}.mlp_norm", sd, f"{p}.ln_2")
        # GPT-2's Conv1D stores [in, out]; the canonical layout is torch.nn.Linear's [out, in].
        for dst, src in (("attn.qkv_proj", "attn.c_attn"), ("attn.o_proj", "attn.c_proj"),
                         ("mlp.fc_in", "mlp.c_fc"), ("mlp.fc_out", "mlp.c_proj")):
            out[f"{b}.{dst}.weight"] = np.ascontiguousarray(_np(sd[f"{p}.{src}.weight"]).T)
            out[f"{b}.{dst}.bias"] = _np(sd[f"{p}.{src}.bias"])
    return out


def llama_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`LlamaForCausalLM` (and Mistral's, same names) -> the decoder LM (RMSNorm, SwiGLU,
    RoPE); `lm_head` only when the checkpoint has its own (untied)."""
    out = {"tok_embeddings.weight": _np(sd["model.embed_tokens.weight"])}
    _ln(out, "norm_f", sd, "model.norm", bias=False)
    if "lm_head.weight" in sd:
        out["lm_head.weight"] = _np(sd["lm_head.weight"])
    for i in range(_layers(sd, r"model\.layers\.(\d+)\.")):
        p, b = f"model.layers.{i}", f"blocks.{i}"
        _ln(out, f"{b}.attn_norm", sd, f"{p}.input_layernorm", bias=False)
        _ln(out, f"{b}.mlp_norm", sd, f"{p}.post_attention_layernorm", bias=False)
        a = f"{p}.self_attn"
        parts = ("weight", "bias") if f"{a}.q_proj.bias" in sd else ("weight",)
        for part in parts:
            out[f"{b}.attn.qkv_proj.{part}"] = _qkv(sd[f"{a}.q_proj.{part}"], sd[f"{a}.k_proj.{part}"], sd[f"{a}.v_proj.{part}"])
        for dst, src in (("attn.o_proj", "self_attn.o_proj"), ("mlp.gate_proj", "mlp.gate_proj"),
                         ("mlp.up_proj", "mlp.up_proj"), ("mlp.down_proj", "mlp.down_proj")):
            _lin(out, f"{b}.{dst}", sd, f"{p}.{src}", bias=f"{p}.{src}.bias" in sd)
    return out


def vit_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`ViTForImageClassification` -> the `vit` family. Both the transformers 4.x and
    5.x spellings are accepted."""
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


def _bert_trunk(sd: dict) -> dict[str, np.ndarray]:
    """BERT's embeddings and blocks (`bert.` names) -> the encoder families' trunk."""
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
    return out


def bert_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`BertForSequenceClassification` -> the `encoder` family (post-norm, pooler)."""
    out = _bert_trunk(sd)
    _lin(out, "pooler", sd, "bert.pooler.dense")
    _lin(out, "classifier", sd, "classifier")
    return out


def bert_mlm_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`BertForMaskedLM` -> the `masked_lm` family: the trunk (no pooler) and BERT's
    masked-LM head (transform dense + LayerNorm, scores against the tied word
    embeddings plus `cls.predictions.bias`)."""
    out = _bert_trunk(sd)
    _lin(out, "mlm_transform", sd, "cls.predictions.transform.dense")
    _ln(out, "mlm_norm", sd, "cls.predictions.transform.LayerNorm")
    out["mlm_bias"] = _np(sd["cls.predictions.bias"])
    return out


def cross_encoder_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """`BertForSequenceClassification` with one label -> the `cross_encoder` family:
    BERT's names, its one-row classifier as `scorer`."""
    out = bert_to_canonical(sd)
    for part in ("weight", "bias"):
        out[f"scorer.{part}"] = out.pop(f"classifier.{part}")
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


_UNET_RENAMES = [
    (r"attn1\.to_out\.0\.", "attn1.o_proj."),
    (r"attn2\.to_out\.0\.", "attn2.o_proj."),
    (r"attn2\.to_q\.", "attn2.q_proj."),
    (r"ff\.net\.0\.proj\.", "ff_proj."),
    (r"ff\.net\.2\.", "ff_out."),
    (r"\.transformer_blocks\.", ".blocks."),
]


def _unet_block_name(name: str, levels: int) -> str:
    """diffusers' down/up/mid block names -> per-level ones (`down_blocks.1.resnets.0.`
    -> `down1.res0.`); up blocks are numbered by level (diffusers counts them from the
    bottom). The U-Net and the autoencoder share the layout."""
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", name)
    if m:
        lvl, kind, j, rest = m.groups()
        new = f"down{lvl}." + {"resnets": f"res{j}.", "attentions": f"attn{j}.", "downsamplers": "downsample."}[kind]
        return new + (rest[len("conv."):] if kind == "downsamplers" else rest)
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", name)
    if m:
        i, kind, j, rest = m.groups()
        new = f"up{levels - 1 - int(i)}." + {"resnets": f"res{j}.", "attentions": f"attn{j}.", "upsamplers": "upsample."}[kind]
        return new + (rest[len("conv."):] if kind == "upsamplers" else rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", name)
    if m:
        kind, j, rest = m.groups()
        return f"mid.{'res' if kind == 'resnets' else 'attn'}{j}.{rest}"
    return name


_VAE_RENAMES = [
    (r"\.group_norm\.", ".norm."),
    (r"\.to_([qkv])\.", r".\1_proj."),
    (r"\.to_out\.0\.", ".o_proj."),
]


def vae_to_canonical(state: dict, levels: int) -> dict[str, np.ndarray]:
    """diffusers `AutoencoderKL` -> the diffusion family's autoencoder names:
    `encoder.*` and `quant_conv` under `vae_encoder.`, `decoder.*` and
    `post_quant_conv` under `vae_decoder.`; blocks renamed as the U-Net's."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        head, _, rest = name.partition(".")
        if head in ("quant_conv", "post_quant_conv"):
            side, rest = ("vae_encoder" if head == "quant_conv" else "vae_decoder"), name
        elif head in ("encoder", "decoder"):
            side, rest = f"vae_{head}", _unet_block_name(rest, levels)
        else:
            raise KeyError(f"not an AutoencoderKL weight: {name}")
        for pat, rep in _VAE_RENAMES:
            rest = re.sub(pat, rep, rest)
        out[f"{side}.{rest}"] = _np(tensor)
    return out


def unet_to_canonical(state: dict, levels: int, prefix: str = "") -> dict[str, np.ndarray]:
    """diffusers `UNet2DConditionModel` -> the diffusion U-Net's names (`prefix` is
    prepended to each). Self-attention q/k/v are fused into `qkv_proj`, cross-attention
    k/v into `kv_proj`; up blocks are numbered by level (diffusers counts them from the
    bottom); everything else is a rename."""
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in state.items():
        value = _np(tensor)
        new = _unet_block_name(name, levels)
        for pat, rep in _UNET_RENAMES:
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


def clip_text_to_canonical(sd: dict, prefix: str = "text_encoder.") -> dict[str, np.ndarray]:
    """transformers `CLIPTextModel` -> a text tower under `prefix` (no pooling). Its
    names start with `text_model.` or not, by the transformers version."""
    t = "text_model"
    if not any(k.startswith(t + ".") for k in sd):
        sd = {f"{t}.{k}": v for k, v in sd.items()}
    out = {
        f"{prefix}tok_embeddings.weight": _np(sd[f"{t}.embeddings.token_embedding.weight"]),
        f"{prefix}pos_embeddings.weight": _np(sd[f"{t}.embeddings.position_embedding.weight"]),
    }
    _clip_blocks(out, sd, t, prefix.rstrip("."))
    _ln(out, f"{prefix}norm_f", sd, f"{t}.final_layer_norm")
    return out


def _batchnorm_folded(out: dict, dst: str, sd: dict, src: str, eps: float) -> None:
    """A BatchNorm in eval mode -> the frozen form x / sqrt(1 + eps) * weight + bias
    (compiler/families/timeseries.py): the running statistics fold into weight and
    bias, so the output is the same for any trained statistics."""
    w, b = _np(sd[f"{src}.weight"]).astype(np.float64), _np(sd[f"{src}.bias"]).astype(np.float64)
    mean = _np(sd.get(f"{src}.running_mean", np.zeros_like(w))).astype(np.float64)
    var = _np(sd.get(f"{src}.running_var", np.ones_like(w))).astype(np.float64)
    gain = w / np.sqrt(var + eps)
    out[f"{dst}.weight"] = (gain * np.sqrt(1.0 + eps)).astype(np.float32)
    out[f"{dst}.bias"] = (b - mean * gain).astype(np.float32)


def patchtst_to_canonical(sd: dict, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """transformers `PatchTSTForPrediction` (shared embedding and projection, no
    channel attention, no class token) -> the time-series family's PatchTST names.
    BatchNorm sublayers fold their running statistics (`_batchnorm_folded`);
    LayerNorm ones (norm_type="layernorm") are copied."""
    e = "model.encoder"
    out = {"pos_embed": _np(sd[f"{e}.positional_encoder.position_enc"])}
    _lin(out, "patch_embed", sd, f"{e}.embedder.input_embedding")
    for i in range(_layers(sd, rf"{re.escape(e)}\.layers\.(\d+)\.")):
        a, b = f"{e}.layers.{i}", f"blocks.{i}"
        for part in ("weight", "bias"):
            q, k, v = (sd[f"{a}.self_attn.{n}_proj.{part}"] for n in "qkv")
            out[f"{b}.attn.qkv_proj.{part}"] = _qkv(q, k, v)
        _lin(out, f"{b}.attn.o_proj", sd, f"{a}.self_attn.out_proj")
        _lin(out, f"{b}.mlp.fc_in", sd, f"{a}.ff.0")
        _lin(out, f"{b}.mlp.fc_out", sd, f"{a}.ff.3")
        for dst, src in (("attn_norm", "norm_sublayer1"), ("mlp_norm", "norm_sublayer3")):
            if f"{a}.{src}.batchnorm.weight" in sd:
                _batchnorm_folded(out, f"{b}.{dst}", sd, f"{a}.{src}.batchnorm", eps)
            else:
                _ln(out, f"{b}.{dst}", sd, f"{a}.{src}")
    _lin(out, "head", sd, "head.projection")
    return out


_BN = ("weight", "bias", "running_mean", "running_var")  # batch norm's canonical state (no num_batches_tracked)


def _conv_bn(out: dict, sd: dict, src: str, conv: str, bn: str) -> None:
    """transformers' ResNetConvLayer / ResNetShortCut (`convolution`, `normalization`)."""
    out[f"{conv}.weight"] = _np(sd[f"{src}.convolution.weight"])
    for n in _BN:
        out[f"{bn}.{n}"] = _np(sd[f"{src}.normalization.{n}"])


def resnet_to_canonical(sd: dict, prefix: str = "resnet.", dst: str = "") -> dict[str, np.ndarray]:
    """transformers `ResNetForImageClassification` (or a `ResNetModel` backbone under
    `prefix`, canonical names under `dst`) -> the resnet family: stage i block 0 is
    `layer{i+1}.first`, block j > 0 `layer{i+1}.rest.{j-1}`; the head `classifier.1`
    is `fc` (absent from a backbone)."""
    out: dict[str, np.ndarray] = {}
    _conv_bn(out, sd, f"{prefix}embedder.embedder", f"{dst}conv1", f"{dst}bn1")
    for i in range(_layers(sd, re.escape(prefix) + r"encoder\.stages\.(\d+)\.")):
        stage = f"{prefix}encoder.stages.{i}"
        for j in range(_layers(sd, re.escape(stage) + r"\.layers\.(\d+)\.")):
            src, to = f"{stage}.layers.{j}", f"{dst}layer{i + 1}." + ("first" if j == 0 else f"rest.{j - 1}")
            if f"{src}.shortcut.convolution.weight" in sd:
                _conv_bn(out, sd, f"{src}.shortcut", f"{to}.downsample.conv", f"{to}.downsample.bn")
            for k in range(_layers(sd, re.escape(src) + r"\.layer\.(\d+)\.")):
                _conv_bn(out, sd, f"{src}.layer.{k}", f"{to}.conv{k + 1}", f"{to}.bn{k + 1}")
    if "classifier.1.weight" in sd:
        _lin(out, "fc", sd, "classifier.1")
    return out


# transformers 4.x's DETR names -> 5.x's: the backbone's wrapper, `out_proj`, the feed-forward under `mlp.`
_DETR_V4_RENAMES = [
    (r"\.backbone\.conv_encoder\.model\.", ".backbone.model."),
    (r"\.out_proj\.", ".o_proj."),
    (r"(layers\.\d+)\.(fc[12])\.", r"\1.mlp.\2."),
]


def _renamed(name: str, renames: list) -> str:
    for pat, rep in renames:
        name = re.sub(pat, rep, name)
    return name


def detr_to_canonical(sd: dict) -> dict[str, np.ndarray]:
    """transformers `DetrForObjectDetection` (ResNet backbone, `use_timm_backbone=False`)
    -> the detr family. The transformer's names are ours without `model.`; the
    backbone is `resnet_to_canonical`'s under `backbone.`; the box MLP's layers 0, 1
    are `bbox_predictor.hidden.{0,1}.fc`, its layer 2 `bbox_predictor.out`. transformers
    4.x's spellings (which 5.x's `save_pretrained` still writes) are read as 5.x's."""
    sd = {_renamed(k, _DETR_V4_RENAMES): v for k, v in sd.items()}
    out = resnet_to_canonical(sd, prefix="model.backbone.model.", dst="backbone.")
    out["query_pos"] = _np(sd["model.query_position_embeddings.weight"])
    for k, v in sd.items():
        if k.startswith(("model.encoder.", "model.decoder.", "model.input_projection.")):
            out[k[len("model."):]] = _np(v)
        elif k.startswith("class_labels_classifier."):
            out[k] = _np(v)
    layers = _layers(sd, r"bbox_predictor\.layers\.(\d+)\.")
    for i in range(layers - 1):
        _lin(out, f"bbox_predictor.hidden.{i}.fc", sd, f"bbox_predictor.layers.{i}")
    _lin(out, "bbox_predictor.out", sd, f"bbox_predictor.layers.{layers - 1}")
    return out


# ------------------------------------------------------------ located JSON keys


def key_locations(text: str) -> dict[tuple[str, ...], tuple[int, int]]:
    """Every object key's path -> (line, col), 1-based, of the key in JSON `text`.
    A small scanner: `json` itself keeps no positions."""
    locs: dict[tuple[str, ...], tuple[int, int]] = {}
    stack: list[tuple[str, ...] | None] = []  # open containers: the object's path, or None for a list
    path: tuple[str, ...] = ()
    pending: tuple[str, ...] | None = None  # the path of the key whose value comes next
    expect_key = False
    i, line, col0 = 0, 1, 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            line, col0 = line + 1, i + 1
        elif ch == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if expect_key:
                key = json.loads(text[i : j + 1])
                pending = path + (key,)
                locs.setdefault(pending, (line, i - col0 + 1))
                expect_key = False
            i = j
        elif ch == "{":
            in_list = bool(stack) and stack[-1] is None
            stack.append(path)
            path = pending if pending is not None and stack[:-1] and not in_list else path
            expect_key = True
        elif ch == "[":
            stack.append(None)
        elif ch in "}]":
            top = stack.pop()
            if ch == "}":
                path = top if top is not None else path
        elif ch == "," and stack and stack[-1] is not None:
            expect_key = True
        i += 1
    return locs


# --------------------------------------------------------------------- the config


@dataclass
class HFConfig:
    """A parsed config.json and where each key sits in it."""

    path: str
    data: dict
    locs: dict[tuple[str, ...], tuple[int, int]]

    def loc(self, *key: str) -> Loc:
        for n in range(len(key), 0, -1):
            if key[:n] in self.locs:
                return Loc(self.path, *self.locs[key[:n]])
        return Loc(self.path, 1, 1)

    def get(self, *key: str, default=None):
        node = self.data
        for k in key:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node


class _Checker:
    """Collects the fields the IR cannot honour, each at its line in the JSON."""

    def __init__(self, cfg: HFConfig):
        self.cfg, self.errors = cfg, []

    def fail(self, key: tuple[str, ...], message: str) -> None:
        self.errors.append(Diagnostic("error", self.cfg.loc(*key), message))

    def need(self, *key: str, allowed: tuple, why: str, default=None):
        """The field's value; an error when it is present and not among `allowed`."""
        value = self.cfg.get(*key, default=default)
        if value not in allowed:
            shown = ", ".join(json.dumps(a) for a in allowed)
            self.fail(key, f"{'.'.join(key)} {json.dumps(value)} is not supported ({why}); supported: {shown}")
        return value

    def int(self, *key: str, default=None) -> int:
        value = self.cfg.get(*key, default=default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(key, f"{'.'.join(key)} {json.dumps(value)} must be a positive integer")
            return 1
        return value

    def float(self, *key: str, default=None) -> float:
        value = self.cfg.get(*key, default=default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self.fail(key, f"{'.'.join(key)} {json.dumps(value)} must be a number")
            return 1.0
        return float(value)


# Activation names in transformers' ACT2FN -> the spec's (ungated) activations.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu",
               "relu": "relu", "silu": "silu"}


def _act(c: _Checker, *key: str, default: str) -> str:
    name = c.need(*key, allowed=tuple(ACTIVATIONS), why="activations the IR has", default=default)
    return ACTIVATIONS.get(name, "gelu")


def _no_cross_attention(c: _Checker) -> None:
    c.need("add_cross_attention", allowed=(False,), why="cross-attention blocks are not in this family", default=False)


def _gpt2(c: _Checker) -> tuple[dict, dict]:
    d = c.int("n_embd")
    _no_cross_attention(c)
    c.need("scale_attn_weights", allowed=(True,), why="attention scores are always scaled by 1/sqrt(head_dim)", default=True)
    c.need("scale_attn_by_inverse_layer_idx", allowed=(False,), why="no per-layer attention scaling", default=False)
    arch = {
        "family": "transformer",
        "vocab_size": c.int("vocab_size"),
        "hidden_size": d,
        "layers": c.int("n_layer"),
        "heads": c.int("n_head"),
        "ffn_size": c.int("n_inner") if c.cfg.get("n_inner") is not None else 4 * d,
        "activation": _act(c, "activation_function", default="gelu_new"),
        "norm": "layernorm",
        "norm_eps": c.float("layer_norm_epsilon", default=1e-5),
        "norm_position": "pre",
        "position": "learned",
        "bias": True,
        "tie_embeddings": True,
    }
    c.need("tie_word_embeddings", allowed=(True,), why="GPT2LMHeadModel's head is the token embedding", default=True)
    return _lm(arch, c.int("n_positions")), {"prefix": "transformer.", "convert": gpt2_to_canonical}


def _llama(c: _Checker) -> tuple[dict, dict]:
    d, heads = c.int("hidden_size"), c.int("num_attention_heads")
    kind = c.cfg.get("model_type")
    window = c.int("sliding_window") if kind == "mistral" and c.cfg.get("sliding_window") is not None else 0
    c.need("hidden_act", allowed=("silu",), why="the gated feed-forward is SwiGLU", default="silu")
    if kind == "qwen2":  # biases on q, k and v only, fixed by the architecture
        c.need("use_sliding_window", allowed=(False,), default=False,
               why="Qwen2 slides the window over some layers only (max_window_layers); the IR's window is every layer's")
        types = c.cfg.get("layer_types")
        odd = next((i for i, t in enumerate(types) if t != "full_attention"), None) if isinstance(types, list) else 0
        if types is not None and odd is not None:
            shown = json.dumps(types[odd]) if isinstance(types, list) else json.dumps(types)
            c.fail(("layer_types",), f"layer_types{f'[{odd}]' if isinstance(types, list) else ''} {shown} is not "
                   "supported (every layer attends to the whole context); supported: \"full_attention\" for every layer")
        bias, qkv_bias = False, True
    else:
        # The spec's `bias` covers every linear layer of a block (RMSNorm has none), so
        # the attention and feed-forward settings must agree.
        bias = c.need("attention_bias", allowed=(False, True), why="a boolean", default=False)
        if c.cfg.get("mlp_bias", default=False) != bias:
            c.need("mlp_bias", allowed=(bias,), why=f"biases go on every linear layer or none, and attention_bias is {json.dumps(bias)}", default=False)
        qkv_bias = bias
    arch = {
        "family": "transformer",
        "vocab_size": c.int("vocab_size"),
        "hidden_size": d,
        "layers": c.int("num_hidden_layers"),
        "heads": heads,
        "kv_heads": c.int("num_key_value_heads") if c.cfg.get("num_key_value_heads") is not None else heads,
        "head_dim": c.int("head_dim") if c.cfg.get("head_dim") is not None else d // heads,
        "ffn_size": c.int("intermediate_size"),
        "activation": "swiglu",
        "norm": "rmsnorm",
        "norm_eps": c.float("rms_norm_eps", default=1e-6),
        "norm_position": "pre",
        "position": "rope",
        **_rope_settings(c),
        "bias": bool(bias),
        "tie_embeddings": bool(c.cfg.get("tie_word_embeddings", default=False)),
    }
    if qkv_bias != bias:
        arch["qkv_bias"] = qkv_bias
    if window:
        arch["sliding_window"] = window
    return _lm(arch, c.int("max_position_embeddings")), {"prefix": "model.", "convert": llama_to_canonical}


ROPE_TYPES = ("default", "llama3")
# transformers' llama3 rope setting -> the spec's key
LLAMA3_KEYS = (("factor", "rope_scaling_factor", float), ("low_freq_factor", "rope_low_freq_factor", float),
               ("high_freq_factor", "rope_high_freq_factor", float),
               ("original_max_position_embeddings", "rope_original_context", int))


def _rope_settings(c: _Checker) -> dict:
    """rope_theta and the rope scaling: transformers 5's `rope_parameters`, or 4's
    `rope_theta` with `rope_scaling` (its type under `rope_type`, or the older `type`)."""
    if c.cfg.get("rope_parameters") is not None:
        where = ("rope_parameters",)
        theta = c.float("rope_parameters", "rope_theta", default=10000.0)
    else:
        where = ("rope_scaling",)
        theta = c.float("rope_theta", default=10000.0)
        if c.cfg.get("rope_scaling") is None:
            return {"rope_theta": theta}
    type_key = "type" if c.cfg.get(*where, "rope_type") is None and c.cfg.get(*where, "type") is not None else "rope_type"
    kind = c.need(*where, type_key, allowed=ROPE_TYPES, why="unscaled or Llama 3's scaling", default="default")
    out = {"rope_theta": theta}
    if kind == "llama3":
        out["rope_scaling"] = "llama3"
        for theirs, ours, kind_of in LLAMA3_KEYS:
            out[ours] = c.int(*where, theirs) if kind_of is int else c.float(*where, theirs)
    return out


def _lm(arch: dict, context: int) -> dict:
    return {
        "modality": {"inputs": ["text"], "outputs": ["text"]},
        "constraints": {"context_window": str(context)},
        "training": {"objective": ["autoregressive"]},
        "architecture": arch,
    }


def _classes(c: _Checker) -> int:
    labels = c.cfg.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    return c.int("num_labels", default=2)


def _bert(c: _Checker) -> tuple[dict, dict]:
    _no_cross_attention(c)
    c.need("is_decoder", allowed=(False,), why="BERT is imported as an encoder", default=False)
    c.need("position_embedding_type", allowed=("absolute",), why="learned absolute positions", default="absolute")
    archs = c.cfg.get("architectures") or []
    mlm = isinstance(archs, list) and any(str(a).endswith("ForMaskedLM") for a in archs)
    if mlm:
        c.need("tie_word_embeddings", allowed=(True,), default=True,
               why="the masked-LM head scores against the word embeddings")
    classes = 2 if mlm else _classes(c)
    # One label: a cross-encoder ranker's relevance score (sentence-transformers'
    # CrossEncoder and the MS MARCO re-rankers are BertForSequenceClassification, num_labels 1).
    ranker = classes == 1
    task = {"type": "ranking"} if ranker else {"type": "classification", "num_classes": classes}
    spec = {
        "modality": {"inputs": ["text"], "outputs": ["label"]},
        "task": task,
        "constraints": {"context_window": str(c.int("max_position_embeddings"))},
        "training": {"objective": ["ranking" if ranker else "classification"]},
        "architecture": {
            "family": "transformer",
            "vocab_size": c.int("vocab_size"),
            "type_vocab_size": c.int("type_vocab_size"),
            "hidden_size": c.int("hidden_size"),
            "layers": c.int("num_hidden_layers"),
            "heads": c.int("num_attention_heads"),
            "ffn_size": c.int("intermediate_size"),
            "activation": _act(c, "hidden_act", default="gelu"),
            "norm": "layernorm",
            "norm_eps": c.float("layer_norm_eps", default=1e-12),
            "norm_position": "post",
            "position": "learned",
            "pooling": "cls_pooler",
            "bias": True,
        },
    }
    if mlm:  # architectures ["BertForMaskedLM"]: the trunk and the masked-LM head, no pooler
        spec.pop("task")
        spec["modality"]["outputs"] = ["text"]
        spec["training"]["objective"] = ["masked"]
        del spec["architecture"]["pooling"]
        return spec, {"prefix": "bert.", "convert": bert_mlm_to_canonical}
    return spec, {"prefix": "bert.", "convert": cross_encoder_to_canonical if ranker else bert_to_canonical}


def _vit(c: _Checker) -> tuple[dict, dict]:
    c.need("qkv_bias", allowed=(True,), why="the attention projections have biases", default=True)
    spec = {
        "modality": {"inputs": ["image"], "outputs": ["label"]},
        "task": {"type": "classification", "num_classes": _classes(c)},
        "training": {"objective": ["classification"]},
        "architecture": {
            "family": "transformer",
            "image_size": c.int("image_size"),
            "patch_size": c.int("patch_size"),
            "channels": c.int("num_channels", default=3),
            "hidden_size": c.int("hidden_size"),
            "layers": c.int("num_hidden_layers"),
            "heads": c.int("num_attention_heads"),
            "ffn_size": c.int("intermediate_size"),
            "activation": _act(c, "hidden_act", default="gelu"),
            "norm": "layernorm",
            "norm_eps": c.float("layer_norm_eps", default=1e-12),
            "norm_position": "pre",
            "position": "learned",
            "pooling": "cls",
            "bias": True,
        },
    }
    return spec, {"prefix": "vit.", "convert": vit_to_canonical}


def _clip_tower(c: _Checker, key: str, image: bool) -> dict:
    t = {}
    if image:
        t.update(image_size=c.int(key, "image_size"), patch_size=c.int(key, "patch_size"),
                 channels=c.int(key, "num_channels", default=3))
    else:
        t["vocab_size"] = c.int(key, "vocab_size")
    t.update(
        hidden_size=c.int(key, "hidden_size"),
        layers=c.int(key, "num_hidden_layers"),
        heads=c.int(key, "num_attention_heads"),
        ffn_size=c.int(key, "intermediate_size"),
        activation=_act(c, key, "hidden_act", default="quick_gelu"),
        norm="layernorm",
        norm_eps=c.float(key, "layer_norm_eps", default=1e-5),
        position="learned",
        pooling="cls" if image else "eot",
    )
    return t


def _clip(c: _Checker) -> tuple[dict, dict]:
    text = _clip_tower(c, "text_config", image=False)
    # Our text tower pools at the highest token id (CLIP's end-of-text), as CLIPTextModel
    # does when eos_token_id is 2 (the original checkpoints) or the vocabulary's last id.
    eos = c.cfg.get("text_config", "eos_token_id", default=2)
    if eos not in (2, text["vocab_size"] - 1):
        c.need("text_config", "eos_token_id", allowed=(2, text["vocab_size"] - 1),
               why="the text tower pools at the highest token id", default=2)
    spec = {
        "modality": {"inputs": ["text", "image"], "outputs": ["text", "image"]},
        "constraints": {"context_window": str(c.int("text_config", "max_position_embeddings", default=77))},
        "training": {"objective": ["contrastive"]},
        "architecture": {
            "family": "transformer",
            "projection_dim": c.int("projection_dim", default=512),
            "text_encoder": text,
            "image_encoder": _clip_tower(c, "vision_config", image=True),
        },
    }
    return spec, {"prefix": "", "convert": clip_to_canonical}


# transformers' ResNetConfig defaults (ResNet-50), for fields a config.json leaves out
RESNET_DEFAULTS = {"embedding_size": 64, "hidden_sizes": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3],
                   "layer_type": "bottleneck", "hidden_act": "relu", "num_channels": 3}


def _resnet_trunk(c: _Checker, *at: str) -> dict:
    """The ResNet family's architecture keys of a ResNetConfig (at key path `at`:
    DETR's `backbone_config`). Its stages must be one of He et al.'s depths."""
    from metagen.compiler.families.cnn import EXPANSION, RESNET_DEPTHS

    def get(key):
        return c.cfg.get(*at, key, default=RESNET_DEFAULTS[key])

    kind = c.need(*at, "layer_type", allowed=("basic", "bottleneck"), why="ResNet's two block kinds",
                  default=RESNET_DEFAULTS["layer_type"])
    depths = get("depths")
    layers = next((n for n, (k, d) in RESNET_DEPTHS.items() if k == kind and d == depths), None)
    if layers is None and kind in EXPANSION:
        table = ", ".join(f"{json.dumps(d)} (ResNet-{n})" for n, (k, d) in RESNET_DEPTHS.items() if k == kind)
        c.fail((*at, "depths"), f"{'.'.join((*at, 'depths'))} {json.dumps(depths)} is not supported with layer_type "
               f"{json.dumps(kind)} (the IR's ResNet has He et al.'s blocks per stage for its depth); supported: {table}")
    width = c.int(*at, "embedding_size", default=RESNET_DEFAULTS["embedding_size"])
    widths = [width * 2**i * EXPANSION.get(kind, 1) for i in range(4)]
    c.need(*at, "hidden_sizes", allowed=(widths,), default=RESNET_DEFAULTS["hidden_sizes"],
           why="stage i is embedding_size * 2^i wide, x4 at a bottleneck's output")
    c.need(*at, "downsample_in_first_stage", allowed=(False,), why="the first stage keeps the stem's resolution", default=False)
    c.need(*at, "downsample_in_bottleneck", allowed=(False,), default=False,
           why="a bottleneck strides on its 3x3 convolution (v1.5)")
    return {"channels": c.int(*at, "num_channels", default=3), "hidden_size": width, "layers": layers or 50,
            "activation": _act(c, *at, "hidden_act", default="relu"), "norm_eps": 1e-5}


def _resnet(c: _Checker) -> tuple[dict, dict]:
    trunk = _resnet_trunk(c)
    spec = {
        "modality": {"inputs": ["image"], "outputs": ["label"]},
        "task": {"type": "classification", "num_classes": _classes(c)},
        "training": {"objective": ["classification"]},
        # ResNetConfig has no image size (the pooling is global); `image_size` is read
        # when the config carries one (an export writes it), else ImageNet's 224.
        "architecture": {"family": "cnn", "image_size": c.int("image_size", default=224), **trunk},
    }
    return spec, {"prefix": "resnet.", "convert": resnet_to_canonical}


def _detr(c: _Checker) -> tuple[dict, dict]:
    c.need("use_timm_backbone", allowed=(False,), default=True,
           why="the backbone is transformers' ResNet (backbone_config), as the IR builds it")
    c.need("backbone_config", "model_type", allowed=("resnet",), why="the backbone is a ResNet", default="resnet")
    trunk = _resnet_trunk(c, "backbone_config")
    if (trunk["layers"], trunk["hidden_size"]) != (50, 64):
        c.fail(("backbone_config",), f"backbone_config is ResNet-{trunk['layers']} of embedding_size "
               f"{trunk['hidden_size']}, not supported (the IR's DETR backbone is ResNet-50); supported: "
               "depths [3, 4, 6, 3], embedding_size 64, layer_type \"bottleneck\"")
    c.need("backbone_config", "out_features", allowed=(["stage4"],), why="the transformer reads the last stage",
           default=["stage4"])
    c.need("dilation", allowed=(False,), why="the last stage strides", default=False)
    c.need("position_embedding_type", allowed=("sine",), why="sine positions of the feature grid", default="sine")
    channels = c.int("num_channels", default=3)
    c.need("backbone_config", "num_channels", allowed=(channels,), why="the backbone reads the image", default=channels)
    pairs = (("encoder_layers", "decoder_layers"), ("encoder_attention_heads", "decoder_attention_heads"),
             ("encoder_ffn_dim", "decoder_ffn_dim"))
    sizes = []
    for enc, dec in pairs:
        sizes.append(c.int(enc))
        c.need(dec, allowed=(sizes[-1],), why=f"the decoder's is the encoder's ({enc})", default=sizes[-1])
    spec = {
        "modality": {"inputs": ["image"], "outputs": ["bounding_boxes"]},
        "task": {"type": "object_detection", "num_classes": _classes(c), "num_anchors": c.int("num_queries")},
        "training": {"objective": ["object_detection"]},
        "architecture": {
            "family": "transformer",
            "image_size": c.int("image_size", default=800),  # not a DetrConfig field: read when an export wrote it
            "channels": channels,
            "hidden_size": c.int("d_model"),
            "layers": sizes[0],
            "heads": sizes[1],
            "ffn_size": sizes[2],
            "activation": _act(c, "activation_function", default="relu"),
            "norm_eps": 1e-5,
        },
    }
    return spec, {"prefix": "model.", "convert": detr_to_canonical}


def _patchtst(c: _Checker) -> tuple[dict, dict]:
    fixed = (("loss", "mse", "a point forecast (prediction_outputs)"), ("scaling", "std", "instance standardization"),
             ("share_embedding", True, "channels share the patch embedding"),
             ("share_projection", True, "channels share the head"),
             ("channel_attention", False, "channels are independent"), ("use_cls_token", False, "no class token"),
             ("pre_norm", True, "pre-norm blocks"), ("bias", True, "the linear layers have biases"),
             ("output_range", None, "the forecast is not clamped"),
             ("pooling_type", "mean", "the head reads the mean over patches"))
    for key, value, why in fixed:
        c.need(key, allowed=(value,), why=why, default=value)
    c.need("positional_encoding_type", allowed=("sincos", "random"), why="a position table (its values are weights)",
           default="sincos")
    norm = c.need("norm_type", allowed=("batchnorm", "layernorm"), why="the norms the IR has", default="batchnorm")
    eps = c.float("norm_eps", default=1e-5)
    d, heads = c.int("d_model", default=128), c.int("num_attention_heads", default=4)
    if d % heads:
        c.fail(("num_attention_heads",), f"num_attention_heads {heads} does not divide d_model {d}")
    spec = {
        "modality": {"inputs": ["time_series"], "outputs": ["time_series"]},
        "task": {"type": "time_series_forecast", "lookback": c.int("context_length", default=32),
                 "horizon": c.int("prediction_length", default=24), "num_outputs": c.int("num_input_channels", default=1)},
        "training": {"objective": ["forecasting"]},
        "architecture": {
            "family": "transformer",
            "hidden_size": d,
            "layers": c.int("num_hidden_layers", default=3),
            "heads": heads,
            "kv_heads": heads,
            "head_dim": d // heads,
            "ffn_size": c.int("ffn_dim", default=512),
            "activation": _act(c, "activation_function", default="gelu"),
            "norm": norm,
            "norm_eps": eps,
            "norm_position": "pre",
            "pooling": "mean",
            "patch_size": c.int("patch_length", default=1),
            "patch_stride": c.int("patch_stride", default=1),
        },
    }
    # Batch norm folds its running statistics into weight and bias: the export writes
    # them back as mean 0, variance 1 (`stats_folded`).
    return spec, {"prefix": "model.", "convert": lambda sd: patchtst_to_canonical(sd, eps), "stats_folded": True}


IMPORTERS: dict[str, Callable[[_Checker], tuple[dict, dict]]] = {
    "gpt2": _gpt2,
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _llama,
    "bert": _bert,
    "vit": _vit,
    "clip": _clip,
    "resnet": _resnet,
    "detr": _detr,
    "patchtst": _patchtst,
}


UNET_FIXED = (  # UNet2DConditionModel fields our U-Net has one value of: (field, value, why)
    ("center_input_sample", False, "the sample is used as given"),
    ("flip_sin_to_cos", True, "the timestep embedding is cos, sin"),
    ("freq_shift", 0, "the timestep embedding has no frequency shift"),
    ("mid_block_type", "UNetMidBlock2DCrossAttn", "the mid block is resnet, transformer, resnet"),
    ("only_cross_attention", False, "each transformer block has self- and cross-attention"),
    ("downsample_padding", 1, "downsampling convs pad by 1"),
    ("mid_block_scale_factor", 1, "the mid block's output is not rescaled"),
    ("act_fn", "silu", "the ResNet blocks use SiLU"),
    ("norm_eps", 1e-5, "the ResNet GroupNorms use eps 1e-5"),
    ("dual_cross_attention", False, "one conditioning sequence"),
    ("use_linear_projection", False, "spatial transformers project with 1x1 convs"),
    ("class_embed_type", None, "no class conditioning"),
    ("addition_embed_type", None, "no added conditioning"),
    ("num_class_embeds", None, "no class conditioning"),
    ("resnet_time_scale_shift", "default", "the timestep embedding is added, not scale-shift"),
    ("resnet_skip_time_act", False, "the timestep embedding goes through SiLU"),
    ("resnet_out_scale_factor", 1.0, "ResNet outputs are not rescaled"),
    ("time_embedding_type", "positional", "sinusoidal timestep embedding"),
    ("time_embedding_dim", None, "the timestep embedding is 4 x the first level's channels"),
    ("time_embedding_act_fn", None, "no extra activation on the timestep embedding"),
    ("timestep_post_act", None, "no extra activation on the timestep embedding"),
    ("time_cond_proj_dim", None, "no timestep conditioning projection"),
    ("conv_in_kernel", 3, "conv_in is 3x3"),
    ("conv_out_kernel", 3, "conv_out is 3x3"),
    ("projection_class_embeddings_input_dim", None, "no class conditioning"),
    ("attention_type", "default", "plain cross-attention"),
    ("class_embeddings_concat", False, "no class conditioning"),
    ("mid_block_only_cross_attention", None, "the mid block has self- and cross-attention"),
    ("cross_attention_norm", None, "the conditioning sequence is not normalised again"),
    ("encoder_hid_dim", None, "the text states go to cross-attention as they are"),
    ("encoder_hid_dim_type", None, "the text states go to cross-attention as they are"),
    ("reverse_transformer_layers_per_block", None, "every level has the same transformer depth"),
    ("addition_time_embed_dim", None, "no added conditioning"),
)
DOWN_TYPES = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}  # block type -> has attention


def _unet(u: _Checker, t: _Checker) -> dict:
    """The spec of a diffusers text-to-image pipeline: its UNet2DConditionModel (`u`)
    and its CLIPTextModel (`t`)."""
    for key, value, why in UNET_FIXED:
        if key == "norm_eps":
            if abs(u.float(key, default=1e-5) - 1e-5) > 1e-12:
                u.fail((key,), f"norm_eps {json.dumps(u.cfg.get(key))} is not supported ({why}); supported: 1e-05")
            continue
        u.need(key, allowed=(value,), why=why, default=value)
    channels = u.cfg.get("block_out_channels", default=[320, 640, 1280, 1280])
    downs = u.cfg.get("down_block_types", default=[])
    ups = u.cfg.get("up_block_types", default=[])
    attn: list[int] = []
    if not (isinstance(channels, list) and channels and all(isinstance(c, int) and c > 0 for c in channels)):
        u.fail(("block_out_channels",), f"block_out_channels {json.dumps(channels)} must be a list of positive integers")
        channels = [1]
    elif any(c % channels[0] for c in channels):
        u.fail(("block_out_channels",), f"block_out_channels {json.dumps(channels)} is not supported "
               "(every level's channels are a multiple of the first level's)")
    if not isinstance(downs, list) or len(downs) != len(channels) or any(d not in DOWN_TYPES for d in downs):
        u.fail(("down_block_types",), f"down_block_types {json.dumps(downs)} is not supported; supported: one of "
               f"{', '.join(sorted(DOWN_TYPES))} per entry of block_out_channels")
    else:
        attn = [lvl for lvl, d in enumerate(downs) if DOWN_TYPES[d]]
        mirror = [d.replace("Down", "Up") for d in reversed(downs)]
        if ups != mirror:
            u.fail(("up_block_types",), f"up_block_types {json.dumps(ups)} is not supported (the up path mirrors "
                   f"the down path); supported: {json.dumps(mirror)}")
    heads_key = "num_attention_heads" if u.cfg.get("num_attention_heads") is not None else "attention_head_dim"

    def one(key: str, default: int) -> int:
        """A setting diffusers may give per level; ours has one value for all."""
        if isinstance(u.cfg.get(key), list):
            u.fail((key,), f"{key} {json.dumps(u.cfg.get(key))} is not supported (one value for every level)")
            return default
        return u.int(key, default=default)

    latent = u.int("in_channels", default=4)
    u.need("out_channels", allowed=(latent,), why="the noise prediction has the sample's channels", default=latent)
    text = {
        "vocab_size": t.int("vocab_size"),
        "hidden_size": t.int("hidden_size"),
        "layers": t.int("num_hidden_layers"),
        "heads": t.int("num_attention_heads"),
        "ffn_size": t.int("intermediate_size"),
        "activation": _act(t, "hidden_act", default="quick_gelu"),
        "norm": "layernorm",
        "norm_eps": t.float("layer_norm_eps", default=1e-5),
        "position": "learned",
        "pooling": "none",
    }
    t.need("model_type", allowed=("clip_text_model",), why="the U-Net is conditioned on a CLIPTextModel", default=None)
    return {
        "modality": {"inputs": ["text", "image"], "outputs": ["image"]},
        "constraints": {"context_window": str(t.int("max_position_embeddings", default=77))},
        "training": {"objective": ["diffusion"]},
        "architecture": {
            "family": "diffusion",
            "latent_channels": latent,
            "sample_size": one("sample_size", 64),
            "base_channels": channels[0],
            "channel_mults": [c // channels[0] for c in channels],
            "res_blocks": one("layers_per_block", 2),
            "attention_levels": attn,
            "heads": one(heads_key, 8),
            "transformer_depth": one("transformer_layers_per_block", 1),
            "norm_groups": u.int("norm_num_groups", default=32),
            "cross_attention_dim": one("cross_attention_dim", 1280),
            "text_encoder": text,
        },
    }


VAE_FIXED = (  # AutoencoderKL fields our autoencoder has one value of: (field, value, why)
    ("in_channels", 3, "images have 3 channels"),
    ("out_channels", 3, "images have 3 channels"),
    ("act_fn", "silu", "the ResNet blocks use SiLU"),
    ("use_quant_conv", True, "the encoder ends with quant_conv"),
    ("use_post_quant_conv", True, "the decoder starts with post_quant_conv"),
    ("mid_block_add_attention", True, "the mid blocks have self-attention"),
    ("shift_factor", None, "latents are only scaled"),
    ("latents_mean", None, "latents are only scaled"),
    ("latents_std", None, "latents are only scaled"),
)


def _vae(v: _Checker, latent: int) -> dict:
    """The `autoencoder` section for a diffusers AutoencoderKL config (`v`)."""
    for key, value, why in VAE_FIXED:
        v.need(key, allowed=(value,), why=why, default=value)
    v.need("_class_name", allowed=("AutoencoderKL",), why="the image autoencoder is SD's AutoencoderKL", default=None)
    v.need("latent_channels", allowed=(latent,), why="the U-Net denoises the autoencoder's latents", default=4)
    channels = v.cfg.get("block_out_channels", default=[64])
    if not (isinstance(channels, list) and channels and all(isinstance(c, int) and c > 0 for c in channels)):
        v.fail(("block_out_channels",), f"block_out_channels {json.dumps(channels)} must be a list of positive integers")
        channels = [1]
    for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        v.need(key, allowed=([kind] * len(channels),), why=f"every level is a {kind}", default=[kind] * len(channels))
    return {
        "block_channels": channels,
        "layers_per_block": v.int("layers_per_block", default=1),
        "norm_groups": v.int("norm_num_groups", default=32),
        "scaling_factor": v.float("scaling_factor", default=0.18215),
    }


# ------------------------------------------------------------------ the importer


def _fail(path: str, message: str, line: int = 1, col: int = 1) -> CompileError:
    return CompileError([Diagnostic("error", Loc(path, line, col), message)])


def read_config(path: str) -> HFConfig:
    """The config.json at `path` (a file, or a folder holding one)."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(file, f"cannot read the config: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(file, f"not JSON: {exc.msg}", exc.lineno, exc.colno) from None
    if not isinstance(data, dict):
        raise _fail(file, "a config.json holds one JSON object")
    return HFConfig(file, data, key_locations(text))


def _where(config_path: str) -> str:
    """The config's folder and file name, e.g. 'gpt2/config.json' (no absolute path:
    the spec stays the same wherever the model sits)."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(config_path)))
    return f"{folder}/{os.path.basename(config_path)}" if folder else os.path.basename(config_path)


def spec_tree(cfg: HFConfig, name: str) -> tuple[dict, dict]:
    """The spec (a dict in YAML's shape, its parameter budget still open) and the
    weight conversion (`prefix` of the task model's names, `convert`), or CompileError
    with every field the IR cannot honour."""
    kind = cfg.get("model_type")
    if kind not in IMPORTERS:
        known = ", ".join(sorted(IMPORTERS))
        raise CompileError([Diagnostic("error", cfg.loc("model_type"),
                                       f"model_type {json.dumps(kind)} is not supported; supported: {known}")])
    check = _Checker(cfg)
    body, weights = IMPORTERS[kind](check)
    if check.errors:
        raise CompileError(sorted(check.errors, key=lambda d: d.loc))
    spec = {"metagen_version": "1.0", "name": name,
            "description": f"Imported from {_where(cfg.path)} (transformers model_type '{kind}')."}
    spec.update(body)
    return spec, weights


def _yaml(node, indent: int = 0) -> list[str]:
    pad, lines = "  " * indent, []
    for key, value in node.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.extend(_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")  # JSON scalars and lists are YAML flow
    return lines


def _compile_text(text: str, work: str, cfg: HFConfig):
    """The compiled spec; a spec the compiler refuses is reported against the config
    (the temporary spec file is gone by the time the user reads it)."""
    from metagen.pipeline import compile_spec

    spec_path = os.path.join(work, "imported.yaml")
    with open(spec_path, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        return compile_spec(spec_path)
    except CompileError as exc:
        why = "; ".join(d.message for d in exc.diagnostics if d.severity == "error")
        raise _fail(cfg.path, f"the imported spec does not compile: {why}") from None


def load_state_dict(folder: str, stem: str = "model") -> dict[str, np.ndarray]:
    """A checkpoint's tensors, float32 numpy: STEM.safetensors, a sharded
    STEM.safetensors.index.json set, or the pickled .bin (read weights_only).
    transformers' stem is `model` (pickle `pytorch_model.bin`), diffusers'
    `diffusion_pytorch_model`."""
    single = os.path.join(folder, f"{stem}.safetensors")
    index = os.path.join(folder, f"{stem}.safetensors.index.json")
    pt = os.path.join(folder, "pytorch_model.bin" if stem == "model" else f"{stem}.bin")
    if os.path.isfile(single) or os.path.isfile(index):
        from safetensors.torch import load_file

        files = [single] if os.path.isfile(single) else None
        if files is None:
            try:
                with open(index, encoding="utf-8") as f:
                    shards = json.load(f)["weight_map"].values()
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise _fail(index, f"cannot read the shard index: {exc}") from None
            files = [os.path.join(folder, s) for s in sorted(set(shards))]
        sd = {}
        for file in files:
            try:
                sd.update(load_file(file))
            except Exception as exc:  # a corrupt or missing shard: located, not a traceback
                raise _fail(file, f"cannot read the weights: {exc}") from None
    elif os.path.isfile(pt):
        import torch

        try:
            sd = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise _fail(pt, f"cannot read the weights: {exc}") from None
    else:
        raise _fail(folder, f"no weights here: expected {os.path.basename(single)}, {os.path.basename(index)} or {os.path.basename(pt)}")
    return {k: _np(v) for k, v in sd.items()}


def canonical_weights(folder: str, conversion: dict) -> dict[str, np.ndarray]:
    """The checkpoint in `folder` under the canonical names. A checkpoint of the bare
    model (GPT2Model, LlamaModel, ...) lacks its task model's prefix; it is added."""
    sd = load_state_dict(folder)
    prefix = conversion["prefix"]
    if prefix and not any(k.startswith(prefix) for k in sd):
        sd = {prefix + k: v for k, v in sd.items()}
    try:
        return conversion["convert"](sd)
    except (KeyError, ValueError) as exc:
        raise _fail(folder, f"the checkpoint does not match its config: {exc}") from None


def import_hf(path: str, name: str, mg: bool = False, with_weights: bool = False, with_tokenizer: bool = False):
    """(spec text, canonical weights or None, tokenizer.json path or None) for the
    transformers model at `path`. The spec pins the architecture and its parameter
    budget is the exact count. The tokenizer (asked for with `with_tokenizer`) must
    be in the folder and fit the model's vocabulary."""
    import tempfile

    from metagen.frontend.dsl_format import tree_to_mg, tree_to_yaml
    from metagen.frontend.yaml_frontend import parse_yaml

    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model_index.json")):
        cfg, spec, load = _pipeline(path, name)
    else:
        cfg = read_config(path)
        if cfg.get("_class_name") is not None:
            raise CompileError([Diagnostic("error", cfg.loc("_class_name"), (
                f"_class_name {json.dumps(cfg.get('_class_name'))}: a diffusers model is imported from its pipeline "
                "folder (model_index.json, unet/, text_encoder/); the U-Net family includes its text encoder"))])
        spec, conversion = spec_tree(cfg, name)

        def load():
            return canonical_weights(os.path.dirname(cfg.path) or ".", conversion)

    weights = load() if with_weights else None
    with tempfile.TemporaryDirectory(prefix="metagen-import-") as work:
        # First compile with an open budget to learn the exact count, then pin it.
        spec.setdefault("constraints", {})["parameter_budget"] = {"max": "10T"}
        order = ["metagen_version", "name", "description", "modality", "task", "constraints", "training", "architecture"]
        ordered = {k: spec[k] for k in order if k in spec}
        count = _compile_text("\n".join(_yaml(ordered)) + "\n", work, cfg).model.param_count()
        spec["constraints"]["parameter_budget"] = {"max": str(count), "min": str(count)}
        ordered = {k: spec[k] for k in order if k in spec}
        text = "\n".join(_yaml(ordered)) + "\n"
        model = _compile_text(text, work, cfg).model
    tree = parse_yaml(text, "<imported>")
    text = tree_to_mg(tree) if mg else tree_to_yaml(tree)
    if weights is not None:
        _check_weights(cfg, weights, {name: tuple(p.type.shape) for name, p in model.walk_params()})
    tokenizer = _tokenizer(path, cfg, model) if with_tokenizer else None
    return text, weights, tokenizer


def _tokenizer(path: str, cfg: HFConfig, model) -> str:
    """The folder's tokenizer.json, checked against the model's token ids."""
    from metagen.tokenizer import check_fits, find, load, model_vocab

    folder = path if os.path.isdir(path) else os.path.dirname(cfg.path) or "."
    found = find(folder)
    if found is None:
        raise _fail(folder, "no tokenizer here: expected tokenizer.json (a diffusers pipeline: tokenizer/tokenizer.json)")
    load(found)  # a file tokenizers cannot read is an error here, not in train.py
    vocab = model_vocab(model)
    if vocab is None:
        raise _fail(found, "the model takes no text tokens; a tokenizer has nothing to do")
    check_fits(found, vocab, Loc(found, 1, 1))
    return found


def _pipeline(folder: str, name: str):
    """(the U-Net's config, the spec, the weight loader) of a diffusers pipeline folder."""
    unet, text = read_config(os.path.join(folder, "unet")), read_config(os.path.join(folder, "text_encoder"))
    if unet.get("_class_name") != "UNet2DConditionModel":
        raise CompileError([Diagnostic("error", unet.loc("_class_name"), (
            f"_class_name {json.dumps(unet.get('_class_name'))} is not supported; supported: \"UNet2DConditionModel\""))])
    u, t = _Checker(unet), _Checker(text)
    body = _unet(u, t)
    checkers = [u, t]
    vae_path = os.path.join(folder, "vae")
    vae = read_config(vae_path) if os.path.isdir(vae_path) else None
    if vae is not None:  # the pipeline's images are pixels: its autoencoder comes along
        v = _Checker(vae)
        checkers.append(v)
        body["architecture"]["images"] = "pixels"
        body["architecture"]["autoencoder"] = _vae(v, body["architecture"]["latent_channels"])
    errors = [e for c in checkers for e in c.errors]
    if errors:
        raise CompileError(sorted(errors, key=lambda d: d.loc))
    parts = "UNet2DConditionModel with CLIPTextModel" + (" and AutoencoderKL" if vae is not None else "")
    spec = {"metagen_version": "1.0", "name": name,
            "description": f"Imported from the diffusers pipeline {os.path.basename(os.path.abspath(folder))} ({parts})."}
    spec.update(body)
    levels = len(body["architecture"]["channel_mults"])

    def load():
        weights = unet_to_canonical(load_state_dict(os.path.dirname(unet.path), "diffusion_pytorch_model"), levels)
        try:
            weights.update(clip_text_to_canonical(load_state_dict(os.path.dirname(text.path))))
        except KeyError as exc:
            raise _fail(text.path, f"the checkpoint does not match its config: {exc}") from None
        if vae is not None:
            state = load_state_dict(os.path.dirname(vae.path), "diffusion_pytorch_model")
            try:
                weights.update(vae_to_canonical(state, len(body["architecture"]["autoencoder"]["block_channels"])))
            except KeyError as exc:
                raise _fail(vae.path, f"the checkpoint does not match its config: {exc}") from None
        return weights

    return unet, spec, load


def _check_weights(cfg: HFConfig, weights: dict[str, np.ndarray], expected: dict[str, tuple]) -> None:
    """The converted checkpoint holds exactly the compiled model's parameters, name
    for name and shape for shape (load_canonical would refuse it otherwise)."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = sorted(n for n in set(expected) & set(weights) if tuple(weights[n].shape) != expected[n])
    problems = [f"missing {missing[0]}" if missing else "", f"unexpected {extra[0]}" if extra else "",
                f"{wrong[0]} has shape {list(weights[wrong[0]].shape)}, the spec {list(expected[wrong[0]])}" if wrong else ""]
    problems = [p for p in problems if p]
    if problems:
        raise _fail(cfg.path, f"the checkpoint does not match its config: {'; '.join(problems)}")
