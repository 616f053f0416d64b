"""`metagen export hf`: a compiled decoder LM as a folder transformers loads, with the
same outputs as our generated module on the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import compile_to, example, load_module  # noqa: E402
from metagen.cli import main  # noqa: E402


def _close(a, b):
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)), float(np.max(np.abs(a - b)))


def _ours(tmp_path, spec, defines=(), tiny=True):
    path, comp = compile_to(tmp_path, spec, "torch", tiny=tiny, overrides=[tuple(d.split("=", 1)) for d in defines])
    return load_module(str(path))


def _random_weights(mod, seed=1):
    """Canonical weights where every tensor counts (init leaves biases at zero, norms at one)."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.standard_normal(v.shape) * 0.05).astype(np.float32)
            for k, v in mod.to_canonical(mod.init(0)).items()}


def _export(tmp_path, spec, defines=(), weights=None, extra=(), tiny=True):
    from safetensors.numpy import save_file

    args = ["export", "hf", spec, *(["--tiny"] if tiny else []), "-o", str(tmp_path / "hf")]
    for d in defines:
        args += ["-D", d]
    if weights is not None:
        save_file(weights, str(tmp_path / "w.safetensors"))
        args += ["--weights", str(tmp_path / "w.safetensors")]
    assert main(args + list(extra)) == 0
    return tmp_path / "hf"


def _loaded(folder, auto="AutoModelForCausalLM"):
    model, info = getattr(transformers, auto).from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model.eval()


def _same_logits(mod, state, model):
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = model(torch.from_numpy(x["input_ids"])).logits.numpy()
    _close(ref, np.asarray(mod.run(state, x)["logits"]))


CASES = [
    ("gpt2_small.yaml", (), "GPT2LMHeadModel"),
    ("llama2_7b.yaml", (), "LlamaForCausalLM"),
    ("llama2_7b.yaml", ("architecture.kv_heads=2", "architecture.tie_embeddings=true", "architecture.bias=true"),
     "LlamaForCausalLM"),
    ("llama2_7b.yaml", ("architecture.kv_heads=2", "architecture.qkv_bias=true"), "Qwen2ForCausalLM"),
    ("llama2_7b.yaml", ("architecture.rope_scaling=llama3", "architecture.rope_original_context=32"), "LlamaForCausalLM"),
]


@pytest.mark.parametrize("spec,defines,cls", CASES, ids=["gpt2", "llama", "llama-gqa-tied-bias", "qwen2", "llama3-rope"])
def test_from_pretrained_matches(tmp_path, spec, defines, cls):
    spec = example("reference", spec)
    mod = _ours(tmp_path, spec, defines)
    weights = _random_weights(mod)
    folder = _export(tmp_path, spec, defines, weights)
    model = _loaded(folder)
    assert type(model).__name__ == cls
    assert sum(p.numel() for p in model.parameters()) == sum(v.size for v in weights.values())
    _same_logits(mod, mod.load_canonical(weights), model)
    gen = json.loads((folder / "generation_config.json").read_text())
    assert set(gen) == {"bos_token_id", "eos_token_id"}


def test_init_weights_without_weights_file(tmp_path):
    spec = example("reference", "gpt2_small.yaml")
    mod = _ours(tmp_path, spec)
    folder = _export(tmp_path, spec, extra=["--seed", "3"])
    _same_logits(mod, mod.init(3), _loaded(folder))


def test_sharded(tmp_path):
    from safetensors.numpy import load_file

    spec = example("reference", "llama2_7b.yaml")
    mod = _ours(tmp_path, spec)
    weights = _random_weights(mod)
    folder = _export(tmp_path, spec, weights=weights, extra=["--max-shard-size", "100KB"])
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()
    assert sorted(p.name for p in folder.glob("*.safetensors")) == shards
    for s in shards:  # each shard holds at most 100 kB unless a single tensor is larger
        tensors = load_file(str(folder / s))
        assert len(tensors) == 1 or sum(t.nbytes for t in tensors.values()) <= 100_000
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in weights.values())
    _same_logits(mod, mod.load_canonical(weights), _loaded(folder))


