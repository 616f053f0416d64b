"""`metagen export hf`: a compiled spec (and its weights) as a folder that
transformers' `from_pretrained` loads.

The weight names come from inverting `metagen.hf`'s `*_to_canonical` mappings, not
from a second table: the reference model's tensors (names and shapes from the
transformers class built on the meta device) are filled with probe values that say
which tensor and which element they are, the forward mapping is run on them, and
where each probe lands in the canonical layout says where each canonical element
goes back to. The config written is checked by importing it again (`spec_tree`):
unless the import gives back the same architecture, the spec has a convention the
reference class lacks, and the export is refused.
"""

from __future__ import annotations

import copy
import json
import os
import re

import numpy as np

from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.hf import ACTIVATIONS, HFConfig, key_locations, spec_tree

DEFAULT_SHARD_SIZE = 5 * 10**9  # transformers' default max_shard_size, "5GB"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'5GB' -> 5 * 10**9 bytes, '2MiB' -> 2 * 2**20 (transformers' spelling); ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a size (e.g. 5GB, 500MB, 2MiB, or bytes)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


# ------------------------------------------------------------------ the configs


def _act(name: str) -> str:
    """transformers' name of an activation (the first of metagen.hf.ACTIVATIONS that maps to it)."""
    return next((k for k, v in ACTIVATIONS.items() if v == name), name)


def _labels(resolved: dict) -> dict:
    n = int(resolved["task"]["num_classes"])
    return {"id2label": {str(i): f"LABEL_{i}" for i in range(n)}, "label2id": {f"LABEL_{i}": i for i in range(n)}}


def special_tokens(arch: dict) -> tuple[int, int]:
    """(bos, eos) of a decoder LM by its reference's convention, until the model has a
    tokenizer: GPT-2's <|endoftext|> is the last token and both; Llama's are 1 and 2."""
    if arch.get("position") == "learned":
        return arch["vocab_size"] - 1, arch["vocab_size"] - 1
    return min(1, arch["vocab_size"] - 1), min(2, arch["vocab_size"] - 1)


def _gpt2_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    act = _act(arch["activation"])
    _, eos = special_tokens(arch)
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": arch["vocab_size"],
            "n_positions": context, "n_embd": arch["hidden_size"], "n_layer": arch["layers"], "n_head": arch["heads"],
            "n_inner": arch["ffn_size"], "activation_function": act, "layer_norm_epsilon": arch["norm_eps"],
            "tie_word_embeddings": True, "bos_token_id": eos, "eos_token_id": eos, "torch_dtype": "float32"}


def _rope_scaling(arch: dict) -> dict:
    """transformers' `rope_scaling` of a scaled rotary embedding (none when unscaled)."""
    if arch.get("rope_scaling") in (None, "none"):
        return {}
    from metagen.hf import LLAMA3_KEYS

    return {"rope_scaling": {"rope_type": arch["rope_scaling"], **{theirs: arch[ours] for theirs, ours, _ in LLAMA3_KEYS}}}


def _llama_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    return {**_rope_scaling(arch), "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": arch["vocab_size"],
            "hidden_size": arch["hidden_size"], "intermediate_size": arch["ffn_size"],
            "num_hidden_layers": arch["layers"], "num_attention_heads": arch["heads"],
            "num_key_value_heads": arch["kv_heads"], "head_dim": arch["head_dim"], "hidden_act": "silu",
            "rms_norm_eps": arch["norm_eps"], "max_position_embeddings": context, "rope_theta": arch["rope_theta"],
            "attention_bias": arch["bias"], "mlp_bias": arch["bias"], "tie_word_embeddings": arch["tie_embeddings"],
            "bos_token_id": special_tokens(arch)[0], "eos_token_id": special_tokens(arch)[1],
            "torch_dtype": "float32"}


def _qwen2_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    config = {k: v for k, v in _llama_config(arch, context, resolved, compiled).items() if k not in ("attention_bias", "mlp_bias")}
    config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False)
    return config


def _mistral_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict | None:
    if not arch.get("sliding_window"):  # without a window Mistral is Llama's computation: the Llama export
        return None
    config = {k: v for k, v in _llama_config(arch, context, resolved, compiled).items() if k not in ("attention_bias", "mlp_bias")}
    config.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=arch["sliding_window"])
    return config


