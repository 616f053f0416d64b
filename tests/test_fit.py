"""The fitter against every constraint: budgets, memory, latency, throughput, device,
with the exact diagnostics a user sees when no model meets them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, example
from metagen.compiler import cost
from metagen.compiler.devices import DEVICES
from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.pipeline import compile_spec

STEP3 = example("tutorial", "step3_constraints.yaml")
EDGE = example("tutorial", "pattern_edge.yaml")
LARGE = example("tutorial", "pattern_large_lm.yaml")
CMD = "<command line>:1:1"


def fit(spec: str, **overrides: str):
    """The report of a successful compile with `-D constraints.KEY=VALUE` overrides."""
    ov = [(f"constraints.{k.replace('__', '.')}", v) for k, v in overrides.items()]
    comp = compile_spec(spec, DiagnosticSink(), ov)
    return comp.ctx.report


def errors(spec: str, **overrides: str) -> list[str]:
    ov = [(f"constraints.{k.replace('__', '.')}", v) for k, v in overrides.items()]
    sink = DiagnosticSink()
    with pytest.raises(CompileError):
        compile_spec(spec, sink, ov)
    return [f"{d.loc}: {d.severity}: {d.message}" for d in sink.items]


def assert_every_bound_holds(r: dict) -> None:
    """What params_estimate.json says against what the spec asked for."""
    b, c = r["budget"], r["cost"]
    assert r["total_params"] <= b["max"]
    if not r["binding_constraint"].startswith(("latency", "throughput", "memory", "pinned")):
        assert r["total_params"] >= b["min"]
    assert r["memory"]["inference"]["total"] <= b["memory_budget_bytes"]
    lat = c["latency_bound"]["per_unit_s"]
    if lat is not None:
        assert c["latency_per_unit_s"] <= lat
    if c["throughput_bound"] is not None:
        assert c["throughput_per_s"] >= c["throughput_bound"]["per_s"]
    assert c["binding_constraint"] == r["binding_constraint"]


# ---------------------------------------------------------------- the tutorial specs


def test_step3_fills_the_budget_and_reports_the_cost():
    r = fit(STEP3)
    assert 450_000_000 <= r["total_params"] <= 500_000_000
    assert r["binding_constraint"] == "parameter_budget.max"
    c = r["cost"]
    assert c["device"]["class"] == "consumer_gpu"
    assert c["unit"] == "token"
    assert c["latency_bound"] == {"spec": "real-time", "per_unit_s": 0.05, "note": "<= 50 ms/token"}
    # Decode at the full 32k context is bandwidth-bound: weights plus KV cache per token.
    mem = r["memory"]["inference"]
    assert c["bound_by"] == "memory bandwidth"
    assert c["bytes_per_unit"] >= mem["weights"] + mem["kv_cache"]
    assert c["latency_per_unit_s"] == pytest.approx(c["bytes_per_unit"] / DEVICES["consumer_gpu"].bandwidth, rel=1e-5)
    assert c["flops_per_unit"] >= 2 * (r["total_params"] - r["by_module"]["tok_embeddings"])
    assert_every_bound_holds(r)


def test_edge_pattern_every_bound_holds():
    r = fit(EDGE)
    assert 45_000_000 <= r["total_params"] <= 50_000_000
    assert r["binding_constraint"] == "parameter_budget.max"
    assert r["memory"]["inference"]["total"] <= 512 * 1024**2
    c = r["cost"]
    assert c["device"]["class"] == "edge" and c["device"]["bandwidth_bytes_per_s"] == 68e9
    assert c["latency_bound"]["per_unit_s"] == 0.05 and c["latency_per_unit_s"] <= 0.05
    assert_every_bound_holds(r)


def test_large_lm_pattern_fits_and_says_batch_has_no_bound():
    r = fit(LARGE)
    assert 63_000_000_000 <= r["total_params"] <= 70_000_000_000
    assert r["binding_constraint"] == "parameter_budget.max"
    assert r["cost"]["latency_bound"] == {"spec": "batch", "per_unit_s": None, "note": "no latency bound ('batch')"}
    assert r["cost"]["throughput_batch"] >= 1
    assert_every_bound_holds(r)


def test_default_latency_is_batch():
    r = fit(example("tutorial", "step1_minimal.yaml"))
    assert r["cost"]["latency_bound"] == {
        "spec": "batch",
        "per_unit_s": None,
        "note": "no latency bound ('batch' is the spec's default)",
    }


def test_fit_time_only_on_request(tmp_path):
    """The fitter's time goes to stderr under METAGEN_FIT_TIME, never into outputs."""
    env = dict(os.environ, METAGEN_FIT_TIME="1")
    out = subprocess.run(
        [sys.executable, "-c", "from metagen.cli import console_metagenc; console_metagenc()", LARGE,
         "--target", "ir", "-o", str(tmp_path / "large.mgir")],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("metagen: fit-dimensions:")]
    assert len(line) == 1
    assert float(line[0].split(" in ")[1].split()[0]) >= 0  # the figure itself is bench/'s business
    assert "seconds" not in fit(EDGE)["fit"]