def _perturbed(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _lm_inputs(vocab):
    return {"input_ids": torch.arange(12).reshape(1, 12) * 7 % vocab}


def _clip_inputs(vocab):
    ids = torch.arange(30).reshape(3, 10) * 7 % (vocab - 1)
    for row, pos in enumerate((3, 7, 9)):
        ids[row, pos] = vocab - 1  # the end-of-text token, the highest id
    return {"input_ids": ids, "pixel_values": torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))}


# family -> (reference model, the Auto class that loads the export, inputs, outputs compared)
ROUND_TRIPS = {
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)),
        "AutoModelForCausalLM", lambda: _lm_inputs(97), ("logits",)),
    "llama-gqa": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=32, rope_theta=500000.0, bos_token_id=0, eos_token_id=0)),
        "AutoModelForCausalLM", lambda: _lm_inputs(101), ("logits",)),
    "llama3-rope": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=70, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=0, rope_parameters={
            "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
        "AutoModelForCausalLM", lambda: _lm_inputs(70), ("logits",)),
    "mistral": (lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, sliding_window=None, bos_token_id=0, eos_token_id=0)),
        "AutoModelForCausalLM", lambda: _lm_inputs(64), ("logits",)),
    "mistral_window": (lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, sliding_window=4, bos_token_id=0, eos_token_id=0)),
        "AutoModelForCausalLM", lambda: _lm_inputs(64), ("logits",)),
    "qwen2": (lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=90, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)),
        "AutoModelForCausalLM", lambda: _lm_inputs(90), ("logits",)),
    "bert": (lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, type_vocab_size=2, num_labels=3, pad_token_id=0)),
        "AutoModelForSequenceClassification",
        lambda: {"input_ids": torch.arange(20).reshape(2, 10) * 7 % 90, "token_type_ids": (torch.arange(20).reshape(2, 10) > 12).long()},
        ("logits",)),
    "vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
        patch_size=4, num_channels=3, num_labels=5)),
        "AutoModelForImageClassification",
        lambda: {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))}, ("logits",)),
    "clip": (lambda: transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(vocab_size=80, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=16, eos_token_id=79, bos_token_id=0, pad_token_id=0),
        vision_config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                           image_size=16, patch_size=8),
        projection_dim=24)),
        "AutoModel", lambda: _clip_inputs(80), ("text_embeds", "image_embeds", "logits_per_image")),
    "resnet": (lambda: transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 2, 2], layer_type="basic", num_labels=5)),
        "AutoModelForImageClassification",
        lambda: {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))}, ("logits",)),
    "patchtst": (lambda: transformers.PatchTSTForPrediction(transformers.PatchTSTConfig(
        num_input_channels=2, context_length=20, prediction_length=6, patch_length=4, patch_stride=2, d_model=16,
        num_attention_heads=2, ffn_dim=32, num_hidden_layers=2)),
        "PatchTSTForPrediction",
        lambda: {"past_values": torch.randn(2, 20, 2, generator=torch.Generator().manual_seed(2)) * 2 + 3},
        ("prediction_outputs",)),
    "bert-mlm": (lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, type_vocab_size=2)),
        "AutoModelForMaskedLM",
        lambda: {"input_ids": torch.arange(20).reshape(2, 10) * 7 % 90, "token_type_ids": (torch.arange(20).reshape(2, 10) > 12).long()},
        ("logits",)),
    "cross-encoder": (lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, type_vocab_size=2, num_labels=1)),
        "AutoModelForSequenceClassification",
        lambda: {"input_ids": torch.arange(20).reshape(2, 10) * 7 % 90, "token_type_ids": (torch.arange(20).reshape(2, 10) > 12).long()},
        ("logits",)),
    "detr": (lambda: transformers.DetrForObjectDetection(transformers.DetrConfig(
        use_timm_backbone=False, backbone_config=transformers.ResNetConfig(out_features=["stage4"]), num_labels=4,
        num_queries=5, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, image_size=64)),
        "AutoModelForObjectDetection",
        lambda: {"pixel_values": torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))},
        ("logits", "pred_boxes")),
}


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f == "detr" else f for f in ROUND_TRIPS])
def test_round_trip_import_export(tmp_path, family):
    """HF folder -> import -> compile -> export -> from_pretrained: the same tensors
    under the same names and the same outputs."""
    from safetensors.numpy import load_file

    from metagen.hf import canonical_weights, read_config, spec_tree

    build, auto, inputs, outputs = ROUND_TRIPS[family]
    torch.manual_seed(0)
    hf = build()
    hf.config._attn_implementation = "eager"
    hf = _perturbed(hf)
    hf.save_pretrained(tmp_path / "orig")
    spec, w = tmp_path / "imported.yaml", tmp_path / "w.safetensors"
    assert main(["import", "hf", str(tmp_path / "orig"), "-o", str(spec), "--weights-out", str(w)]) == 0
    assert main(["export", "hf", str(spec), "--weights", str(w), "-o", str(tmp_path / "back")]) == 0
    orig, back = load_file(str(tmp_path / "orig" / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    tied = {"lm_head.weight"} if getattr(hf.config, "tie_word_embeddings", False) and "lm_head.weight" in orig else set()
    # the names save_pretrained writes (transformers 5 writes ViT's and DETR's under 4.x's names, as the export does)
    assert sorted(back) == sorted(set(orig) - tied)
    # the same tensors, bit for bit, read back through the import's name mapping
    _, conversion = spec_tree(read_config(str(tmp_path / "orig")), "m")
    a, b = (canonical_weights(str(tmp_path / f), conversion) for f in ("orig", "back"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    model = _loaded(tmp_path / "back", auto)
    model.config._attn_implementation = "eager"
    x = inputs()
    with torch.no_grad():
        a, b = model(**x), hf(**x)
    for name in outputs:
        _close(getattr(a, name).numpy(), getattr(b, name).numpy())


def test_bert_classifier(tmp_path):
    spec = example("reference", "bert_base_classifier.yaml")
    mod = _ours(tmp_path, spec)
    weights = _random_weights(mod)
    model = _loaded(_export(tmp_path, spec, weights=weights), "AutoModelForSequenceClassification")
    assert type(model).__name__ == "BertForSequenceClassification"
    assert not (tmp_path / "hf" / "generation_config.json").exists()
    x = mod.example_inputs(batch_size=2)
    feed = {k: torch.from_numpy(np.asarray(v)) for k, v in x.items()}
    with torch.no_grad():
        ref = model(**feed).logits.numpy()
    _close(ref, np.asarray(mod.run(mod.load_canonical(weights), x)["logits"]))


def test_vit_classifier(tmp_path):
    spec = example("reference", "vit_base_patch16.yaml")
    mod = _ours(tmp_path, spec)
    weights = _random_weights(mod)
    model = _loaded(_export(tmp_path, spec, weights=weights), "AutoModelForImageClassification")
    assert type(model).__name__ == "ViTForImageClassification"
    assert model.config.num_labels == weights["head.bias"].shape[0]
    x = mod.example_inputs(batch_size=2)
    (name,) = x
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(x[name])).logits.numpy()
    _close(ref, np.asarray(mod.run(mod.load_canonical(weights), x)["logits"]))


def test_clip(tmp_path):
    spec = example("reference", "clip_vit_b32.yaml")
    mod = _ours(tmp_path, spec)
    weights = _random_weights(mod)
    model = _loaded(_export(tmp_path, spec, weights=weights), "AutoModel")
    assert type(model).__name__ == "CLIPModel"
    assert sum(p.numel() for p in model.parameters()) == sum(v.size for v in weights.values())
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(x["input_ids"]), pixel_values=torch.from_numpy(x["pixel_values"]))
    ours = mod.run(mod.load_canonical(weights), x)
    for name in ("text_embeds", "image_embeds", "logits_per_image", "logits_per_text"):
        _close(getattr(ref, name).numpy(), np.asarray(ours[name]))


def _diffusers_loaded(folder):
    from diffusers import UNet2DConditionModel

    unet, info = UNet2DConditionModel.from_pretrained(str(folder / "unet"), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    text, info = transformers.CLIPTextModel.from_pretrained(str(folder / "text_encoder"), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return unet.eval(), text.eval()


def _noise(unet, text, x):
    with torch.no_grad():
        context = text(input_ids=torch.from_numpy(np.asarray(x["input_ids"]))).last_hidden_state
        return unet(torch.from_numpy(x["sample"]), torch.from_numpy(x["timestep"]), encoder_hidden_states=context).sample.numpy()


@pytest.mark.slow  # the SD U-Net's torch module and a sharded export; test_diffusers_round_trip covers the export fast
def test_diffusion_unet_as_a_diffusers_folder(tmp_path):
    pytest.importorskip("diffusers")
    spec = example("reference", "sd15_unet.yaml")
    mod = _ours(tmp_path, spec)
    weights = _random_weights(mod)
    folder = _export(tmp_path, spec, weights=weights, extra=["--max-shard-size", "100KB"])
    assert json.loads((folder / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").exists()  # sharded, diffusers' names
    unet, text = _diffusers_loaded(folder)
    assert sum(p.numel() for m in (unet, text) for p in m.parameters()) == sum(v.size for v in weights.values())
    x = mod.example_inputs(batch_size=2, seed=1)
    _close(_noise(unet, text, x), np.asarray(mod.run(mod.load_canonical(weights), x)["noise_pred"]))


def _vae_loaded(folder):
    from diffusers import AutoencoderKL

    vae, info = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return vae.eval()


@pytest.mark.parametrize("with_vae", [False, True], ids=["latents", "pixels"])
def test_diffusers_round_trip(tmp_path, with_vae):
    """diffusers pipeline folder -> import -> export -> from_pretrained: same tensors, same
    noise and, with an autoencoder, the same decoded images; the whole pipeline loads."""
    diffusers = pytest.importorskip("diffusers")
    from safetensors.numpy import load_file
    from test_hf_import import _perturbed, _sd_pipeline

    unet, text = _sd_pipeline(tmp_path / "sd")
    parts = [("unet", "diffusion_pytorch_model"), ("text_encoder", "model")]
    if with_vae:
        vae = _perturbed(diffusers.AutoencoderKL(
            block_out_channels=[16, 32], layers_per_block=1, latent_channels=4, norm_num_groups=8,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2))
        vae.save_pretrained(tmp_path / "sd" / "vae")
        parts.append(("vae", "diffusion_pytorch_model"))
    spec, w = tmp_path / "sd.yaml", tmp_path / "w.safetensors"
    assert main(["import", "hf", str(tmp_path / "sd"), "-o", str(spec), "--weights-out", str(w)]) == 0
    assert main(["export", "hf", str(spec), "--weights", str(w), "-o", str(tmp_path / "back")]) == 0
    for part, stem in parts:
        a, b = (load_file(str(tmp_path / f / part / f"{stem}.safetensors")) for f in ("sd", "back"))
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a), part
    unet2, text2 = _diffusers_loaded(tmp_path / "back")
    path, _ = compile_to(tmp_path, str(spec), "torch", tiny=False)
    x = load_module(str(path)).example_inputs(batch_size=2, seed=1)
    _close(_noise(unet2, text2, x), _noise(unet, text, x))
    # A latent-space U-Net has no autoencoder to ship: the pipeline gets vae=None.
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "back"), safety_checker=None, tokenizer=None,
                                                             **({} if with_vae else {"vae": None}))
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler.config.beta_schedule == "scaled_linear"
    if with_vae:
        vae2 = _vae_loaded(tmp_path / "back")
        z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32))
        with torch.no_grad():
            _close(vae2.decode(z).sample.numpy(), vae.decode(z).sample.numpy())


def test_pixels_pipeline_vae_matches_ours(tmp_path):
    """A pixels spec exported: diffusers' AutoencoderKL encodes and decodes as our vae modules do."""
    pytest.importorskip("diffusers")
    spec = example("reference", "sd15_pipeline.yaml")
    mod = _ours(tmp_path, spec)
    weights = _random_weights(mod)
    folder = _export(tmp_path, spec, weights=weights)
    assert json.loads((folder / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderKL"]
    vae = _vae_loaded(folder)
    unet, text = _diffusers_loaded(folder)
    assert sum(p.numel() for m in (unet, text, vae) for p in m.parameters()) == sum(v.size for v in weights.values())
    state = mod.load_canonical(weights)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    z = torch.from_numpy(rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
    with torch.no_grad():
        _close(vae.encode(image).latent_dist.parameters.numpy(), state.vae_encoder(image).numpy())
        _close(vae.decode(z).sample.numpy(), state.vae_decoder(z).numpy())


@pytest.mark.parametrize("spec,defines,why", [
    ("../tutorial/pattern_audio.yaml", (), "family audio_lm has no transformers or diffusers counterpart"),
    ("dqn_atari.yaml", (), "family rl_agent has no transformers or diffusers counterpart"),
    ("../retrieval/faq_embedder.yaml", (), "family sentence_embedder has no transformers or diffusers counterpart"),
    ("../retrieval/movie_recommender.yaml", (), "family two_tower has no transformers or diffusers counterpart"),
    ("../timeseries/sensor_anomaly.yaml", (), "family time_series as built here has no transformers or diffusers"),
    ("gpt2_small.yaml", ("architecture.norm_position=post",), "GPT2LMHeadModel has no counterpart for norm_position"),
    ("llama2_7b.yaml", ("architecture.bias=true", "architecture.qkv_bias=false"),
     "LlamaForCausalLM has no counterpart for qkv_bias: false"),
])
def test_refused_without_writing(tmp_path, capsys, spec, defines, why):
    args = ["export", "hf", example("reference", spec), "--tiny", "-o", str(tmp_path / "hf")]
    for d in defines:
        args += ["-D", d]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert why in err and "note: families with a transformers or diffusers counterpart: decoder_lm (GPT2, Llama" in err
    from metagen.hf_export import EXPORTERS

    assert " ... " not in err  # nothing clipped
    assert all(f"{family} (" in err for family, _ in EXPORTERS) and "diffusion_unet (StableDiffusionPipeline)" in err
    assert f"{spec}:" in err  # located in the spec
    assert not (tmp_path / "hf").exists()


def test_weights_that_do_not_fit(tmp_path, capsys):
    from safetensors.numpy import save_file

    save_file({"tok_embeddings.weight": np.zeros((3, 3), np.float32)}, str(tmp_path / "w.safetensors"))
    args = ["export", "hf", example("reference", "gpt2_small.yaml"), "--tiny", "--weights", str(tmp_path / "w.safetensors"),
            "-o", str(tmp_path / "hf")]
    assert main(args) == 1
    assert "w.safetensors:1:1: error: the weights do not fit the spec" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_bad_shard_size(capsys):
    with pytest.raises(SystemExit):
        main(["export", "hf", "x.yaml", "-o", "out", "--max-shard-size", "5XB"])
    assert "is not a size" in capsys.readouterr().err


def test_run_dir_keeps_its_seed(tmp_path):
    """A run folder exports its resolved spec with init(the seed it was synthesised with)."""
    spec = example("reference", "gpt2_small.yaml")
    mod = _ours(tmp_path, spec)
    assert main(["synth", spec, "--tiny", "--seed", "5", "--out", str(tmp_path / "runs"), "--run-id", "r"]) == 0
    assert main(["export", "hf", str(tmp_path / "runs" / "r"), "-o", str(tmp_path / "hf")]) == 0
    _same_logits(mod, mod.init(5), _loaded(tmp_path / "hf"))


def test_weights_missing_a_tensor(tmp_path, capsys):
    spec = example("reference", "gpt2_small.yaml")
    weights = _random_weights(_ours(tmp_path, spec))
    del weights["norm_f.weight"]
    from safetensors.numpy import save_file

    save_file(weights, str(tmp_path / "w.safetensors"))
    args = ["export", "hf", spec, "--tiny", "--weights", str(tmp_path / "w.safetensors"), "-o", str(tmp_path / "hf")]
    assert main(args) == 1
    assert "the weights do not fit the spec: no norm_f.weight" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


# spec -> export -> from_pretrained vs our module: (spec, -D settings, --tiny, the class that loads it, the class
# expected, our output -> theirs). A --tiny ResNet's stages (2, 1, 1, 1) are no ResNet depth: small sizes by -D.
SMALL_RESNET = ("architecture.layers=18", "architecture.hidden_size=8", "architecture.image_size=32",
                "task.num_classes=4", "constraints.parameter_budget.max=1M")
FROM_SPECS = {
    "resnet": ("reference/resnet50.yaml", SMALL_RESNET, False, "AutoModelForImageClassification",
               "ResNetForImageClassification", {"logits": "logits"}),
    "patchtst": ("reference/patchtst.yaml", (), True, "PatchTSTForPrediction", "PatchTSTForPrediction",
                 {"prediction": "prediction_outputs"}),
    "patchtst-layernorm": ("reference/patchtst.yaml", ("architecture.norm=layernorm",), True, "PatchTSTForPrediction",
                           "PatchTSTForPrediction", {"prediction": "prediction_outputs"}),
    "cross-encoder": ("retrieval/passage_reranker.yaml", (), True, "AutoModelForSequenceClassification",
                      "BertForSequenceClassification", {"score": "logits"}),
}


@pytest.mark.parametrize("case", list(FROM_SPECS))
def test_export_of_a_spec_matches_ours(tmp_path, case):
    import os

    rel, defines, tiny, auto, cls, outputs = FROM_SPECS[case]
    spec = example(*os.path.split(rel))
    mod = _ours(tmp_path, spec, defines, tiny=tiny)
    weights = _random_weights(mod)
    model = _loaded(_export(tmp_path, spec, defines, weights, tiny=tiny), auto)
    assert type(model).__name__ == cls
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in mod.Model().parameters())
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        theirs = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in x.items()})
    ours = mod.run(mod.load_canonical(weights), x)
    for mine, name in outputs.items():
        ref = getattr(theirs, name).numpy()
        _close(ref.reshape(np.shape(ours[mine])), np.asarray(ours[mine]))


def test_tiny_resnet_is_refused_with_the_way_out(tmp_path, capsys):
    assert main(["export", "hf", example("reference", "resnet50.yaml"), "--tiny", "-o", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "the --tiny model cannot be exported" in err and "export without --tiny, with small sizes set by -D" in err
    assert not (tmp_path / "hf").exists()


def test_llama3_config_holds_only_its_rope_settings(tmp_path):
    """transformers 5 rewrites a rope_scaling dict in place (adding rope_theta, which 4.x
    warns about); the config written is ours."""
    spec = example("reference", "llama2_7b.yaml")
    folder = _export(tmp_path, spec, ("architecture.rope_scaling=llama3", "architecture.rope_original_context=32"))
    config = json.loads((folder / "config.json").read_text())
    assert sorted(config["rope_scaling"]) == ["factor", "high_freq_factor", "low_freq_factor",
                                              "original_max_position_embeddings", "rope_type"]


def test_masked_lm_spec_as_bert_for_masked_lm(tmp_path):
    spec = tmp_path / "mlm.yaml"
    spec.write_text('metagen_version: "1.0"\nname: "mlm"\nmodality:\n  inputs: [text]\n  outputs: [text]\n'
                    'constraints:\n  parameter_budget:\n    max: "110M"\ntraining:\n  objective: [masked]\n')
    mod = _ours(tmp_path, str(spec))
    weights = _random_weights(mod)
    model = _loaded(_export(tmp_path, str(spec), weights=weights), "AutoModelForMaskedLM")
    assert type(model).__name__ == "BertForMaskedLM"
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in x.items()}).logits.numpy()
    _close(ref, np.asarray(mod.run(mod.load_canonical(weights), x)["logits"]))