def _bert_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    return {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": arch["vocab_size"],
            "type_vocab_size": arch.get("type_vocab_size"), "hidden_size": arch["hidden_size"],
            "num_hidden_layers": arch["layers"], "num_attention_heads": arch["heads"],
            "intermediate_size": arch["ffn_size"], "hidden_act": _act(arch["activation"]),
            "layer_norm_eps": arch["norm_eps"], "max_position_embeddings": context,
            "position_embedding_type": "absolute", "pad_token_id": 0, "torch_dtype": "float32", **_labels(resolved)}


def _vit_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    return {"architectures": ["ViTForImageClassification"], "model_type": "vit", "image_size": arch.get("image_size"),
            "patch_size": arch.get("patch_size"), "num_channels": arch.get("channels"),
            "hidden_size": arch["hidden_size"], "num_hidden_layers": arch["layers"],
            "num_attention_heads": arch["heads"], "intermediate_size": arch["ffn_size"],
            "hidden_act": _act(arch["activation"]), "layer_norm_eps": arch["norm_eps"], "qkv_bias": True,
            "torch_dtype": "float32", **_labels(resolved)}


def _clip_tower(t: dict, context: int, projection: int, image: bool) -> dict:
    out = {"hidden_size": t["hidden_size"], "num_hidden_layers": t["layers"], "num_attention_heads": t["heads"],
           "intermediate_size": t["ffn_size"], "hidden_act": _act(t["activation"]), "layer_norm_eps": t["norm_eps"],
           "projection_dim": projection}
    if image:
        out.update(model_type="clip_vision_model", image_size=t["image_size"], patch_size=t["patch_size"],
                   num_channels=t["channels"])
    else:  # eos_token_id 2: CLIPTextModel pools at the highest token id, as our text tower does
        out.update(model_type="clip_text_model", vocab_size=t["vocab_size"], max_position_embeddings=context,
                   bos_token_id=min(1, t["vocab_size"] - 1), eos_token_id=2, pad_token_id=min(1, t["vocab_size"] - 1))
    return out


def _clip_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    p = arch["projection_dim"]
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": p, "torch_dtype": "float32",
            "text_config": _clip_tower(arch["text_encoder"], context, p, image=False),
            "vision_config": _clip_tower(arch["image_encoder"], context, p, image=True)}


def _mlm_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    """BertForMaskedLM: BERT's config without labels; the head is tied to the word embeddings."""
    config = {k: v for k, v in _bert_config(arch, context, dict(resolved, task={"num_classes": 2}), compiled).items()
              if k not in ("id2label", "label2id")}
    return dict(config, architectures=["BertForMaskedLM"], tie_word_embeddings=True)


def _ranker_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    """A cross-encoder: BertForSequenceClassification with one label (its score)."""
    return _bert_config(arch, context, dict(resolved, task={"num_classes": 1}), compiled)


def _resnet_like(compiled: dict, channels: int) -> dict:
    """A ResNetConfig's fields for the ResNet trunk of `compiled` (cnn.py's config)."""
    from metagen.compiler.families.cnn import EXPANSION

    kind, width = compiled["block"], compiled["hidden_size"]
    return {"model_type": "resnet", "num_channels": channels, "embedding_size": width,
            "hidden_sizes": [width * 2**i * EXPANSION[kind] for i in range(len(compiled["depths"]))],
            "depths": list(compiled["depths"]), "layer_type": kind, "hidden_act": _act(compiled["activation"]),
            "downsample_in_first_stage": False, "downsample_in_bottleneck": False}


def _resnet_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    return {**_resnet_like(compiled, compiled["channels"]), "architectures": ["ResNetForImageClassification"],
            "image_size": compiled["image_size"], "torch_dtype": "float32", **_labels(resolved)}


def _detr_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict:
    backbone = dict(_resnet_like(compiled["backbone"], compiled["channels"]), out_features=["stage4"])
    heads, layers, ffn = compiled["heads"], compiled["layers"], compiled["ffn_size"]
    return {"architectures": ["DetrForObjectDetection"], "model_type": "detr", "use_timm_backbone": False,
            "use_pretrained_backbone": False, "backbone": None, "backbone_config": backbone,
            "num_channels": compiled["channels"], "num_queries": compiled["num_queries"], "d_model": compiled["hidden_size"],
            "encoder_layers": layers, "decoder_layers": layers, "encoder_attention_heads": heads,
            "decoder_attention_heads": heads, "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn,
            "activation_function": _act(compiled["activation"]), "position_embedding_type": "sine", "dilation": False,
            "image_size": compiled["image_size"], "torch_dtype": "float32", **_labels(resolved)}


