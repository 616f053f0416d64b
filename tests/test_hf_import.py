"""`metagen import hf`: transformers configs and checkpoints in, specs and canonical
weights out; the compiled model matches the reference class exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import compile_to, load_module  # noqa: E402
from metagen.cli import main  # noqa: E402


def _close(a, b):
    assert a.shape == b.shape
    assert np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)), float(np.max(np.abs(a - b)))


def _perturbed(model):
    """Random init leaves biases at zero and norms at one; make every weight count."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _imported(tmp_path, hf, suffix=".yaml"):
    """Save `hf`, import it with the CLI, compile the spec to torch, load the weights."""
    from safetensors.numpy import load_file

    folder, spec, weights = tmp_path / "hf", tmp_path / f"imported{suffix}", tmp_path / "w.safetensors"
    hf.save_pretrained(folder)
    assert main(["import", "hf", str(folder), "-o", str(spec), "--weights-out", str(weights)]) == 0
    path, comp = compile_to(tmp_path, str(spec), "torch", tiny=False)
    mod = load_module(str(path))
    assert comp.model.param_count() == sum(p.numel() for p in hf.parameters())
    assert sum(p.numel() for p in mod.Model().parameters()) == sum(p.numel() for p in hf.parameters())
    return mod, mod.load_canonical(load_file(str(weights)))


def _lm_check(tmp_path, hf, suffix=".yaml"):
    mod, state = _imported(tmp_path, _perturbed(hf), suffix)
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x["input_ids"])).logits.numpy()
    _close(mod.run(state, x)["logits"], ref)


def test_gpt2(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0)
    _lm_check(tmp_path, transformers.GPT2LMHeadModel(cfg), suffix=".mg")


@pytest.mark.parametrize("tied", [False, True])
def test_llama_gqa(tmp_path, tied):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=32, tie_word_embeddings=tied,
        rope_theta=500000.0, bos_token_id=0, eos_token_id=0,
    )
    _lm_check(tmp_path, transformers.LlamaForCausalLM(cfg))
    assert "rope_theta: 500000" in (tmp_path / "imported.yaml").read_text()


def test_llama_with_biases(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=16, attention_bias=True, mlp_bias=True,
        bos_token_id=0, eos_token_id=0,
    )
    _lm_check(tmp_path, transformers.LlamaForCausalLM(cfg), suffix=".mg")


def test_llama_attention_bias_alone_is_refused(tmp_path, capsys):
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=4, attention_bias=True, mlp_bias=False)
    path = _config(tmp_path, cfg)
    assert main(["import", "hf", path, "-o", str(tmp_path / "l.yaml")]) == 1
    assert (f"{path}:{_line_col(path, 'mlp_bias')}: error: mlp_bias false is not supported (biases go on every "
            "linear layer or none, and attention_bias is true); supported: true") in capsys.readouterr().err


def test_mistral_without_sliding_window(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, sliding_window=None, bos_token_id=0, eos_token_id=0,
    )
    _lm_check(tmp_path, transformers.MistralForCausalLM(cfg))


def test_bert_sequence_classification(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, type_vocab_size=2, num_labels=3, pad_token_id=0,
    )
    cfg._attn_implementation = "eager"
    hf = _perturbed(transformers.BertForSequenceClassification(cfg))
    mod, state = _imported(tmp_path, hf)
    x = mod.example_inputs(batch_size=2)
    assert x["token_type_ids"].max() > 0
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
    _close(mod.run(state, x)["logits"], ref)


def test_vit_image_classification(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
        patch_size=4, num_channels=3, num_labels=5,
    )
    cfg._attn_implementation = "eager"
    hf = _perturbed(transformers.ViTForImageClassification(cfg))
    mod, state = _imported(tmp_path, hf)
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x["pixel_values"])).logits.numpy()
    _close(mod.run(state, x)["logits"], ref)


