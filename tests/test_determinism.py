"""CONTRACT §6: same spec + seed + compiler version -> byte-identical files, whatever
the process, PYTHONHASHSEED, working directory, or how the spec path is spelled."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from conftest import example
from metagen import golden

BIN = os.path.dirname(sys.executable)
SPEC = example("tutorial", "step3_constraints.yaml")


def available_targets() -> list[str]:
    return list(dict.fromkeys(v.target for v in golden.VARIANTS))


def tree_digest(root: str) -> dict[str, str]:
    out = {}
    for r, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(r, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return dict(sorted(out.items()))


# The script compiles every available target twice in one process (in-process
# repeatability) and once through `metagen synth`, then prints one digest per file.
SCRIPT = r"""
import hashlib, os, sys
from metagen.cli import main, metagenc_main
spec, out, targets = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
for rep in range(2):
    for t in targets:
        dst = os.path.join(out, f"rep{rep}", "model." + t)
        assert metagenc_main([spec, "--target", t, "--tiny", "--seed", "3", "-o", dst, "-MD"]) == 0
assert main(["synth", spec, "--tiny", "--seed", "3", "--out", os.path.join(out, "synth")]) == 0
"""


def run_compile(spec: str, out: str, cwd: str, hashseed: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, spec, out, ",".join(available_targets())],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return tree_digest(os.path.join(cwd, out))


def test_byte_identical_across_processes_hashseeds_cwds_and_path_spellings(tmp_path):
    work_a = tmp_path / "a"
    work_b = tmp_path / "deep" / "er" / "b"
    for d in (work_a, work_b):
        d.mkdir(parents=True)
        shutil.copy(SPEC, d / "spec.yaml")
    # relative spec path, relative output; hash seed 0
    a = run_compile("spec.yaml", "out", str(work_a), "0")
    # absolute spec path from another cwd, absolute output; another hash seed
    b = run_compile(str(work_b / "spec.yaml"), str(work_b / "out"), str(tmp_path), "12345")
    # depfiles name the paths as given, so they differ by design: compare the rest
    for digests in (a, b):
        depfiles = [k for k in digests if k.endswith(".d")]
        assert len(depfiles) == 2 * len(available_targets())
        for k in depfiles:
            del digests[k]
    assert any(k.startswith("synth/") and k.endswith("model.mgir") for k in a), sorted(a)
    assert "synth" in {k.split("/")[0] for k in a}
    for k in a:
        if k.startswith("rep1/"):
            assert a[k] == a[k.replace("rep1/", "rep0/")], f"{k} differs between two runs in one process"
    assert a == b, "\n".join(f"{k}: {a.get(k)} != {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def test_synth_run_id_and_tree_are_stable_in_process(tmp_path):
    from metagen.cli import main

    assert main(["synth", SPEC, "--tiny", "--out", str(tmp_path / "x")]) == 0
    assert main(["synth", SPEC, "--tiny", "--out", str(tmp_path / "y")]) == 0
    (rx,) = os.listdir(tmp_path / "x")
    (ry,) = os.listdir(tmp_path / "y")
    assert rx == ry and rx.startswith("run-") and len(rx) == 16
    assert tree_digest(str(tmp_path / "x")) == tree_digest(str(tmp_path / "y"))
    from metagen.artifacts import run_id
    from metagen.pipeline import compile_spec

    comp = compile_spec(SPEC, tiny=True)
    assert run_id(comp, 0) == rx and run_id(comp, 7) != rx, "the run id hashes the seed"


def test_output_does_not_depend_on_time(tmp_path, monkeypatch):
    """Generated files carry no timestamp: faking the clock changes nothing."""
    import time as _time

    from metagen.artifacts import emit_target
    from metagen.pipeline import compile_spec

    comp = compile_spec(SPEC, tiny=True)
    before = {t: emit_target(comp, t, 0) for t in available_targets()}
    monkeypatch.setattr(_time, "time", lambda: 4_000_000_000.0)
    monkeypatch.setattr(_time, "time_ns", lambda: 4_000_000_000 * 10**9)
    comp = compile_spec(SPEC, tiny=True)
    after = {t: emit_target(comp, t, 0) for t in available_targets()}
    assert before == after
