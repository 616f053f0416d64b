"""`metagen verify`: the tolerance rule, every registered backend against the
reference on example specs at --tiny, and that a wrong emitter makes it fail (exit 1)."""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest

from conftest import example

from metagen.backends import registry
from metagen.verify import ATOL, RTOL, compare, verify_spec

RUNNABLE = [b.name for b in registry.BACKENDS.values() if b.runner]


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


def _row(text: str, label: str) -> list[str]:
    """The cells of the report row `label`, one per backend column."""
    for line in text.splitlines():
        if line.strip().startswith(label):
            return line.strip()[len(label) :].split()[: len(RUNNABLE)]
    raise AssertionError(f"no row '{label}' in:\n{text}")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: os.path.splitext(os.path.basename(s))[0])
def test_verify_example_tiny(spec):
    ok, text = _verify(spec)
    assert ok, text
    assert text.splitlines()[1].split() == RUNNABLE  # one column per backend
    assert f"against {registry.reference().name} (the reference)" in text.splitlines()[0]
    assert _row(text, "result") == ["ok"] * len(RUNNABLE)
    assert text.rstrip().endswith("OK")


def test_wrong_flax_emitter_is_a_mismatch(monkeypatch, capsys):
    from metagen import cli
    from metagen.backends import flax_backend

    monkeypatch.setitem(flax_backend.OPS, "gelu_tanh", lambda c, x: f"jax.nn.relu({x})")
    code = cli.main(["verify", example("reference", "gpt2_small.yaml"), "--tiny"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.rstrip().endswith("MISMATCH")
    result = dict(zip(RUNNABLE, _row(out, "result")))
    assert result.pop("flax") == "FAIL" and set(result.values()) == {"ok"}, out
    assert "FAIL flax: 'logits' uses" in out


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