def _patchtst_config(arch: dict, context: int, resolved: dict, compiled: dict) -> dict | None:
    if compiled.get("variant") != "patchtst":  # the window autoencoder has no transformers counterpart
        return None
    return {"architectures": ["PatchTSTForPrediction"], "model_type": "patchtst",
            "num_input_channels": compiled["channels"], "context_length": compiled["lookback"],
            "prediction_length": compiled["horizon"], "patch_length": compiled["patch_size"],
            "patch_stride": compiled["patch_stride"], "d_model": compiled["hidden_size"],
            "num_hidden_layers": compiled["layers"], "num_attention_heads": compiled["heads"],
            "ffn_dim": compiled["ffn_size"], "norm_type": compiled["norm"], "norm_eps": compiled["norm_eps"],
            "activation_function": _act(compiled["activation"]), "pooling_type": compiled["pooling"], "loss": "mse",
            "scaling": "std", "share_embedding": True, "share_projection": True, "channel_attention": False,
            "use_cls_token": False, "pre_norm": True, "bias": True,
            "positional_encoding_type": "random",  # a trainable table, as ours (weights set its values)
            "torch_dtype": "float32"}


# The compiled family (and, for decoder LMs, the positions) -> (what it is, the class
# that loads the folder: an Auto class or the model class itself, the (reference class,
# config writer) candidates). The first candidate whose config imports back to the
# spec's architecture wins (a writer returning None is no candidate for the
# architecture). The config's model_type selects the weight mapping through
# metagen.hf.IMPORTERS. The refusal's list of supported families is made from this table.
EXPORTERS = {
    ("decoder_lm", "learned"): ("decoder LM with learned positions", "AutoModelForCausalLM",
                                (("GPT2LMHeadModel", _gpt2_config),)),
    ("decoder_lm", "rope"): ("decoder LM with rotary positions", "AutoModelForCausalLM",
                             (("LlamaForCausalLM", _llama_config), ("Qwen2ForCausalLM", _qwen2_config),
                              ("MistralForCausalLM", _mistral_config))),
    ("encoder", None): ("text classifier", "AutoModelForSequenceClassification",
                        (("BertForSequenceClassification", _bert_config),)),
    ("masked_lm", None): ("masked language model", "AutoModelForMaskedLM", (("BertForMaskedLM", _mlm_config),)),
    ("cross_encoder", None): ("cross-encoder ranker", "AutoModelForSequenceClassification",
                              (("BertForSequenceClassification", _ranker_config),)),
    ("vit", None): ("image classifier", "AutoModelForImageClassification",
                    (("ViTForImageClassification", _vit_config),)),
    ("clip", None): ("dual encoder", "AutoModel", (("CLIPModel", _clip_config),)),
    ("resnet", None): ("convolutional image classifier", "AutoModelForImageClassification",
                       (("ResNetForImageClassification", _resnet_config),)),
    ("detr", None): ("object detector", "AutoModelForObjectDetection",
                     (("DetrForObjectDetection", _detr_config),)),
    ("time_series", None): ("PatchTST forecaster", "PatchTSTForPrediction",
                            (("PatchTSTForPrediction", _patchtst_config),)),
}
DIFFUSERS_FAMILY = "diffusion_unet"


def _supported() -> str:
    """The families with a counterpart and their reference models (GPT2 for
    GPT2LMHeadModel, ...), from EXPORTERS: one line, for a note."""
    models: dict[str, list[str]] = {}
    for (family, _), (_, _, found) in EXPORTERS.items():
        for cls, _ in found:
            short = re.split(r"For|LMHead|Model$", cls)[0]
            if short not in models.setdefault(family, []):
                models[family].append(short)
    shown = [f"{family} ({', '.join(names)})" for family, names in models.items()]
    return ", ".join(shown + [f"{DIFFUSERS_FAMILY} (StableDiffusionPipeline)"])


SUPPORTED = _supported()
# The task fields a --tiny compile shrinks -> the compiled config's key holding the value built
TINY_TASK = (("num_classes", "num_classes"), ("num_anchors", "num_queries"), ("lookback", "lookback"),
             ("horizon", "horizon"), ("num_outputs", "channels"))