def test_clip(tmp_path):
    torch.manual_seed(0)
    vocab = 80
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=16, eos_token_id=vocab - 1,
                         bos_token_id=0, pad_token_id=0),
        vision_config=dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                           image_size=16, patch_size=8),
        projection_dim=24,
    )
    cfg._attn_implementation = "eager"
    hf = _perturbed(transformers.CLIPModel(cfg))
    mod, state = _imported(tmp_path, hf)
    x = mod.example_inputs(batch_size=3)
    x["input_ids"] = np.minimum(x["input_ids"], vocab - 2)
    for row, pos in enumerate((3, 9, x["input_ids"].shape[1] - 1)):
        x["input_ids"][row, pos] = vocab - 1
    with torch.no_grad():
        r = hf(input_ids=torch.from_numpy(x["input_ids"]), pixel_values=torch.from_numpy(x["pixel_values"]))
    got = mod.run(state, x)
    for name in mod.OUTPUTS:
        _close(got[name], getattr(r, name).numpy())


def test_sharded_and_pickled_checkpoints_convert_alike(tmp_path):
    from metagen.hf import load_state_dict

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_positions=8, n_embd=16, n_layer=2,
                                                               n_head=2, bos_token_id=0, eos_token_id=0))
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    (tmp_path / "pt").mkdir()
    torch.save(hf.state_dict(), tmp_path / "pt" / "pytorch_model.bin")
    a, b = load_state_dict(str(tmp_path / "sharded")), load_state_dict(str(tmp_path / "pt"))
    for k in a:  # the tied head may be saved once or twice
        np.testing.assert_array_equal(a[k], b[k])


def _config(tmp_path, cfg) -> str:
    path = tmp_path / "config.json"
    cfg.to_json_file(str(path))
    return str(path)


def _line_col(path: str, key: str) -> str:
    for n, line in enumerate(open(path).read().splitlines(), 1):
        if f'"{key}"' in line:
            return f"{n}:{line.index(chr(34) + key) + 1}"
    raise AssertionError(key)


def test_unsupported_field_is_located_and_nothing_is_written(tmp_path, capsys):
    cfg = transformers.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, hidden_act="gelu")
    path = _config(tmp_path, cfg)
    out = tmp_path / "m.yaml"
    assert main(["import", "hf", path, "-o", str(out), "--weights-out", str(tmp_path / "w.safetensors")]) == 1
    err = capsys.readouterr().err
    assert (f"{path}:{_line_col(path, 'hidden_act')}: error: hidden_act \"gelu\" is not supported "
            "(the gated feed-forward is SwiGLU); supported: \"silu\"") in err
    assert not out.exists() and not (tmp_path / "w.safetensors").exists()


def test_mistral_sliding_window(tmp_path):
    """Mistral's sliding_window becomes architecture.sliding_window; the example
    sequence is longer than the window, so the window changes the logits compared."""
    torch.manual_seed(0)
    cfg = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, sliding_window=3, bos_token_id=0, eos_token_id=0,
    )
    _lm_check(tmp_path, transformers.MistralForCausalLM(cfg))
    assert "sliding_window: 3" in (tmp_path / "imported.yaml").read_text()