# ---------------------------------------------------------------- each constraint binding


def test_memory_budget_binds():
    # Inference memory is weights + KV cache + one decode step (no context x vocab
    # logits): step 3's 490M needs 2.6GB (1.6GB of it KV cache at 32k), so 1GB binds.
    r = fit(STEP3, memory_budget="1GB")
    assert r["binding_constraint"] == "memory_budget"
    assert r["total_params"] < 450_000_000
    assert r["memory"]["inference"]["total"] <= 1024**3
    assert_every_bound_holds(r)


def test_latency_binds():
    r = fit(STEP3, latency="1.2ms")
    assert r["binding_constraint"] == "latency"
    assert r["cost"]["latency_per_unit_s"] <= 0.0012
    assert_every_bound_holds(r)


def test_throughput_binds():
    # Batched to the memory budget: one sequence needs only its KV cache and one
    # step's working set, so the 50M int8 edge model batches high; 20k tok/s binds.
    r = fit(EDGE, throughput="20000 tok/s")
    assert r["binding_constraint"] == "throughput"
    assert r["cost"]["throughput_bound"] == {"spec": "20000 tok/s", "per_s": 20000.0}
    assert r["cost"]["throughput_per_s"] >= 20000
    assert_every_bound_holds(r)


def test_loose_latency_and_throughput_leave_the_budget_binding():
    r = fit(EDGE, latency="60 tok/s", throughput="100 tok/s")
    assert r["binding_constraint"] == "parameter_budget.max"
    assert r["cost"]["latency_bound"]["per_unit_s"] == pytest.approx(1 / 60, rel=1e-5)
    assert_every_bound_holds(r)


def test_pinned_depth_fits_width_to_latency():
    """With the depth pinned only widths are searched; the bound that rejected the
    next width binds."""
    ov = [("architecture.layers", "8"), ("constraints.latency", "1ms")]
    r = compile_spec(STEP3, DiagnosticSink(), ov).ctx.report
    assert r["fit"]["chosen"]["hidden_size"] == 1536 and "layers" not in r["fit"]["free"]
    assert r["binding_constraint"] == "latency"
    assert_every_bound_holds(r)


def test_overrides_change_device_and_latency():
    base = fit(STEP3)
    r = fit(STEP3, device="mobile", latency="near-real-time")
    assert r["cost"]["device"]["class"] == "mobile"
    assert r["cost"]["latency_bound"]["per_unit_s"] == 0.1
    assert r["budget"]["device"] == "mobile"
    # The same model is slower on a phone than on an RTX 4090.
    assert r["total_params"] == base["total_params"]
    assert r["cost"]["latency_per_unit_s"] > base["cost"]["latency_per_unit_s"]


# ---------------------------------------------------------------- diagnostics, exact


def test_latency_no_model_meets():
    assert errors(EDGE, latency="10us") == [
        f"{CMD}: error: latency '10us' (<= 10 us/token on edge) cannot be met: the smallest model needs "
        "46.5 us/token; relax latency to at least '47us' or choose a faster device"
    ]