def _key(family: str, resolved: dict) -> tuple[str, str | None]:
    """The EXPORTERS key of a compiled spec."""
    return family, resolved["architecture"].get("position") if family == "decoder_lm" else None


def _kind(resolved: dict) -> str:
    """'decoder LM', 'text classifier', 'image classifier', or the family's name."""
    arch, modality = resolved["architecture"], resolved.get("modality") or {}
    inputs, outputs = list(modality.get("inputs") or []), list(modality.get("outputs") or [])
    if arch.get("family") == "transformer" and inputs == ["text"] and outputs == ["text"]:
        return "decoder LM"
    if (resolved.get("task") or {}).get("type") == "classification" and len(inputs) == 1:
        return f"{inputs[0]} classifier"
    if arch.get("family") == "diffusion" and "text_encoder" in arch:
        return "diffusion U-Net"
    if sorted(inputs) == ["image", "text"] and "text_encoder" in arch and "image_encoder" in arch \
            and (resolved.get("training") or {}).get("objective") in (None, ["contrastive"]):
        return "dual encoder"
    return f"family {arch.get('family')!r}"


def _fingerprint(resolved: dict) -> dict:
    """What the reference class must reproduce: the architecture, the task, the context,
    the family built (the spec's `family` key is how it was asked for, e.g. `auto`)."""
    from metagen.frontend.schema import SPEC

    task = next(f for f in SPEC.fields if f.name == "task")
    recorded = {f.name for f in task.fields if f.recorded}  # task.domain, ...: cannot change the model
    out = {k: v for k, v in resolved["architecture"].items() if k != "family"}
    out.update({f"task.{k}": v for k, v in (resolved.get("task") or {}).items() if k not in recorded})
    out["context_window"] = (resolved.get("constraints") or {}).get("context_window")
    out["modality"] = resolved.get("modality")
    out["family built"] = resolved.get("family built")
    return out


def _reimported(spec: dict, cfg: HFConfig) -> dict:
    """The resolved spec of the config we wrote, imported again (with the family built)."""
    import tempfile

    from metagen.artifacts import resolved_spec
    from metagen.hf import _compile_text, _yaml

    spec = dict(spec)
    spec["constraints"] = dict(spec.get("constraints") or {}, parameter_budget={"max": "10T"})
    with tempfile.TemporaryDirectory(prefix="metagen-export-") as work:
        comp = _compile_text("\n".join(_yaml(spec)) + "\n", work, cfg)
        return dict(resolved_spec(comp), **{"family built": comp.ctx.family})


def _refuse(loc: Loc, message: str, families: bool = False) -> CompileError:
    """The error; with `families`, a note listing the families that export (kept apart:
    a diagnostic's message is clipped at 400 characters)."""
    notes = [Diagnostic("note", loc, f"families with a transformers or diffusers counterpart: {SUPPORTED}")]
    return CompileError([Diagnostic("error", loc, message)] + (notes if families else []))


def hf_config(comp, resolved: dict) -> tuple[dict, dict]:
    """(config.json's dict, metagen.hf's weight conversion) for a compiled spec, or a
    CompileError at the spec's architecture naming what has no counterpart."""
    arch, loc = resolved["architecture"], comp.spec.architecture.loc()
    compiled = comp.model.config
    if resolved.get("task"):  # --tiny shrinks the task (classes, queries, windows): the export follows the model built
        task = dict(resolved["task"])
        task.update({ours: compiled[built] for ours, built in TINY_TASK if ours in task and built in compiled})
        resolved = dict(resolved, task=task)
    resolved = dict(resolved, **{"family built": comp.ctx.family})
    key = _key(comp.ctx.family, resolved)
    if key not in EXPORTERS or arch.get("components"):
        what = f"family {comp.ctx.family}" + (f" with position {json.dumps(key[1])}" if key[1] else "") + (
            " with components" if arch.get("components") else "")
        raise _refuse(loc, f"{what} has no transformers or diffusers counterpart to export to", families=True)
    refusals, unreadable = [], False
    for cls, writer in EXPORTERS[key][2]:
        config = writer(arch, int(resolved["constraints"].get("context_window") or 0), resolved, compiled)
        if config is None:  # the class is no candidate for this architecture
            continue
        text = json.dumps(config, indent=2, sort_keys=True)
        cfg = HFConfig("config.json", config, key_locations(text))
        try:
            back, conversion = spec_tree(cfg, comp.spec.name)
            again = _reimported(back, cfg)
        except CompileError as exc:
            why = "; ".join(d.message for d in exc.diagnostics)
            refusals.append(f"{cls} cannot hold this architecture: {why}")
            unreadable = True
            continue
        theirs, ours = _fingerprint(again), _fingerprint(resolved)
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        if not differ:
            return config, conversion
        shown = ", ".join(f"{k}: {json.dumps(ours.get(k))}" for k in differ)
        refusals.append(f"{cls} has no counterpart for {shown} (it would give "
                        f"{', '.join(f'{k}: {json.dumps(theirs.get(k))}' for k in differ)})")
    if not refusals:  # no candidate for this variant of the family (e.g. the time-series autoencoder)
        refusals.append(f"family {comp.ctx.family} as built here has no transformers or diffusers counterpart")
    if comp.ctx.options.tiny and unreadable:  # e.g. a --tiny ResNet's stages (2, 1, 1, 1) are no ResNet depth
        refusals.insert(0, "the --tiny model cannot be exported (its config does not import back: --tiny shrinks "
                        "what the spec language cannot set); export without --tiny, with small sizes set by -D")
    raise _refuse(loc, "; ".join(refusals), families=True)