def test_unknown_model_type_is_located(tmp_path, capsys):
    path = _config(tmp_path, transformers.GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                        num_hidden_layers=1, num_attention_heads=4))
    assert main(["import", "hf", path, "-o", str(tmp_path / "q.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{_line_col(path, 'model_type')}: error: model_type \"gpt_neox\" is not supported; supported:" in err


@pytest.mark.parametrize("tied", [False, True])
def test_qwen2_biases_on_qkv_only(tmp_path, tied):
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=90, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=32, rope_theta=1000000.0, tie_word_embeddings=tied,
        bos_token_id=0, eos_token_id=0,
    )
    hf = transformers.Qwen2ForCausalLM(cfg)
    assert hf.model.layers[0].self_attn.q_proj.bias is not None and hf.model.layers[0].self_attn.o_proj.bias is None
    _lm_check(tmp_path, hf)
    spec = (tmp_path / "imported.yaml").read_text()
    assert "qkv_bias: true" in spec and "bias: false" in spec


def test_qwen2_sliding_window_is_refused(tmp_path, capsys):
    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, use_sliding_window=True, sliding_window=8, max_window_layers=1)
    path = _config(tmp_path, cfg)
    assert main(["import", "hf", path, "-o", str(tmp_path / "q.yaml")]) == 1
    err = capsys.readouterr().err
    assert (f"{path}:{_line_col(path, 'use_sliding_window')}: error: use_sliding_window true is not supported "
            "(Qwen2 slides the window over some layers only (max_window_layers); the IR's window is every layer's); "
            "supported: false") in err


@pytest.mark.parametrize("arch,message", [
    ("rope_scaling_factor: 4", ":8:24: error: architecture: rope_scaling_factor applies to rope_scaling: llama3; rope_scaling is none"),
    ('rope_scaling: "llama3"\n  rope_low_freq_factor: 4', ":9:25: error: architecture: rope_low_freq_factor 4.0 must be below rope_high_freq_factor 4.0"),
    ('rope_scaling: "yarn"', ':8:17: error:'),
])
def test_rope_scaling_settings_are_checked_at_their_line(tmp_path, capsys, arch, message):
    spec = tmp_path / "r.yaml"
    spec.write_text('metagen_version: "1.0"\nname: "r"\nmodality:\n  inputs: [text]\n  outputs: [text]\n'
                    f"architecture:\n  layers: 1\n  {arch}\n", encoding="utf-8")
    assert main(["validate", str(spec), "--tiny"]) == 1
    assert f"{spec}{message}" in capsys.readouterr().err


def test_qkv_bias_from_a_hand_written_spec(tmp_path):
    """qkv_bias is a spec key: biases on the q/k/v projection only, counted exactly."""
    spec = tmp_path / "q.yaml"
    spec.write_text(
        'metagen_version: "1.0"\nname: "q"\nmodality:\n  inputs: [text]\n  outputs: [text]\n'
        "architecture:\n  bias: false\n  qkv_bias: true\n", encoding="utf-8")
    path, comp = compile_to(tmp_path, str(spec), "torch", tiny=True)
    names = {n for n, _ in comp.model.walk_params()}
    assert "blocks.0.attn.qkv_proj.bias" in names and "blocks.0.attn.o_proj.bias" not in names
    assert not any(n.startswith("blocks.0.mlp") and n.endswith(".bias") for n in names)
    mod = load_module(str(path))
    assert sum(p.numel() for p in mod.Model().parameters()) == comp.model.param_count()


def test_nested_field_is_located(tmp_path, capsys):
    cfg = transformers.CLIPConfig(text_config=dict(hidden_act="tanh"))
    path = _config(tmp_path, cfg)
    assert main(["import", "hf", path, "-o", str(tmp_path / "c.yaml")]) == 1
    err = capsys.readouterr().err
    text = open(path).read()
    start = text.index('"text_config"')
    line = text[: text.index('"hidden_act"', start)].count("\n") + 1
    col = len(text[: text.index('"hidden_act"', start)].rsplit("\n", 1)[-1]) + 1
    assert f"{path}:{line}:{col}: error: text_config.hidden_act \"tanh\" is not supported" in err


def test_key_locations_follow_nesting():
    from metagen.hf import key_locations

    text = '{\n  "a": {"b": 1, "c": [ {"d": 2} ]},\n  "e": "x\\"y", "f": null\n}'
    locs = key_locations(text)
    assert locs[("a",)] == (2, 3) and locs[("a", "b")] == (2, 9) and locs[("a", "c")] == (2, 17)
    assert locs[("e",)] == (3, 3) and locs[("f",)] == (3, 16)
    assert json.loads(text)["e"] == 'x"y'


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def test_llama3_rope_scaling(tmp_path):
    """Llama 3.1's rope scaling, with head_dim 8 and an original context of 64 so the
    four frequencies fall in each of its three regimes (kept, interpolated, divided)."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=70, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, rope_parameters=dict(LLAMA3_ROPE),
        bos_token_id=0, eos_token_id=0,
    )
    hf = transformers.LlamaForCausalLM(cfg)
    _lm_check(tmp_path, hf)
    spec = (tmp_path / "imported.yaml").read_text()
    for line in ('rope_scaling: "llama3"', "rope_scaling_factor: 8", "rope_original_context: 64"):
        assert line in spec, spec
    # the scaling changes the outputs: the same weights without it are off the tolerance
    plain = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**cfg.to_dict(), "rope_parameters": {
        "rope_type": "default", "rope_theta": 10000.0}})).eval()
    plain.load_state_dict(hf.state_dict())
    x = torch.arange(16).reshape(1, 16) % 70
    with torch.no_grad():
        a, b = hf(x).logits.numpy(), plain(x).logits.numpy()
    assert np.max(np.abs(a - b) / (1e-5 + 1e-4 * np.abs(b))) > 10


def test_llama3_rope_scaling_in_transformers4_spelling(tmp_path):
    """transformers 4 wrote rope_theta at the top and rope_scaling (its kind as `type`
    in older files): the same spec as transformers 5's rope_parameters."""
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=4, max_position_embeddings=256, rope_parameters=dict(LLAMA3_ROPE))
    path = _config(tmp_path, cfg)
    assert main(["import", "hf", path, "-o", str(tmp_path / "v5.yaml")]) == 0
    data = json.loads(open(path).read())
    rope = data.pop("rope_parameters")
    data["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    data["rope_scaling"] = rope
    old = tmp_path / "v4" / "config.json"
    old.parent.mkdir()
    old.write_text(json.dumps(data, indent=2))
    assert main(["import", "hf", str(old), "-o", str(tmp_path / "v4.yaml")]) == 0
    strip = lambda t: "\n".join(l for l in t.splitlines() if not l.startswith(("description", "name")))
    assert strip((tmp_path / "v4.yaml").read_text()) == strip((tmp_path / "v5.yaml").read_text())


def test_other_rope_scaling_is_refused(tmp_path, capsys):
    rope = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                   num_attention_heads=4, max_position_embeddings=256, rope_parameters=rope)
    path = _config(tmp_path, cfg)
    assert main(["import", "hf", path, "-o", str(tmp_path / "l.yaml")]) == 1
    text = open(path).read()
    at = text.index('"rope_type"', text.index('"rope_parameters"'))
    line, col = text[:at].count("\n") + 1, at - text.rfind("\n", 0, at)
    assert (f"{path}:{line}:{col}: error: rope_parameters.rope_type \"linear\" is not supported "
            "(unscaled or Llama 3's scaling); supported: \"default\", \"llama3\"") in capsys.readouterr().err


