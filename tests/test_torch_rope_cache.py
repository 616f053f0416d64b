"""The generated torch RoPE caches cos/sin per shape; a cache filled under
torch.inference_mode must not leak inference tensors into a training step."""

import torch

from conftest import example, load_module


def test_rope_cache_serves_inference_then_training(compiled):
    path, _ = compiled(example("reference", "llama2_7b.yaml"), "torch")
    mod = load_module(str(path))
    model = mod.init(0)
    ids = torch.from_numpy(mod.example_inputs(batch_size=2)["input_ids"])
    with torch.inference_mode():
        ref = model(input_ids=ids)["logits"].clone()
    model.train()
    logits = model(input_ids=ids)["logits"]
    logits.square().mean().backward()  # raises if a cached inference tensor was saved for backward
    assert model.tok_embeddings.weight.grad is not None
    assert torch.allclose(logits.detach(), ref, atol=1e-6)