# ------------------------------------------------------------------ the weights


def reference_shapes(config: dict, auto: str) -> dict[str, tuple[int, ...]]:
    """The transformers task model's checkpoint names and shapes, built on the meta
    device (no memory, no download): the names its `save_pretrained` writes. From
    transformers 5 on, those are the original (4.x) names where a model's modules
    were renamed since (ViT, DETR: `revert_weight_conversion`), which every version
    loads; the names in memory would load only in 5.x."""
    import torch
    import transformers

    # a copy: transformers 5 edits nested dicts in place (rope_scaling gains rope_theta), and `config` is written out later
    cfg = transformers.AutoConfig.for_model(**copy.deepcopy(config))
    cls = getattr(transformers, auto)
    with torch.device("meta"):
        model = cls.from_config(cfg) if auto.startswith("Auto") else cls(cfg)
    state = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: the names in memory are the checkpoint's
        pass
    else:
        state = revert_weight_conversion(model, state)
    return {k: tuple(v.shape) for k, v in state.items()}


def _buffers(shapes: dict[str, tuple[int, ...]], stats_folded: bool) -> dict[str, np.ndarray]:
    """Reference buffers no canonical weight gives: batch norm's step counters (0) and,
    where the import folds the running statistics into weight and bias, mean 0 and
    variance 1, which give the canonical weight and bias back."""
    out = {}
    for n, shape in shapes.items():
        if n.endswith(".num_batches_tracked"):
            out[n] = np.zeros(shape, np.int64)
        elif stats_folded and n.endswith((".running_mean", ".running_var")):
            out[n] = (np.ones if n.endswith("var") else np.zeros)(shape, np.float32)
    return out