def _sd_pipeline(folder, **unet_overrides):
    """A tiny diffusers text-to-image pipeline folder: unet/, text_encoder/, model_index.json."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    kw = dict(sample_size=8, block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, cross_attention_dim=32,
              attention_head_dim=2, norm_num_groups=8)
    kw.update(unet_overrides)
    unet = _perturbed(UNet2DConditionModel(**kw))
    text = _perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=16, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=99, pad_token_id=0)))
    unet.save_pretrained(folder / "unet")
    text.save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return unet, text


def test_diffusers_unet_pipeline(tmp_path):
    from safetensors.numpy import load_file

    unet, text = _sd_pipeline(tmp_path / "sd")
    spec, weights = tmp_path / "sd.yaml", tmp_path / "sd.safetensors"
    assert main(["import", "hf", str(tmp_path / "sd"), "-o", str(spec), "--weights-out", str(weights)]) == 0
    path, comp = compile_to(tmp_path, str(spec), "torch", tiny=False)
    mod = load_module(str(path))
    want = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in text.parameters())
    assert comp.model.param_count() == want == sum(p.numel() for p in mod.Model().parameters())
    state = mod.load_canonical(load_file(str(weights)))
    x = mod.example_inputs(batch_size=2, seed=1)
    with torch.no_grad():
        context = text(input_ids=torch.from_numpy(x["input_ids"])).last_hidden_state
        ref = unet(torch.from_numpy(x["sample"]), torch.from_numpy(x["timestep"]), encoder_hidden_states=context)
    _close(mod.run(state, x)["noise_pred"], ref.sample.numpy())


def test_diffusers_unsupported_field_is_located(tmp_path, capsys):
    _sd_pipeline(tmp_path / "sd", use_linear_projection=True)
    out = tmp_path / "sd.yaml"
    assert main(["import", "hf", str(tmp_path / "sd"), "-o", str(out)]) == 1
    path = str(tmp_path / "sd" / "unet" / "config.json")
    assert (f"{path}:{_line_col(path, 'use_linear_projection')}: error: use_linear_projection true is not supported "
            "(spatial transformers project with 1x1 convs); supported: false") in capsys.readouterr().err
    assert not out.exists()


def test_lone_unet_config_asks_for_the_pipeline(tmp_path, capsys):
    _sd_pipeline(tmp_path / "sd")
    path = str(tmp_path / "sd" / "unet" / "config.json")
    assert main(["import", "hf", path, "-o", str(tmp_path / "u.yaml")]) == 1
    assert f"{path}:{_line_col(path, '_class_name')}: error: _class_name \"UNet2DConditionModel\": a diffusers model" in (
        capsys.readouterr().err)


def test_checkpoint_that_disagrees_with_its_config_is_refused(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_positions=8, n_embd=16, n_layer=2,
                                                               n_head=2, bos_token_id=0, eos_token_id=0))
    hf.save_pretrained(tmp_path / "m")
    sd = {k: v.clone() for k, v in hf.state_dict().items() if k not in ("transformer.wpe.weight", "lm_head.weight")}
    sd["transformer.wpe.weight"] = torch.zeros(9, 16)  # one position too many
    save_file(sd, str(tmp_path / "m" / "model.safetensors"))
    out = tmp_path / "w.safetensors"
    assert main(["import", "hf", str(tmp_path / "m"), "-o", str(tmp_path / "m.yaml"), "--weights-out", str(out)]) == 1
    assert ("error: the checkpoint does not match its config: pos_embeddings.weight has shape [9, 16], the spec [8, 16]"
            in capsys.readouterr().err)
    assert not out.exists() and not (tmp_path / "m.yaml").exists()


def test_diffusers_pipeline_with_vae_imports_the_autoencoder(tmp_path):
    from diffusers import AutoencoderKL
    from safetensors.numpy import load_file

    unet, text = _sd_pipeline(tmp_path / "sd")
    vae = _perturbed(AutoencoderKL(block_out_channels=[16, 32], layers_per_block=1, latent_channels=4, norm_num_groups=8,
                                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2))
    vae.save_pretrained(tmp_path / "sd" / "vae")
    spec, weights = tmp_path / "sd.yaml", tmp_path / "sd.safetensors"
    assert main(["import", "hf", str(tmp_path / "sd"), "-o", str(spec), "--weights-out", str(weights)]) == 0
    assert "images: \"pixels\"" in spec.read_text()
    path, comp = compile_to(tmp_path, str(spec), "torch", tiny=False)
    mod = load_module(str(path))
    want = sum(p.numel() for m in (unet, text, vae) for p in m.parameters())
    assert comp.model.param_count() == want
    state = mod.load_canonical(load_file(str(weights)))
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32))
    with torch.no_grad():
        _close(state.vae_decoder(z).numpy(), vae.decode(z).sample.numpy())


# ------------------------------------------ ResNet, DETR, PatchTST, cross-encoder


def _perturbed_with_stats(model):
    """Parameters moved and batch norm's running statistics set, so a wrong fold shows."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, buf in _perturbed(model).named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.3)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return model.eval()