SLOW_SPEC = """\
metagen_version: "1.0"
name: "slow"
modality:
  inputs: ["text"]
  outputs: ["text"]
architecture:
  hidden_size: 12288
constraints:
  parameter_budget:
    max: "20B"
  latency: "real-time"
  device: "mobile"
  memory_budget: "64GB"
  precision: "bf16"
"""


def test_latency_word_no_model_meets_points_into_the_spec(tmp_path):
    spec = tmp_path / "slow.yaml"
    spec.write_text(SLOW_SPEC)
    assert errors(str(spec)) == [
        f"{spec}:11:12: error: latency 'real-time' (<= 50 ms/token on mobile) cannot be met: the smallest "
        "model needs 62.4 ms/token; relax latency to at least '63ms' or choose a faster device"
    ]


def test_throughput_no_model_meets():
    assert errors(STEP3, throughput="200000 tok/s") == [
        f"{CMD}: error: throughput '200000 tok/s' (>= 200000 tokens/s on consumer_gpu) cannot be met: the "
        "fastest model reaches 120000 tokens/s; lower throughput to at most '120000 tok/s' or choose a faster device"
    ]


def test_explicit_min_unreachable_names_what_binds():
    assert errors(STEP3, parameter_budget__min="490M", memory_budget="1GB") == [
        "<command line>:1:2: error: no model reaches parameter_budget.min = 490M: the memory budget (1GB) binds "
        "at 442M parameters; lower min to at most 442M (441728000) or raise memory_budget"
    ]
    assert errors(STEP3, parameter_budget__min="480M", latency="1ms") == [
        "<command line>:1:1: error: no model reaches parameter_budget.min = 480M: latency '1ms' (<= 1 ms/token "
        "on consumer_gpu) binds at 370M parameters; lower min to at most 370M (370423296), relax latency or "
        "choose a faster device"
    ]


def test_max_below_smallest_model():
    # With the vocabulary pinned (the fitter may not shrink it), the tied 32000 x 64
    # embedding alone is over 1M.
    ov = [("constraints.parameter_budget.max", "1M"), ("architecture.vocab_size", "32000")]
    sink = DiagnosticSink()
    with pytest.raises(CompileError):
        compile_spec(STEP3, sink, ov)
    assert [f"{d.loc}: {d.severity}: {d.message}" for d in sink.items] == [
        f"{CMD}: error: no model fits parameter_budget.max = 1M: the smallest model this spec allows has "
        "2.11M parameters (2113728); raise max to at least 2113728"
    ]


def test_pinned_model_too_slow():
    msgs = errors(example("reference", "gpt2_small.yaml"), latency="1ms", device="edge")
    assert msgs == [
        "<command line>:1:1: error: latency '1ms' (<= 1 ms/token on edge) cannot be met: the model needs "
        "2.39 ms/token; relax latency to at least '2.4ms' or choose a faster device"
    ]


def test_rate_in_the_wrong_unit():
    assert errors(EDGE, throughput="2 img/s") == [
        f"{CMD}: error: throughput '2 img/s' counts images, but this model's unit of work is a token; "
        "write tok/s or a time per token"
    ]


# ---------------------------------------------------------------- the cost model itself


def test_flops_are_affine_in_depth_and_count_repeats():
    from metagen.compiler.families import FAMILIES

    comp = compile_spec(EDGE, DiagnosticSink())
    ctx, fam = comp.ctx, FAMILIES[comp.ctx.family]
    b = {"batch": 1, "seq": 128}
    f = []
    for layers in (1, 2, 3):
        ctx.arch["layers"] = layers
        f.append(cost.model_flops(fam.build(ctx), b))
    assert f[2] - f[1] == f[1] - f[0] > 0
    # One block at 128 tokens: at least 2 FLOPs per weight per token in its linears.
    d, ffn, kvh, hd = (ctx.arch[k] for k in ("hidden_size", "ffn_size", "kv_heads", "head_dim"))
    mlp = 3 if ctx.arch["activation"] in ("swiglu", "geglu") else 2
    linear_weights = d * d * 2 + 2 * d * kvh * hd + mlp * d * ffn
    assert f[1] - f[0] >= 2 * linear_weights * 128


