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


def _ours(tmp_path, spec, defines=()):
    path, comp = compile_to(tmp_path, spec, "torch", tiny=True, overrides=[tuple(d.split("=", 1)) for d in defines])
    return load_module(str(path))


def _random_weights(mod, seed=1):
    """Canonical weights where every tensor counts (init leaves biases at zero, norms at one)."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.standard_normal(v.shape) * 0.05).astype(np.float32)
            for k, v in mod.to_canonical(mod.init(0)).items()}


def _export(tmp_path, spec, defines=(), weights=None, extra=()):
    from safetensors.numpy import save_file

    args = ["export", "hf", spec, "--tiny", "-o", str(tmp_path / "hf")]
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


def test_round_trip_import_export(tmp_path):
    """HF folder -> import -> export gives back the same tensors under the same names."""
    from safetensors.numpy import load_file

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    hf.save_pretrained(tmp_path / "orig")
    spec, w = tmp_path / "imported.yaml", tmp_path / "w.safetensors"
    assert main(["import", "hf", str(tmp_path / "orig"), "-o", str(spec), "--weights-out", str(w)]) == 0
    assert main(["export", "hf", str(spec), "--weights", str(w), "-o", str(tmp_path / "back")]) == 0
    orig, back = load_file(str(tmp_path / "orig" / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(back) == sorted(k for k in orig if k != "lm_head.weight")  # the head is tied
    for k in back:
        assert np.array_equal(orig[k], back[k]), k
    model = _loaded(tmp_path / "back")
    x = torch.arange(10).reshape(1, 10) % 97
    with torch.no_grad():
        _close(model(x).logits.numpy(), hf.eval()(x).logits.numpy())


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


@pytest.mark.parametrize("spec,defines,why", [
    ("clip_vit_b32.yaml", (), "has no transformers counterpart"),
    ("sd15_unet.yaml", (), "has no transformers counterpart"),
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
    assert why in err and "supported: decoder LM with learned positions (GPT2LMHeadModel)" in err
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