def test_resnet(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 2, 2],
                                    layer_type="basic", num_labels=5)
    hf = _perturbed_with_stats(transformers.ResNetForImageClassification(cfg))
    mod, state = _imported(tmp_path, hf)
    assert "layers: 18" in (tmp_path / "imported.yaml").read_text()
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x["pixel_values"])).logits.numpy()
    _close(mod.run(state, x)["logits"], ref)


def test_patchtst(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.PatchTSTConfig(num_input_channels=2, context_length=20, prediction_length=6, patch_length=4,
                                      patch_stride=2, d_model=16, num_attention_heads=2, ffn_dim=32, num_hidden_layers=2)
    hf = _perturbed_with_stats(transformers.PatchTSTForPrediction(cfg))
    mod, state = _imported(tmp_path, hf)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(3, 20, 2)).astype(np.float32)
    with torch.no_grad():
        ref = hf(past_values=torch.from_numpy(x)).prediction_outputs.numpy()
    _close(mod.run(state, {"past_values": x})["prediction"], ref)


def test_bert_with_one_label_is_a_cross_encoder(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=24, type_vocab_size=2, num_labels=1)
    cfg._attn_implementation = "eager"
    hf = _perturbed(transformers.BertForSequenceClassification(cfg))
    mod, state = _imported(tmp_path, hf)
    assert mod.OUTPUTS == ["score"] and 'type: "ranking"' in (tmp_path / "imported.yaml").read_text()
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()[:, 0]
    _close(mod.run(state, x)["score"], ref)