def test_roofline_and_batching():
    dev = DEVICES["edge"]
    w = cost.Workload("token", flops=2_000_000, per_unit=1, weights=1_000_000, cache=500_000, activations=0)
    e = cost.estimate(dev, w, memory_budget=11_000_000)
    assert e.latency_s == pytest.approx(1_500_000 / dev.bandwidth)
    assert e.batch == 20  # (11M - 1M weights) / 0.5M cache per stream
    assert e.throughput == pytest.approx(20 / ((1_000_000 + 20 * 500_000) / dev.bandwidth))


@pytest.mark.parametrize(
    "seconds,text", [(0.0793, "80ms"), (0.08, "80ms"), (1.39e-4, "140us"), (2.5, "2.5s"), (0.00422, "4.3ms")]
)
def test_time_at_least(seconds, text):
    assert cost.time_at_least(seconds) == text
    assert cost.units.parse_time(text) >= seconds * (1 - 1e-9)


def test_latency_words_per_unit():
    for unit, words in cost.LATENCY_BOUNDS.items():
        assert set(words) == {"real-time", "near-real-time", "interactive", "batch", "offline"}
        assert words["batch"] is None and words["offline"] is None
        assert words["real-time"] < words["near-real-time"] < words["interactive"]
    w = cost.Workload("step", flops=1, per_unit=1, weights=1, cache=0, activations=0)
    assert cost.latency_bound("2 img/s", w).seconds == pytest.approx(1 / (2 * cost.DEFAULT_STEPS_PER_IMAGE))
    assert cost.throughput_bound("1 img/s", w).per_s == cost.DEFAULT_STEPS_PER_IMAGE
    assert cost.latency_bound("30fps", cost.Workload("image", 1, 1, 1, 0, 0)).seconds == pytest.approx(1 / 30)


# ---------------------------------------------------------------- constraints as objects


def test_fit_rule_names_every_registered_upper_bound():
    from metagen.compiler import constraints

    nouns = [c.noun for c in constraints.CONSTRAINTS if issubclass(c, constraints.UpperBound)]
    assert nouns == ["parameters", "memory", "latency", "throughput"]
    assert "(parameters, memory, latency, throughput)" in fit(EDGE)["fit"]["rule"]


def test_a_new_constraint_is_one_class(monkeypatch):
    """A bound registered from outside fit.py is fitted, named as binding, diagnosed
    when no model meets it, and listed in the fit rule, with no other change."""
    from metagen.compiler import constraints as cs

    class WeightBytes(cs.AffineBound):
        """Bytes of weights (a stand-in for a future constraint)."""

        key, field, noun = "test.weight_bytes", "memory_budget", "weight bytes"
        limit = 40_000_000

        def value(self, p):
            return p.work.weights

        def no_model(self, best):
            return f"weights need {best.work.weights} bytes, over {self.limit}"

        def check(self, p):
            return f"weights over {self.limit}" if self.broken(p) else None

    monkeypatch.setattr(cs, "CONSTRAINTS", [*cs.CONSTRAINTS, WeightBytes])
    r = fit(EDGE)
    assert r["binding_constraint"] == "test.weight_bytes"
    assert r["memory"]["inference"]["weights"] <= 40_000_000
    assert "throughput, weight bytes)" in r["fit"]["rule"]
    monkeypatch.setattr(WeightBytes, "limit", 1000)
    msgs = errors(EDGE)
    # At the spec's memory_budget (its `field`), with the smallest model's weights.
    assert msgs == [f"{EDGE}:12:18: error: weights need 2113728 bytes, over 1000"]


def test_every_inapplicable_bound_is_reported():
    """Latency and throughput in a unit that does not count tokens: both are named."""
    assert errors(EDGE, latency="2 img/s", throughput="2 img/s") == [
        f"{CMD}: error: latency '2 img/s' counts images, but this model's unit of work is a token; "
        "write tok/s or a time per token",
        f"<command line>:1:2: error: throughput '2 img/s' counts images, but this model's unit of work is a token; "
        "write tok/s or a time per token",
    ]
