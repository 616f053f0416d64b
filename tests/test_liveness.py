"""The Python emitters release what a forward no longer reads: a result rebinds the name
of a dead value of its hint, and the torch backend writes single-use temporaries in
place (backends/pyemit.py `result_names`, backends/torch_backend.py `inplace`). Both
are memory optimisations only: outputs and gradients must not move by a bit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import compile_to, example, load_module

from metagen.backends.torch_backend import TorchEmitter

LLAMA = example("reference", "llama2_7b.yaml")
CASES = {  # each writes something in place
    "llama": LLAMA,  # swiglu MLP, rope, KV cache
    "bert": example("reference", "bert_base_classifier.yaml"),  # embeddings summed into one buffer
    "gcn": example("graph", "citation_gcn.yaml"),  # a bias added into a linear's output
    "sd15_unet": example("reference", "sd15_unet.yaml"),  # rank-4 tensors left alone around it
}


def test_results_rebind_dead_names_and_mlp_writes_in_place(tmp_path):
    src = compile_to(tmp_path, LLAMA, "torch")[0].read_text()
    mlp = src[src.index("class MLP") : src.index("class Block")]
    assert "gate = F.silu(gate, inplace=True)" in mlp and "h = gate.mul_(up)" in mlp
    block = src[src.index("class Block") : src.index("class Block") + 900]
    # the residual stream and the branch reuse their names; the block's input is never written
    assert "x = x + h" in block and "h = self.mlp_norm(x)" in block and ".add_(" not in block
    assert not re.search(r"\bx_\d+ = x\b", src)  # the loop threads `x` itself


def _forward_and_grads(path, feed):
    mod = load_module(str(path))
    model = mod.init(0)
    inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in feed.items()}
    out = model(**inputs)
    tensors = [t for t in (out.values() if isinstance(out, dict) else [out]) if isinstance(t, torch.Tensor)]
    loss = sum(t.float().sum() for t in tensors if t.is_floating_point())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [t.detach() for t in tensors], grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_place_writes_change_no_output_and_no_gradient(case, tmp_path, monkeypatch):
    spec = CASES[case]
    for d in ("inplace", "plain"):
        (tmp_path / d).mkdir()
    written, _ = compile_to(tmp_path / "inplace", spec, "torch")
    monkeypatch.setattr(TorchEmitter, "INPLACE", {})  # nothing is fresh, nothing written in place
    plain, _ = compile_to(tmp_path / "plain", spec, "torch")
    monkeypatch.undo()
    assert re.search(r"\.(add|mul|sub)_\(|inplace=True", written.read_text())
    feed = load_module(str(written)).example_inputs(batch_size=2, seed=0)
    torch.manual_seed(0)
    out_a, grads_a = _forward_and_grads(written, feed)
    torch.manual_seed(0)
    out_b, grads_b = _forward_and_grads(plain, feed)
    assert len(out_a) == len(out_b) and all(torch.equal(a, b) for a, b in zip(out_a, out_b))
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a), case
