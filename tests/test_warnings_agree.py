"""Issue 14 item 4: every compute miss is a located warning, one per problem, and
families the language names but the compiler does not build say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagen.cli import main
from metagen.diagnostics import DiagnosticSink
from metagen.pipeline import compile_spec

HEAD = """metagen_version: "1.0"
name: "w"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  parameter_budget:
    max: "20M"
"""


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


def _run(path: str) -> DiagnosticSink:
    sink = DiagnosticSink()
    compile_spec(path, sink=sink)
    return sink


def test_assumed_data_duration_miss_is_warned_at_duration(tmp_path):
    # No data size: compute-optimal data is assumed, and a duration that cannot hold
    # it is still a miss (it was silent before).
    path = _write(tmp_path, HEAD + 'training:\n  objective: ["autoregressive"]\n  compute:\n    hardware: "1xT4"\n    duration: "1 minute"\n')
    sink = _run(path)
    misses = [d for d in sink.warnings if "training.compute.duration" in d.message]
    assert len(misses) == 1
    assert (misses[0].loc.line, misses[0].loc.col) == (13, 15)
    assert "assumed compute-optimal" in misses[0].message
    # -Werror makes the miss an error.
    assert main(["validate", "-Werror", path]) == 1
    # A duration that holds it: no warning.
    ok = _write(tmp_path, HEAD + 'training:\n  objective: ["autoregressive"]\n  compute:\n    hardware: "1xT4"\n    duration: "1000 days"\n')
    assert not [d for d in _run(ok).warnings if "training.compute.duration" in d.message]


def test_unsupported_modality_is_one_warning(tmp_path):
    path = _write(tmp_path, HEAD.replace('inputs: ["text"]', 'inputs: ["taste"]'))
    sink = DiagnosticSink()
    compile_spec(path, sink=sink, tiny=True)
    warned = [d for d in sink.items if d.severity == "warning"]
    assert len(warned) == 1 and "taste" in warned[0].message
    assert [d for d in sink.items if d.severity == "note" and "best-effort" in d.message]


@pytest.mark.parametrize(
    "family, words",
    [
        ("cnn", "does not fit this modality and objective"),
        ("unet", "implemented only as diffusion_unet"),
        ("diffusion", "does not fit this modality and objective"),
    ],
)
def test_family_words_are_honest(tmp_path, family, words):
    path = _write(tmp_path, HEAD + f"architecture:\n  family: {family}\n")
    sink = DiagnosticSink()
    compile_spec(path, sink=sink, tiny=True)
    msgs = [d.message for d in sink.warnings if "family" in d.message]
    assert len(msgs) == 1 and words in msgs[0]
    assert "not implemented" not in msgs[0]
