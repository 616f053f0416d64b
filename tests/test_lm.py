"""Decoder-only language models: exact counts, fitting, and the torch backend."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import example, load_module
from metagen.pipeline import compile_spec
from metagen.hf import gpt2_to_canonical, llama_to_canonical

TEXT_SPECS = [
    "tutorial/step1_minimal.yaml",
    "tutorial/step3_constraints.yaml",
    "tutorial/step4_training.yaml",
    "tutorial/pattern_edge.yaml",
    "tutorial/pattern_large_lm.yaml",
    "reference/gpt2_small.yaml",
    "reference/llama2_7b.yaml",
]


def test_gpt2_small_count_from_ir_and_torch(compiled):
    comp = compile_spec(example("reference", "gpt2_small.yaml"))
    assert comp.model.param_count() == 124_439_808
    path, _ = compiled(example("reference", "gpt2_small.yaml"), "torch", tiny=False)
    mod = load_module(str(path))
    with torch.device("meta"):
        model = mod.Model()
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_llama2_7b_count_from_ir():
    comp = compile_spec(example("reference", "llama2_7b.yaml"))
    assert comp.model.param_count() == 6_738_415_616


def test_step3_fits_within_budget():
    comp = compile_spec(example("tutorial", "step3_constraints.yaml"))
    n = comp.ctx.report["total_params"]
    assert 450_000_000 <= n <= 500_000_000, n
    mem = comp.ctx.report["memory"]["inference"]
    assert mem["total"] <= 8 * 2**30


def test_minimal_spec_is_coherent():
    comp = compile_spec(example("tutorial", "step1_minimal.yaml"))
    r = comp.ctx.report
    assert r["binding_constraint"] in ("parameter_budget.max", "memory_budget")
    assert r["total_params"] <= r["budget"]["max"]
    assert r["memory"]["inference"]["total"] <= r["budget"]["memory_budget_bytes"]
    if r["binding_constraint"] == "parameter_budget.max":
        assert r["total_params"] >= 0.9 * r["budget"]["max"]


def test_overrides_pin_dimensions():
    comp = compile_spec(example("tutorial", "step1_minimal.yaml"), overrides=[("architecture.layers", "6")])
    assert comp.ctx.arch["layers"] == 6
    assert "layers" in comp.ctx.pinned


@pytest.mark.parametrize("spec", TEXT_SPECS)
def test_tiny_forward_pass_runs_in_torch(compiled, spec):
    path, comp = compiled(example(*spec.split("/")), "torch")
    mod = load_module(str(path))
    state = mod.init(0)
    n_torch = sum(p.numel() for p in state.parameters())
    assert n_torch == comp.model.param_count()
    inputs = mod.example_inputs(batch_size=2)
    out = mod.run(state, inputs)
    assert list(out) == mod.OUTPUTS and mod.OUTPUTS[0] == "logits"  # then each layer's present keys and values
    assert out["logits"].shape == (2, inputs["input_ids"].shape[1], mod.CONFIG["vocab_size"])
    assert np.isfinite(out["logits"]).all()
    assert sorted(mod.to_canonical(state)) == sorted(name for name, *_ in mod._INITS)


def test_causality(compiled):
    """Changing a later token never changes earlier logits."""
    path, _ = compiled(example("reference", "llama2_7b.yaml"), "torch")
    mod = load_module(str(path))
    state = mod.init(0)
    x = mod.example_inputs(batch_size=1)
    a = mod.run(state, x)["logits"]
    x["input_ids"][0, -1] = (x["input_ids"][0, -1] + 1) % mod.CONFIG["vocab_size"]
    b = mod.run(state, x)["logits"]
    np.testing.assert_array_equal(a[:, :-1], b[:, :-1])
    assert not np.array_equal(a[:, -1], b[:, -1])


def test_init_is_deterministic_and_seeded(compiled):
    path, _ = compiled(example("tutorial", "step1_minimal.yaml"), "torch")
    mod = load_module(str(path))
    a, b, c = mod.init_arrays(0), mod.init_arrays(0), mod.init_arrays(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def _close(a, b):
    assert np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)), float(np.max(np.abs(a - b)))


def test_gpt2_matches_transformers(compiled):
    from transformers import GPT2Config, GPT2LMHeadModel

    path, comp = compiled(example("reference", "gpt2_small.yaml"), "torch")
    mod = load_module(str(path))
    c = mod.CONFIG
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(vocab_size=c["vocab_size"], n_positions=c["context_window"], n_embd=c["hidden_size"],
                   n_layer=c["layers"], n_head=c["heads"], n_inner=c["ffn_size"], activation_function="gelu_new",
                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ).eval()
    state = mod.load_canonical(gpt2_to_canonical(hf.state_dict()))
    x = mod.example_inputs(batch_size=2)
    ours = mod.run(state, x)["logits"]
    with torch.no_grad():
        ref = hf(torch.from_numpy(x["input_ids"])).logits.numpy()
    _close(ours, ref)


def test_llama_matches_transformers(compiled, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = tmp_path / "llama_gqa.yaml"
    spec.write_text(open(example("reference", "llama2_7b.yaml")).read().replace("kv_heads: 32", "kv_heads: 8"))
    path, comp = compiled(str(spec), "torch")
    mod = load_module(str(path))
    c = mod.CONFIG
    assert c["kv_heads"] < c["heads"]  # exercise grouped-query attention
    torch.manual_seed(0)
    hf = LlamaForCausalLM(
        LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["ffn_size"],
                    num_hidden_layers=c["layers"], num_attention_heads=c["heads"], num_key_value_heads=c["kv_heads"],
                    head_dim=c["head_dim"], rms_norm_eps=c["norm_eps"], rope_theta=c["rope_theta"],
                    max_position_embeddings=c["context_window"], tie_word_embeddings=False)
    ).eval()
    state = mod.load_canonical(llama_to_canonical(hf.state_dict()))
    x = mod.example_inputs(batch_size=2)
    ours = mod.run(state, x)["logits"]
    with torch.no_grad():
        ref = hf(torch.from_numpy(x["input_ids"])).logits.numpy()
    _close(ours, ref)
