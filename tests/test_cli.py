"""The driver as build systems see it: exit codes, depfiles, atomic write-if-changed
outputs, -Werror, and examples/Makefile (second make does nothing; touching a spec
or an imported .mg rebuilds exactly its dependents)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT, example
from metagen.cli import main, metagenc_main
from metagen.outputs import depfile_text, write_if_changed

BIN = os.path.dirname(sys.executable)
METAGENC = os.path.join(BIN, "metagenc")
METAGEN = os.path.join(BIN, "metagen")
MINIMAL = example("tutorial", "step1_minimal.yaml")

SMALL_SPEC = textwrap.dedent(
    """\
    metagen_version: "1.0"
    name: "small_lm"
    modality:
      inputs: ["text"]
      outputs: ["text"]
    constraints:
      parameter_budget:
        max: "20M"
      context_window: "1k"
    """
)


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def listing(d) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


# ------------------------------------------------------------------ exit codes


def test_success_is_exit_0_and_writes_default_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    assert metagenc_main([spec, "--target", "ir", "--tiny"]) == 0
    assert (tmp_path / "lm.mgir").read_text().strip()


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no spec
        ["SPEC"],  # no --target
        ["SPEC", "--target", "tensorflow"],
        ["SPEC", "--target", "ir", "--seed", "-1"],
        ["SPEC", "--target", "ir", "--seed", "abc"],
        ["SPEC", "--target", "ir", "-D", "novalue"],
        ["SPEC", "--target", "ir", "-D", "=3"],
        ["SPEC", "--target", "onnx", "-o", "-"],
        ["SPEC", "--target", "torch", "--weights", "w.safetensors"],
        ["SPEC", "--target", "ir", "--no-such-flag"],
    ],
)
def test_command_line_misuse_is_exit_2(argv, tmp_path, capsys):
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    argv = [spec if a == "SPEC" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        metagenc_main(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["synth", "SPEC"], ["synth", "SPEC", "--out", "o", "--run-id", "../x"], ["convert", "SPEC"]],
)
def test_metagen_misuse_is_exit_2(argv, tmp_path):
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    with pytest.raises(SystemExit) as exc:
        main([spec if a == "SPEC" else a for a in argv])
    assert exc.value.code == 2


def test_bad_spec_is_exit_1_with_positioned_diagnostic(tmp_path, capsys):
    spec = write(tmp_path / "bad.yaml", SMALL_SPEC.replace("modality:", "modalty:"))
    out = tmp_path / "bad.py"
    assert metagenc_main([spec, "--target", "torch", "-o", str(out), "-MD"]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:3:1: error: " in err and 'did you mean "modality"' in err
    assert "Traceback" not in err
    assert listing(tmp_path) == ["bad.yaml"], "a failed compile must leave no output or depfile"


def test_missing_spec_file_is_exit_1(tmp_path, capsys):
    assert metagenc_main([str(tmp_path / "nope.yaml"), "--target", "ir"]) == 1
    assert "nope.yaml:1:1: error: cannot read spec" in capsys.readouterr().err


def test_real_console_scripts_exit_codes(tmp_path):
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    bad = write(tmp_path / "bad.yaml", "name: [\n")
    ok = subprocess.run([METAGENC, spec, "--target", "ir", "--tiny", "-o", "-"], capture_output=True, text=True)
    assert ok.returncode == 0 and "small_lm" in ok.stdout.lower()
    r = subprocess.run([METAGENC, bad, "--target", "ir"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith(f"{bad}:") and "Traceback" not in r.stderr
    r = subprocess.run([METAGENC, spec], capture_output=True, text=True)
    assert r.returncode == 2 and "--target" in r.stderr


# ------------------------------------------------------------------ validate, -Werror


def test_validate_prints_ok_and_name(tmp_path, capsys):
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    assert main(["validate", spec]) == 0
    assert capsys.readouterr().out.startswith("OK small_lm ")


WARN_SPEC = SMALL_SPEC.replace('context_window: "1k"', 'context_window: "∞"')


def test_warning_is_exit_0_and_werror_makes_it_exit_1(tmp_path, capsys):
    spec = write(tmp_path / "warn.yaml", WARN_SPEC)
    out = tmp_path / "warn.mgir"
    assert metagenc_main([spec, "--target", "ir", "--tiny", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{spec}:9:19: warning: " in err
    out.unlink()
    assert metagenc_main([spec, "--target", "ir", "--tiny", "-o", str(out), "-Werror", "-MD"]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:9:19: error: " in err and "[-Werror]" in err
    assert not out.exists() and listing(tmp_path) == ["warn.yaml"]
    assert main(["validate", spec, "--tiny", "-Werror"]) == 1
    assert main(["validate", spec, "--tiny"]) == 0


# ------------------------------------------------------------------ depfiles and outputs


def test_depfile_names_output_and_spec(tmp_path):
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    out = tmp_path / "o" / "lm.py"
    assert metagenc_main([spec, "--target", "torch", "--tiny", "-o", str(out), "-MD"]) == 0
    assert (tmp_path / "o" / "lm.py.d").read_text() == f"{out}: {spec}\n{spec}:\n"
    mf = tmp_path / "deps" / "custom.d"
    assert metagenc_main([spec, "--target", "ir", "--tiny", "-o", str(tmp_path / "lm.mgir"), "-MF", str(mf)]) == 0
    assert mf.read_text().startswith(f"{tmp_path / 'lm.mgir'}: {spec}\n")


def test_depfile_escapes_make_metacharacters():
    text = depfile_text("out dir/m$.py", ["a b.yaml", "c#d.mg"])
    assert text == "out\\ dir/m$$.py: a\\ b.yaml c\\#d.mg\na\\ b.yaml:\nc\\#d.mg:\n"


def test_unchanged_output_keeps_mtime_and_changed_output_is_replaced(tmp_path):
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    out = tmp_path / "lm.mgir"
    args = [spec, "--target", "ir", "--tiny", "-o", str(out), "-MD"]
    assert metagenc_main(args) == 0
    past = time.time() - 1000
    os.utime(out, (past, past))
    os.utime(str(out) + ".d", (past, past))
    assert metagenc_main(args) == 0
    assert os.stat(out).st_mtime == past and os.stat(str(out) + ".d").st_mtime == past
    write(tmp_path / "lm.yaml", SMALL_SPEC.replace("20M", "30M"))
    before = out.read_bytes()
    assert metagenc_main([spec, "--target", "ir", "-o", str(out)]) == 0
    assert out.read_bytes() != before and os.stat(out).st_mtime > past
    assert listing(tmp_path) == ["lm.mgir", "lm.mgir.d", "lm.yaml"], "no temporary files left behind"


def test_write_if_changed_is_atomic_and_keeps_mode(tmp_path):
    p = tmp_path / "f.txt"
    assert write_if_changed(str(p), b"one") is True
    assert oct(os.stat(p).st_mode & 0o777) == oct(0o666 & ~_umask())
    os.chmod(p, 0o640)
    assert write_if_changed(str(p), b"one") is False
    assert write_if_changed(str(p), b"two") is True
    assert p.read_bytes() == b"two" and os.stat(p).st_mode & 0o777 == 0o640
    assert listing(tmp_path) == ["f.txt"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_stdout_output_writes_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write(tmp_path / "lm.yaml", SMALL_SPEC)
    assert metagenc_main([spec, "--target", "ir", "--tiny", "-o", "-"]) == 0
    assert capsys.readouterr().out.startswith("")
    assert listing(tmp_path) == ["lm.yaml"]


# ------------------------------------------------------------------ examples/Makefile

MAKE = shutil.which("make")


def _make(d, *extra, check=True):
    env = dict(os.environ, PY=sys.executable)
    r = subprocess.run([MAKE, "-C", str(d), "--no-print-directory", *extra], capture_output=True, text=True, env=env)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _compiled(stdout: str) -> list[str]:
    """Outputs that make ran metagenc for, from its echoed commands."""
    return sorted(line.split(" -o ")[1].split()[0] for line in stdout.splitlines() if " -o " in line)


@pytest.fixture
def project(tmp_path):
    """A copy of examples/Makefile with small specs, so the repository is untouched."""
    shutil.copy(os.path.join(ROOT, "examples", "Makefile"), tmp_path / "Makefile")
    write(tmp_path / "lm" / "a.yaml", SMALL_SPEC)
    write(tmp_path / "lm" / "b.yaml", SMALL_SPEC.replace("small_lm", "other_lm"))
    return tmp_path


def test_examples_makefile_second_make_does_nothing(project):
    args = ["SPECS=lm/a.yaml lm/b.yaml", "TARGETS=ir torch"]
    r = _make(project, *args, "-j2")
    assert _compiled(r.stdout) == [
        "build/yaml/lm/a.mgir", "build/yaml/lm/a.py", "build/yaml/lm/b.mgir", "build/yaml/lm/b.py"
    ]
    assert _make(project, *args, "-q", check=False).returncode == 0, "second make would rebuild"
    r = _make(project, *args)
    assert _compiled(r.stdout) == []
    os.utime(project / "lm" / "b.yaml", (time.time() + 5, time.time() + 5))
    r = _make(project, *args)
    assert _compiled(r.stdout) == ["build/yaml/lm/b.mgir", "build/yaml/lm/b.py"]


def test_examples_makefile_builds_every_listed_example(tmp_path):
    """The real examples list: every spec and target the Makefile names, dry run."""
    r = _make(os.path.join(ROOT, "examples"), f"OUT={tmp_path}/build", "-n")
    cmds = [line for line in r.stdout.splitlines() if "metagenc" in line]
    from metagen import golden
    from metagen.backends import registry

    specs = golden.example_specs()
    targets = set(registry.names())
    assert len(cmds) == len(specs) * len(targets)
    for t in targets:
        assert sum(f"--target {t} " in c for c in cmds) == len(specs)


MG_BASE = """\
metagen 1.0

