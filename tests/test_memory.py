"""Issue 14 item 2: deployment precision, inference memory (weights + KV cache + one
decode step or forward) and training memory, reported separately; memory_budget binds
inference memory; training memory is checked against training.compute.hardware."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagen.cli import main
from metagen.compiler.devices import DEVICES, PRECISION_BYTES
from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.pipeline import compile_spec

EDGE_128K = """metagen_version: "1.0"
name: "edge128k"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  parameter_budget:
    max: "50M"
  device: "edge"
  memory_budget: "512MB"
  context_window: "128k"
"""


def _spec(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


def _report(path: str, *ov: tuple[str, str], tiny: bool = False) -> tuple[dict, DiagnosticSink]:
    sink = DiagnosticSink()
    comp = compile_spec(path, sink, list(ov), tiny=tiny)
    return comp.ctx.report, sink


def test_long_context_edge_lm_is_not_charged_context_x_vocab_logits(tmp_path):
    """The issue's reproducer: a 50M edge LM at 128k context was refused as needing
    7.98GB, nearly all logits decoding never materialises."""
    r, _ = _report(_spec(tmp_path, EDGE_128K))
    m, a = r["memory"]["inference"], r["fit"]["chosen"]
    assert r["memory"]["precision"] == "int8" and r["memory"]["precision_is_default"]
    assert m["total"] == m["weights"] + m["kv_cache"] + m["activations"] <= 512 * 2**20
    # Weights at one byte each (weight-only int8); the KV cache at 16 bits, batch 1.
    assert m["weights"] == r["total_params"]
    assert m["kv_cache"] == 2 * a["layers"] * a["kv_heads"] * a["head_dim"] * 131072 * 2
    # One decode step's working set is far below one context x vocab logits tensor.
    assert m["activations"] < 131072 * 32000 // 100


def test_precision_sets_weight_bytes_and_defaults_by_device(tmp_path):
    base = EDGE_128K.replace('  context_window: "128k"\n', "").replace('  memory_budget: "512MB"\n', "")
    base = base.replace('max: "50M"', 'max: "50M"\n    min: "1M"').replace("architecture", "x")
    pinned = base + "architecture:\n  hidden_size: 256\n  layers: 2\n"
    path = _spec(tmp_path, pinned)
    seen = {}
    for precision, nbytes in PRECISION_BYTES.items():
        r, _ = _report(path, ("constraints.precision", precision))
        m = r["memory"]
        assert m["precision"] == precision and not m["precision_is_default"]
        assert m["inference"]["weights"] == r["total_params"] * nbytes
        seen[precision] = m["inference"]["kv_cache"]
    # int8 is weight-only: the KV cache stays 16-bit; fp32 doubles it.
    assert seen["int8"] == seen["bf16"] == seen["fp16"] == seen["fp32"] // 2
    for device, dev in DEVICES.items():
        r, _ = _report(path, ("constraints.device", device))
        assert r["memory"]["precision"] == dev.precision and r["memory"]["precision_is_default"]
    assert {DEVICES[d].precision for d in ("edge", "mobile")} == {"int8"}
    # The older spelling still works; precision wins over it.
    r, _ = _report(path, ("constraints.dtype", "float32"))
    assert r["memory"]["precision"] == "fp32"
    r, _ = _report(path, ("constraints.dtype", "float32"), ("constraints.precision", "fp16"))
    assert r["memory"]["precision"] == "fp16"


def test_unknown_precision_is_a_located_error(tmp_path):
    path = _spec(tmp_path, EDGE_128K + '  precision: "int4"\n')
    sink = DiagnosticSink()
    with pytest.raises(CompileError):
        compile_spec(path, sink)
    assert [(d.loc.line, d.severity) for d in sink.items] == [(12, "error")]
    assert '"fp32", "bf16", "fp16", "int8"' in sink.items[0].message


def test_training_memory_is_its_own_figure(tmp_path):
    r, _ = _report(_spec(tmp_path, EDGE_128K), tiny=True)
    t, n = r["memory"]["training"], r["total_params"]
    # fp32 weights, fp32 gradients, two fp32 AdamW moments: 16 bytes per parameter.
    assert (t["weights"], t["gradients"], t["optimizer"]) == (4 * n, 4 * n, 8 * n)
    assert t["activations_checkpointed"] < t["activations"]
    assert t["total"] - t["total_checkpointed"] == t["activations"] - t["activations_checkpointed"]
    assert t["total"] > r["memory"]["inference"]["total"]


TRAIN = """metagen_version: "1.0"
name: "t"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  parameter_budget:
    max: "1B"
training:
  objective: ["autoregressive"]
  data:
    size: "1B tokens"
  compute:
    hardware: "{hw}"
    duration: "1000 days"
"""


def test_training_memory_checked_against_hardware(tmp_path):
    # 1B parameters need 16 GB of fp32 states alone: one T4 (16 GB) cannot hold
    # them; 8 H100s (states sharded 8 ways) can.
    path = _spec(tmp_path, TRAIN.format(hw="1xT4"))
    r, sink = _report(path)
    mem = r["training"]["memory"]
    assert not mem["fits"] and mem["device_memory_bytes"] == 16 * 10**9
    hits = [d for d in sink.warnings if "training.compute.hardware" in d.message]
    assert len(hits) == 1 and (hits[0].loc.line, hits[0].loc.col) == (14, 15)
    assert main(["validate", "-Werror", path]) == 1
    r, sink = _report(_spec(tmp_path, TRAIN.format(hw="8xH100")))
    assert r["training"]["memory"]["fits"]
    assert not [d for d in sink.warnings if "training.compute.hardware" in d.message]
    # A variant's memory size is read from its name.
    r, _ = _report(_spec(tmp_path, TRAIN.format(hw="1xA100-80GB")))
    assert r["training"]["memory"]["device_memory_bytes"] == 80 * 10**9


def test_every_family_reports_both_figures():
    root = Path(__file__).resolve().parents[1] / "examples"
    for spec in ("reference/vit_base_patch16.yaml", "reference/clip_vit_b32.yaml", "reference/sd15_unet.yaml",
                 "reference/bert_base_classifier.yaml", "tutorial/pattern_audio.yaml", "tutorial/pattern_taste.yaml"):
        r, _ = _report(str(root / spec), tiny=True)
        inf, tr = r["memory"]["inference"], r["memory"]["training"]
        assert inf["total"] == inf["weights"] + inf["kv_cache"] + inf["activations"], spec
        assert tr["total"] == tr["weights"] + tr["gradients"] + tr["optimizer"] + tr["activations"], spec
        assert 0 < tr["activations_checkpointed"] <= tr["activations"], spec