def to_reference(weights: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], convert) -> dict[str, np.ndarray]:
    """Canonical weights -> the reference names, by running `convert` (reference ->
    canonical) on probes. Probe values stay below 2**24, exact in float32."""
    names = sorted(shapes)
    size = {n: int(np.prod(shapes[n], dtype=np.int64)) for n in names}

    def probe(fill):
        return convert({n: fill(i, n).reshape(shapes[n]).astype(np.float32) for i, n in enumerate(names)})

    which = probe(lambda i, n: np.full(size[n], i))
    hi = probe(lambda i, n: np.arange(size[n]) // 4096)
    lo = probe(lambda i, n: np.arange(size[n]) % 4096)
    missing = sorted(set(weights) - set(which))
    if missing:
        raise ValueError(f"the reference model has no place for {missing[0]}")
    out: dict[str, np.ndarray] = {}
    covered: dict[str, int] = {}
    for c in sorted(weights):
        w = np.asarray(weights[c], dtype=np.float32)
        if w.shape != which[c].shape:
            raise ValueError(f"{c} has shape {list(w.shape)}, the reference's {list(which[c].shape)}")
        src = which[c].ravel().astype(np.int64)
        elem = hi[c].ravel().astype(np.int64) * 4096 + lo[c].ravel().astype(np.int64)
        flat = w.ravel()
        for i in np.unique(src):
            n = names[i]
            mask = src == i
            target = out.setdefault(n, np.zeros(size[n], dtype=np.float32))
            target[elem[mask]] = flat[mask]
            covered[n] = covered.get(n, 0) + int(mask.sum())
    partial = sorted(n for n in out if covered[n] != size[n])
    if partial:
        raise ValueError(f"{partial[0]} is only partly given by the canonical weights")
    return {n: out[n].reshape(shapes[n]) for n in sorted(out)}


def shard(tensors: dict[str, np.ndarray], max_size: int, stem: str = "model") -> dict[str, bytes]:
    """`STEM.safetensors`, or transformers' shards `STEM-0000K-of-0000N.safetensors`
    with `STEM.safetensors.index.json` when the whole is above `max_size` bytes
    (transformers' stem is `model`, diffusers' `diffusion_pytorch_model`). Tensors go
    in name order; a tensor bigger than a shard gets one of its own."""
    from safetensors.numpy import save

    total = sum(t.nbytes for t in tensors.values())
    if total <= max_size:
        return {f"{stem}.safetensors": save(tensors, metadata={"format": "pt"})}
    groups: list[list[str]] = [[]]
    used = 0
    for n in sorted(tensors):
        if groups[-1] and used + tensors[n].nbytes > max_size:
            groups.append([])
            used = 0
        groups[-1].append(n)
        used += tensors[n].nbytes
    files, weight_map = {}, {}
    for k, group in enumerate(groups, 1):
        fname = f"{stem}-{k:05d}-of-{len(groups):05d}.safetensors"
        files[fname] = save({n: tensors[n] for n in group}, metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    files[f"{stem}.safetensors.index.json"] = (json.dumps(index, indent=2) + "\n").encode("utf-8")
    return files


def tokenizer_files(path: str, config: dict, context: int, pad_with_eos: bool = False) -> dict[str, bytes]:
    """tokenizer.json as it is, with the tokenizer_config.json and
    special_tokens_map.json that make `AutoTokenizer.from_pretrained` load it as a
    `PreTrainedTokenizerFast`; `config` takes the special tokens' ids. `pad_with_eos`
    (a text-to-image pipeline, which pads every prompt to the context window): a
    tokenizer without a pad token pads with its end-of-text token, as CLIP's does."""
    from metagen.tokenizer import special_tokens

    with open(path, "rb") as f:
        data = f.read()
    roles = special_tokens(path)
    if pad_with_eos and "pad_token" not in roles and "eos_token" in roles:
        roles["pad_token"] = roles["eos_token"]
    tokens = {role: tok for role, (tok, _) in sorted(roles.items())}
    for role, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("pad_token", "pad_token_id")):
        if role in roles:
            config[key] = roles[role][1]
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context,
           "clean_up_tokenization_spaces": False, **tokens}

    def dump(d: dict) -> bytes:
        return (json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    return {"tokenizer.json": data, "tokenizer_config.json": dump(cfg), "special_tokens_map.json": dump(tokens)}


def export_files(comp, resolved: dict, weights: dict[str, np.ndarray], max_shard_size: int = DEFAULT_SHARD_SIZE,
                 weights_loc: Loc | None = None, tokenizer: str | None = None,
                 tokenizer_loc: Loc | None = None) -> dict[str, bytes]:
    """The files of the transformers folder: config.json, generation_config.json, the
    weights (one file or shards with their index), and the tokenizer when given."""
    diffusion = comp.ctx.family == DIFFUSERS_FAMILY and _kind(resolved) == "diffusion U-Net"
    if diffusion:
        config = {}
    else:
        config, conversion = hf_config(comp, resolved)
    tok_files = {}
    if tokenizer is not None:
        from metagen.tokenizer import check_fits, model_vocab

        vocab = model_vocab(comp.model)
        if vocab is None:
            raise _refuse(tokenizer_loc or comp.spec.loc(), "a tokenizer goes with a model of text tokens; this one has none")
        check_fits(tokenizer, vocab, tokenizer_loc or comp.spec.loc())
        context = int(resolved["constraints"].get("context_window") or 0)
        tok_files = tokenizer_files(tokenizer, config, context, pad_with_eos=diffusion)
    if diffusion:  # the pipeline's tokenizer/ folder
        files = pipeline_files(comp, resolved, weights, max_shard_size, weights_loc, tokenizer is not None)
        files.update({f"tokenizer/{name}": data for name, data in tok_files.items()})
        return files
    auto = EXPORTERS[_key(comp.ctx.family, resolved)][1]
    try:
        missing = sorted({n for n, _ in comp.model.walk_params()} - set(weights))
        if missing:
            raise ValueError(f"no {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        shapes = reference_shapes(config, auto)
        buffers = _buffers(shapes, bool(conversion.get("stats_folded")))
        tensors = to_reference(weights, {n: s for n, s in shapes.items() if n not in buffers}, conversion["convert"])
        tensors.update(buffers)
    except ValueError as exc:
        raise _refuse(weights_loc or comp.spec.loc(), f"the weights do not fit the spec: {exc}") from None
    files = {"config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")}
    if auto == "AutoModelForCausalLM":
        generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
        files["generation_config.json"] = (json.dumps(generation, indent=2, sort_keys=True) + "\n").encode("utf-8")
    files.update(tok_files)
    files.update(shard(tensors, max_shard_size))
    return files


# ------------------------------------------------------------------ diffusers


def _dump(d: dict) -> bytes:
    return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode("utf-8")


def pipeline_configs(arch: dict, context: int) -> tuple[dict, dict, dict | None]:
    """The diffusion U-Net family as diffusers' UNet2DConditionModel config, its text
    encoder as a CLIPTextModel config and, when its images are pixels, its autoencoder
    as an AutoencoderKL config (else None): the inverses of `metagen.hf._unet` and
    `metagen.hf._vae`, SD 1.5's fixed layouts from `UNET_FIXED` and `VAE_FIXED`."""
    from metagen.hf import UNET_FIXED, VAE_FIXED

    levels = range(len(arch["channel_mults"]))
    downs = ["CrossAttnDownBlock2D" if lvl in arch["attention_levels"] else "DownBlock2D" for lvl in levels]
    unet = {key: value for key, value, _ in UNET_FIXED}
    unet.update({
        "_class_name": "UNet2DConditionModel", "in_channels": arch["latent_channels"],
        "out_channels": arch["latent_channels"], "sample_size": arch["sample_size"],
        "block_out_channels": [arch["base_channels"] * m for m in arch["channel_mults"]],
        "down_block_types": downs, "up_block_types": [d.replace("Down", "Up") for d in reversed(downs)],
        "layers_per_block": arch["res_blocks"], "transformer_layers_per_block": arch["transformer_depth"],
        "attention_head_dim": arch["heads"],  # diffusers' legacy name for the head count
        "norm_num_groups": arch["norm_groups"], "cross_attention_dim": arch["cross_attention_dim"],
    })
    text = {k: v for k, v in _clip_tower(arch["text_encoder"], context, 0, image=False).items() if k != "projection_dim"}
    text.update(architectures=["CLIPTextModel"], torch_dtype="float32")
    vae = None
    if arch.get("images") == "pixels":
        ae = arch["autoencoder"]
        n = len(ae["block_channels"])
        vae = {key: value for key, value, _ in VAE_FIXED}
        vae.update({
            "_class_name": "AutoencoderKL", "block_out_channels": list(ae["block_channels"]),
            "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
            "layers_per_block": ae["layers_per_block"], "norm_num_groups": ae["norm_groups"],
            "latent_channels": arch["latent_channels"], "scaling_factor": ae["scaling_factor"],
            "sample_size": arch["sample_size"] * 2 ** (n - 1),  # in pixels
        })
    return unet, text, vae


def scheduler_config(schedule: dict) -> dict:
    """diffusers' DDIMScheduler over the model's training noise schedule, with Stable
    Diffusion's settings (those `metagen.backends.runtime.sampling` follows)."""
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": schedule["steps"],
            "beta_schedule": schedule["kind"], "beta_start": schedule["beta_start"], "beta_end": schedule["beta_end"],
            "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading"}


