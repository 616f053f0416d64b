"""The two security defects of the robustness campaign, and the classes behind them:
spec text can never become code in generated Python, and outputs are written only to
regular files (special files are refused, symlinks written through). Every path a
test here writes is under its own tmp_path."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from metagen.backends.pyemit import format_python, source_text
from test_robustness import diagnostic_lines, run_cli
from metagen.cli import main, metagenc_main

INJECTION = '"""; import os; os.system("touch PWNED"); """'
SPEC = """metagen_version: "1.0"
name: {name}
modality:
  inputs: ["text"]
  outputs: ["text"]
"""
SPEC_MG = """metagen 1.0

model {name} {{
  modality {{
    inputs [text]
    outputs [text]
  }}
}}
"""

# ------------------------------------------------------------------ source_text


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40))
def test_any_string_in_a_docstring_parses_and_reads_back(text):
    """For any string (quotes, backslashes, newlines, surrogates, U+2028), a module whose
    docstring and comment carry it through source_text parses, its docstring holds the
    string exactly, and the module has no statement but the docstring."""
    src = f'"""model for \'{source_text(text)}\'."""  # plan for {source_text(text)}\n'
    for candidate in (src, format_python(src)):
        tree = ast.parse(candidate)
        assert len(tree.body) == 1
        assert ast.get_docstring(tree, clean=False) == f"model for '{text}'."
    assert source_text(text).isprintable()


def _compile_all(tmp_path, name_literal: str, ext: str):
    spec = tmp_path / f"evil{ext}"
    spec.write_text((SPEC if ext == ".yaml" else SPEC_MG).format(name=name_literal), encoding="utf-8")
    code, out, err = run_cli(main, ["synth", str(spec), "--tiny", "--out", str(tmp_path / "out"), "--run-id", "r"])
    assert code == 0, err
    return sorted((tmp_path / "out" / "r").rglob("*.py"))


@pytest.mark.parametrize("ext", [".yaml", ".mg"])
def test_name_with_triple_quotes_is_not_code(tmp_path, ext):
    literal = "'" + INJECTION + "'" if ext == ".yaml" else '"' + INJECTION.replace('"', '\\"') + '"'
    files = _compile_all(tmp_path, literal, ext)
    assert [p.relative_to(tmp_path / "out" / "r").as_posix() for p in files] == [
        "code/flax/model.py", "code/flax/train.py", "code/numpy/model.py", "code/torch/model.py", "code/torch/train.py",
    ]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert INJECTION in ast.get_docstring(tree)
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "system"]
        assert not calls, f"{path}: os.system reached code"
    # importing the model runs nothing the spec wrote
    model = tmp_path / "out" / "r" / "code" / "torch" / "model.py"
    r = subprocess.run([sys.executable, "-c", f"import runpy; runpy.run_path({str(model)!r})"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------ -o targets


def _compile(tmp_path, *extra):
    spec = tmp_path / "ok.yaml"
    spec.write_text(SPEC.format(name='"ok"'), encoding="utf-8")
    return run_cli(metagenc_main, [str(spec), "--target", "ir", "--tiny", *extra])


def test_output_to_a_fifo_is_refused_and_left_alone(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = _compile(tmp_path, "-o", str(fifo))
    assert code == 1 and "Traceback" not in err
    assert diagnostic_lines(err) == [
        f"{fifo}:1:1: error: cannot write output: not a regular file (a device, pipe or socket); "
        "MetaGen writes regular files only"
    ]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_output_to_a_directory_or_under_a_file_is_a_diagnostic(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = _compile(tmp_path, "-o", str(folder))
    assert code == 1 and diagnostic_lines(err) == [f"{folder}:1:1: error: cannot write output: it is a directory"]
    plain = tmp_path / "plain"
    plain.write_text("keep\n")
    code, _, err = _compile(tmp_path, "-o", str(plain / "x.mgir"))
    assert code == 1 and diagnostic_lines(err) == [f"{plain / 'x.mgir'}:1:1: error: cannot write output: Not a directory"]
    assert plain.read_text() == "keep\n"


def test_symlink_output_is_written_through(tmp_path):
    real = tmp_path / "real.mgir"
    real.write_text("old\n")
    link = tmp_path / "link.mgir"
    link.symlink_to("real.mgir")
    code, _, err = _compile(tmp_path, "-o", str(link))
    assert code == 0, err
    assert os.path.islink(link) and real.read_text().startswith("mgir 1")


def test_bad_depfile_target_writes_nothing(tmp_path):
    folder = tmp_path / "deps"
    folder.mkdir()
    out = tmp_path / "model.mgir"
    code, _, err = _compile(tmp_path, "-o", str(out), "-MF", str(folder))
    assert code == 1 and diagnostic_lines(err) == [f"{folder}:1:1: error: cannot write output: it is a directory"]
    assert not out.exists(), "the main output must not be written when the depfile cannot be"


def test_synth_into_a_file_or_over_a_file_is_a_diagnostic(tmp_path):
    spec = tmp_path / "ok.yaml"
    spec.write_text(SPEC.format(name='"ok"'), encoding="utf-8")
    plain = tmp_path / "plain"
    plain.write_text("keep\n")
    code, _, err = run_cli(main, ["synth", str(spec), "--tiny", "--out", str(plain)])
    assert code == 1 and diagnostic_lines(err) == [
        f"{plain}:1:1: error: cannot write the run folder here: this is a file, not a folder"
    ]
    code, _, err = run_cli(main, ["synth", str(spec), "--tiny", "--out", str(tmp_path), "--run-id", "plain"])
    assert code == 1 and diagnostic_lines(err) == [
        f"{plain}:1:1: error: cannot write the run folder: a file of that name exists"
    ]
    assert plain.read_text() == "keep\n"


def test_fmt_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real.mg"
    real.write_text(SPEC_MG.format(name='"ok"').replace("    inputs", "          inputs"), encoding="utf-8")
    link = tmp_path / "link.mg"
    link.symlink_to("real.mg")
    code, _, err = run_cli(main, ["fmt", str(link)])
    assert code == 0, err
    assert os.path.islink(link) and "\n    inputs" in real.read_text()


def test_no_test_writes_outside_what_it_owns():
    """The suite as root once replaced /dev/null through `-o os.devnull`."""
    offenders = []
    for name in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if name.endswith(".py") and name != os.path.basename(__file__):
            text = open(os.path.join(ROOT, "tests", name), encoding="utf-8").read()
            if "os.devnull" in text or '"/dev/' in text:
                offenders.append(name)
    assert offenders == []


# ------------------------------------------------------------------ spec reads


def test_special_spec_files_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        code, _, err = run_cli(main, ["validate", str(path)])
        assert code == 1
        assert diagnostic_lines(err) == [f"{path}:1:1: error: cannot read spec: not a regular file (a device, pipe or socket)"]
