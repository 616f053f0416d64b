"""Golden files: every file under golden/ equals what the compiler emits now.

A failure prints a unified diff and the command that regenerates (`make golden`).
"""

from __future__ import annotations

import io
import os
import shutil

import pytest

from metagen import golden

_CACHE: dict = {}


def _params():
    for spec, variant in golden.cases():
        heavy = spec.heavy and variant.filename.endswith(".py")  # black over ~100 KB
        yield pytest.param(spec, variant, id=golden.case_name(spec, variant), marks=[pytest.mark.slow] if heavy else [])


@pytest.mark.parametrize("spec,variant", list(_params()))
def test_golden_file_matches_compiler(spec, variant):
    problem = golden.check_case(spec, variant, _CACHE)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_every_golden_spec_exists_and_every_file_is_wanted():
    for spec in golden.SPECS:
        assert os.path.exists(os.path.join(golden.ROOT, spec.path)), spec.path
    assert golden.stale_files() == [], f"stale golden files; regenerate with: {golden.REGENERATE}"


@pytest.fixture
def scratch_golden(tmp_path, monkeypatch):
    """A copy of golden/ for one small spec, so the real tree is never touched."""
    spec = golden.GoldenSpec("examples/tutorial/step1_minimal.yaml")
    variant = golden.VARIANTS[0]
    monkeypatch.setattr(golden, "GOLDEN_DIR", str(tmp_path / "golden"))
    monkeypatch.setattr(golden, "SPECS", [spec])
    monkeypatch.setattr(golden, "VARIANTS", [variant])
    return spec, variant


def test_update_then_check_is_clean_and_idempotent(scratch_golden):
    spec, variant = scratch_golden
    out = io.StringIO()
    assert golden.update(out) == 0
    path = golden.golden_path(spec, variant)
    mtime = os.stat(path).st_mtime_ns
    assert golden.update(io.StringIO()) == 0
    assert os.stat(path).st_mtime_ns == mtime, "an unchanged golden file must not be rewritten"
    out = io.StringIO()
    assert golden.check(out) == 0, out.getvalue()


def test_check_shows_unified_diff_and_regenerate_command(scratch_golden):
    spec, variant = scratch_golden
    golden.update(io.StringIO())
    path = golden.golden_path(spec, variant)
    text = open(path, encoding="utf-8").read().splitlines(keepends=True)
    text[2] = "# tampered line\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(text)
    out = io.StringIO()
    assert golden.check(out) == 1
    report = out.getvalue()
    assert "--- golden/step1_minimal/model.mgir" in report
    assert "-# tampered line" in report
    assert "make golden" in report
    golden.update(io.StringIO())
    assert golden.check(io.StringIO()) == 0


def test_check_reports_missing_and_stale_files(scratch_golden):
    spec, variant = scratch_golden
    out = io.StringIO()
    assert golden.check(out) == 1
    assert "golden file missing" in out.getvalue() and "make golden" in out.getvalue()
    golden.update(io.StringIO())
    stale = os.path.join(golden.GOLDEN_DIR, "gone_spec", "model.mgir")
    os.makedirs(os.path.dirname(stale))
    shutil.copy(golden.golden_path(spec, variant), stale)
    out = io.StringIO()
    assert golden.check(out) == 1
    assert "gone_spec/model.mgir" in out.getvalue()
    golden.update(io.StringIO())
    assert not os.path.exists(stale)
