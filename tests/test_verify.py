"""`metagen verify`: the tolerance rule, the three-backend comparison on example
specs at --tiny, and that a wrong emitter makes it fail (exit 1)."""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest

from conftest import example

from metagen.verify import ATOL, RTOL, compare, verify_spec


def test_tolerance_is_contract_rule():
    b = np.array([0.0, 1.0, -100.0], dtype=np.float32)
    edge = b + (ATOL + RTOL * np.abs(b)) * 0.99
    assert compare("y", "p", edge, b).ok
    beyond = b.copy()
    beyond[2] += 1.1 * (ATOL + RTOL * 100.0)
    r = compare("y", "p", beyond, b)
    assert not r.ok and r.tol_used > 1.0


def test_shape_mismatch_and_nan_fail():
    assert not compare("y", "p", np.zeros((2, 3)), np.zeros((3, 2))).ok
    assert not compare("y", "p", np.array([np.nan]), np.array([0.0])).ok
    assert compare("y", "p", np.array([np.inf]), np.array([np.inf])).ok


def _verify(spec: str) -> tuple[bool, str]:
    from metagen.pipeline import compile_spec

    buf = io.StringIO()
    ok = verify_spec(compile_spec(spec, tiny=True), seed=0, stream=buf)
    return ok, buf.getvalue()


TUTORIAL = sorted(glob.glob(example("tutorial", "*.yaml")))
FAST = [example("reference", "gpt2_small.yaml"), example("reference", "llama2_7b.yaml")]
SPECS = FAST + [pytest.param(s, marks=pytest.mark.slow) for s in TUTORIAL] + [
    pytest.param(s, marks=pytest.mark.slow)
    for s in sorted(glob.glob(example("reference", "*.yaml")))
    if s not in FAST
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: os.path.splitext(os.path.basename(s))[0])
def test_verify_example_tiny(spec):
    ok, text = _verify(spec)
    assert ok, text
    for pair in ("flax vs torch", "onnx vs torch", "onnx vs flax"):
        assert pair in text
    assert text.rstrip().endswith("OK")


def test_wrong_flax_emitter_is_a_mismatch(monkeypatch, capsys):
    from metagen import cli
    from metagen.backends import flax_backend

    monkeypatch.setitem(flax_backend.OPS, "gelu_tanh", lambda a, x: f"jax.nn.relu({x})")
    code = cli.main(["verify", example("reference", "gpt2_small.yaml"), "--tiny"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and out.rstrip().endswith("MISMATCH")
    assert any(line.split()[1:4] == ["flax", "vs", "torch"] and line.endswith("FAIL") for line in out.splitlines())


@pytest.mark.parametrize(
    "argv, seed",
    [([], 0), (["-D", "reproducibility.seed=7"], 7), (["-D", "reproducibility.seed=7", "--seed", "3"], 3)],
    ids=["default", "spec", "flag"],
)
def test_verify_seed_is_the_spec_seed_unless_given(monkeypatch, argv, seed):
    """`metagen verify` draws the weights from the seed synth would use."""
    import metagen.verify
    from metagen.cli import main

    used = []
    monkeypatch.setattr(metagen.verify, "verify_spec", lambda comp, seed, stream: used.append(seed) or True)
    assert main(["verify", example("tutorial", "step1_minimal.yaml"), "--tiny", *argv]) == 0
    assert used == [seed]