model "base_lm" {
  modality {
    inputs [text]
    outputs [text]
  }
}
"""


def _mg_child(name: str) -> str:
    return f'metagen 1.0\n\nimport "presets/base.mg"\n\nmodel "{name}" {{\n}}\n'


def test_touching_an_imported_mg_rebuilds_exactly_its_dependents(project):
    from metagen import cli as _cli  # noqa: F401

    write(project / "presets" / "base.mg", MG_BASE)
    write(project / "uses_base.mg", _mg_child("child_lm"))
    _make(project, "SPECS=uses_base.mg", "TARGETS=ir")
    assert (project / "build" / "mg" / "uses_base.mgir.d").read_text().splitlines()[0].split(":")[1].split() == [
        "uses_base.mg",
        "presets/base.mg",
    ]
    args = ["SPECS=uses_base.mg lm/a.yaml", "TARGETS=ir"]
    _make(project, *args)
    assert _make(project, *args, "-q", check=False).returncode == 0
    later = time.time() + 5
    os.utime(project / "presets" / "base.mg", (later, later))
    r = _make(project, *args)
    assert _compiled(r.stdout) == ["build/mg/uses_base.mgir"]


def test_real_presets_touching_a_base_rebuilds_exactly_its_importers(tmp_path):
    """On the repository's own examples/presets: build the IR, then ask make what a
    newer llama_base.mg would rebuild (-W: what-if, nothing is touched)."""
    presets = sorted(p for p in __import__("metagen.golden").golden.example_specs() if p.startswith("examples/presets/"))
    assert any(p.endswith("llama_base.mg") for p in presets)
    specs = " ".join(os.path.relpath(p, "examples") for p in presets)
    args = [f"OUT={tmp_path}/build", "TARGETS=ir", f"SPECS={specs}"]
    examples = os.path.join(ROOT, "examples")
    _make(examples, *args, "-j2")
    assert _make(examples, *args, "-q", check=False).returncode == 0
    r = _make(examples, *args, "-n", "-W", "presets/llama_base.mg")
    rebuilt = [os.path.relpath(p, tmp_path) for p in _compiled(r.stdout)]
    importers = []
    for p in presets:
        text = open(os.path.join(ROOT, p), encoding="utf-8").read()
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem == "llama_base" or "llama" in stem and "import" in text:
            importers.append(f"build/mg/presets/{stem}.mgir")
    assert rebuilt == sorted(importers) and len(rebuilt) >= 2