def _check_pipeline(comp, resolved: dict, unet: dict, text: dict, vae: dict | None) -> None:
    """The configs imported again give the spec's architecture, or the export is refused."""
    from metagen.hf import _Checker, _unet, _vae

    loc = comp.spec.architecture.loc()
    parts = [("unet", unet), ("text_encoder", text)] + ([("vae", vae)] if vae is not None else [])
    cfgs = [HFConfig(f"{part}/config.json", d, key_locations(json.dumps(d, indent=2, sort_keys=True))) for part, d in parts]
    checkers = [_Checker(c) for c in cfgs]
    body = _unet(checkers[0], checkers[1])
    if vae is not None:
        body["architecture"]["images"] = "pixels"
        body["architecture"]["autoencoder"] = _vae(checkers[2], body["architecture"]["latent_channels"])
    names = "UNet2DConditionModel with CLIPTextModel" + (" and AutoencoderKL" if vae is not None else "")
    errors = [e for c in checkers for e in c.errors]
    if errors:
        why = "; ".join(d.message for d in errors)
        raise _refuse(loc, f"{names} cannot hold this architecture: {why}")
    again = _reimported({"metagen_version": "1.0", "name": comp.spec.name, **body}, cfgs[0])
    theirs, ours = _fingerprint(again), _fingerprint(dict(resolved, **{"family built": comp.ctx.family}))
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        shown = ", ".join(f"{k}: {json.dumps(ours.get(k))}" for k in differ)
        raise _refuse(loc, f"{names} has no counterpart for {shown}", families=True)