def test_bert_masked_lm(tmp_path):
    """`architectures: ["BertForMaskedLM"]`: the masked_lm family, its head on the tied embeddings."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=24, type_vocab_size=2)
    cfg._attn_implementation = "eager"
    hf = _perturbed(transformers.BertForMaskedLM(cfg))
    mod, state = _imported(tmp_path, hf)
    assert 'objective: ["masked"]' in (tmp_path / "imported.yaml").read_text()
    x = mod.example_inputs(batch_size=2)
    with torch.no_grad():
        ref = hf(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()
    _close(mod.run(state, x)["logits"], ref)


@pytest.mark.slow  # the ResNet-50 backbone (23.5M parameters): ~20 s
def test_detr(tmp_path):
    """transformers 5 saves DETR under 4.x's names; the import reads either."""
    torch.manual_seed(0)
    cfg = transformers.DetrConfig(
        use_timm_backbone=False, backbone_config=transformers.ResNetConfig(out_features=["stage4"]), num_labels=4,
        num_queries=5, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        image_size=64)  # not a DetrConfig field (DETR takes any size; ours is fixed): kept in config.json, read by the import
    cfg._attn_implementation = "eager"
    hf = _perturbed_with_stats(transformers.DetrForObjectDetection(cfg))
    mod, state = _imported(tmp_path, hf)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x))
    got = mod.run(state, {"pixel_values": x})
    _close(got["logits"], ref.logits.numpy())
    _close(got["pred_boxes"], ref.pred_boxes.numpy())


@pytest.mark.parametrize("cfg,key,message", [
    (lambda: transformers.ResNetConfig(depths=[2, 1, 1, 1], layer_type="bottleneck"), "depths",
     'depths [2, 1, 1, 1] is not supported with layer_type "bottleneck"'),
    (lambda: transformers.ResNetConfig(downsample_in_bottleneck=True), "downsample_in_bottleneck",
     "downsample_in_bottleneck true is not supported (a bottleneck strides on its 3x3 convolution (v1.5))"),
    (lambda: transformers.PatchTSTConfig(loss="nll"), "loss", 'loss "nll" is not supported'),
    (lambda: transformers.PatchTSTConfig(pooling_type="max"), "pooling_type", 'pooling_type "max" is not supported'),
    (lambda: transformers.DetrConfig(use_timm_backbone=False, encoder_layers=2, decoder_layers=3), "decoder_layers",
     "decoder_layers 3 is not supported (the decoder's is the encoder's (encoder_layers)); supported: 2"),
    (lambda: transformers.DetrConfig(use_timm_backbone=False, dilation=True), "dilation",
     "dilation true is not supported (the last stage strides); supported: false"),
], ids=["resnet-depths", "resnet-v1", "patchtst-nll", "patchtst-max", "detr-layers", "detr-dilation"])
def test_unsupported_vision_and_time_series_fields_are_located(tmp_path, capsys, cfg, key, message):
    path = _config(tmp_path, cfg())
    assert main(["import", "hf", path, "-o", str(tmp_path / "m.yaml")]) == 1
    assert f"{path}:{_line_col(path, key)}: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "m.yaml").exists()