def _meta_shapes(build) -> dict[str, tuple[int, ...]]:
    import torch

    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def pipeline_files(comp, resolved: dict, weights: dict[str, np.ndarray], max_shard_size: int = DEFAULT_SHARD_SIZE,
                   weights_loc: Loc | None = None, tokenizer: bool = False) -> dict[str, bytes]:
    """A diffusers pipeline folder: model_index.json, unet/ (UNet2DConditionModel),
    text_encoder/ (CLIPTextModel), scheduler/ (DDIMScheduler over the training noise
    schedule) and, when the images are pixels, vae/ (AutoencoderKL). The weights are
    placed by running the import's mappings on probes, as for transformers models."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from metagen.hf import clip_text_to_canonical, unet_to_canonical, vae_to_canonical

    arch = resolved["architecture"]
    unet, text, vae = pipeline_configs(arch, int(resolved["constraints"].get("context_window") or 0))
    _check_pipeline(comp, resolved, unet, text, vae)
    levels = len(arch["channel_mults"])
    shapes = {f"unet/{k}": v for k, v in _meta_shapes(lambda: UNet2DConditionModel.from_config(unet)).items()}
    text_cfg = transformers.CLIPTextConfig(**{k: v for k, v in text.items() if k != "architectures"})
    shapes.update({f"text_encoder/{k}": v for k, v in _meta_shapes(lambda: transformers.CLIPTextModel(text_cfg)).items()})
    parts = [("unet", "diffusion_pytorch_model"), ("text_encoder", "model")]
    if vae is not None:
        shapes.update({f"vae/{k}": v for k, v in _meta_shapes(lambda: AutoencoderKL.from_config(vae)).items()})
        parts.append(("vae", "diffusion_pytorch_model"))

    def convert(sd: dict) -> dict:
        part = {p: {k[len(p) + 1:]: v for k, v in sd.items() if k.startswith(p + "/")} for p, _ in parts}
        out = {**unet_to_canonical(part["unet"], levels), **clip_text_to_canonical(part["text_encoder"])}
        if vae is not None:
            out.update(vae_to_canonical(part["vae"], len(vae["block_out_channels"])))
        return out

    try:
        missing = sorted({n for n, _ in comp.model.walk_params()} - set(weights))
        if missing:
            raise ValueError(f"no {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        tensors = to_reference(weights, shapes, convert)
    except ValueError as exc:
        raise _refuse(weights_loc or comp.spec.loc(), f"the weights do not fit the spec: {exc}") from None
    # No safety checker and no feature extractor: StableDiffusionPipeline takes None for both.
    index = {"_class_name": "StableDiffusionPipeline", "requires_safety_checker": False,
             "safety_checker": [None, None], "feature_extractor": [None, None],
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "PreTrainedTokenizerFast"] if tokenizer else [None, None],
             "unet": ["diffusers", "UNet2DConditionModel"]}
    files = {"unet/config.json": _dump(unet), "text_encoder/config.json": _dump(text),
             "scheduler/scheduler_config.json": _dump(scheduler_config(comp.model.config["noise_schedule"]))}
    if vae is not None:
        index["vae"] = ["diffusers", "AutoencoderKL"]
        files["vae/config.json"] = _dump(vae)
    files["model_index.json"] = _dump(index)
    for part, stem in parts:
        mine = {k[len(part) + 1:]: v for k, v in tensors.items() if k.startswith(part + "/")}
        files.update({f"{part}/{name}": data for name, data in shard(mine, max_shard_size, stem).items()})
    return files
