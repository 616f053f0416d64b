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
    text = depfile_text("out dir/m$.py", ["a b.yaml", "c#d.mg", "SHELL=x.mg", "c|d.mg"], "x.d")
    assert text == (
        "out\\ dir/m$$.py: a\\ b.yaml c\\#d.mg SHELL$(strip =)x.mg c\\|d.mg\n"
        "a\\ b.yaml:\nc\\#d.mg:\nSHELL$(strip =)x.mg:\nc|d.mg:\n"
    )


# names GNU make must read back exactly, as the rule's target and as prerequisites
MAKE_NAMES = [
    "a b.mg", " lead.mg", "c:d.mg", "e#f.mg", "g$h.mg", "SHELL=x.mg", "x=.mg", "c|d.mg",
    "e*f.mg", "g?h.mg", "i[j].mg", "~k.mg", "l(m).mg", "bs\\x.mg", "b\\ s.mg", "b\\#s.mg",
    "o\"p.mg", "q'r.mg", "u,v.mg", "w{x}.mg", "y!.mg", "z&.mg", "ab`c.mg", "-x.mg", "em@.mg", "ü ∞.mg",
]


@pytest.mark.parametrize("target", ["out.py", "o ut$=#:|.py"])
def test_real_make_reads_depfile_names_back(tmp_path, target):
    """GNU make reads the depfile back to exactly the file names: the output is up to
    date while every prerequisite is older, out of date when any one is newer, and a
    deleted prerequisite does not break the build (the -MP empty rules match it)."""
    for n in MAKE_NAMES + [target]:
        (tmp_path / n).write_text("")
        os.utime(tmp_path / n, (1e9, 1e9))
    os.utime(tmp_path / target, (1.1e9, 1.1e9))
    rule, rest = depfile_text(target, MAKE_NAMES, "x.d").split("\n", 1)
    (tmp_path / "Makefile").write_text(f"{rule}\n\t@echo REBUILT\n{rest}", encoding="utf-8")
    assert "REBUILT" not in _make(tmp_path, "-r", "-s").stdout
    for n in MAKE_NAMES:
        os.utime(tmp_path / n, (1.2e9, 1.2e9))
        assert "REBUILT" in _make(tmp_path, "-r", "-s").stdout, n
        os.utime(tmp_path / n, (1e9, 1e9))
    for n in MAKE_NAMES:
        os.unlink(tmp_path / n)
    assert "REBUILT" in _make(tmp_path, "-r", "-s").stdout


@pytest.mark.parametrize("name", ["new\nline.mg", "t\tab.mg", "cr\r.mg", "a;b.mg", "p%q.mg", "end\\", "lib(m)", ".SILENT", "bel\x07.mg"])
def test_depfile_refuses_names_make_cannot_spell(name):
    from metagen.outputs import OutputError

    with pytest.raises(OutputError) as exc:
        depfile_text("out.py", ["spec.mg", name], "build/out.py.d")
    assert str(exc.value).startswith("build/out.py.d:1:1: error: cannot name ")


def test_import_named_like_a_make_assignment_is_a_prerequisite(tmp_path):
    """`import "SHELL=x.mg"` is a prerequisite in the depfile, not `SHELL = x.mg:`."""
    shutil.copy(example("presets", "gpt2_base.mg"), tmp_path / "SHELL=x.mg")
    main_mg = write(tmp_path / "main.mg", 'metagen 1.0\n\nimport "SHELL=x.mg"\n\nmodel "m" {\n  architecture {\n    layers 2\n  }\n}\n')
    out = tmp_path / "o ut.mgir"
    assert metagenc_main([main_mg, "--target", "ir", "--tiny", "-o", str(out), "-MD"]) == 0
    rule, rest = (tmp_path / "o ut.mgir.d").read_text().split("\n", 1)
    assert "SHELL$(strip =)x.mg" in rule
    (tmp_path / "Makefile").write_text(f"{rule}\n\t@echo REBUILT\n{rest}")
    assert "REBUILT" not in _make(tmp_path, "-r", "-s").stdout
    os.utime(tmp_path / "SHELL=x.mg", (time.time() + 100, time.time() + 100))
    assert "REBUILT" in _make(tmp_path, "-r", "-s").stdout


def test_depfile_with_an_unspellable_import_is_a_diagnostic(tmp_path, capsys):
    shutil.copy(example("presets", "gpt2_base.mg"), tmp_path / "a;b.mg")
    main_mg = write(tmp_path / "main.mg", 'metagen 1.0\n\nimport "a;b.mg"\n\nmodel "m" {\n  architecture {\n    layers 2\n  }\n}\n')
    out = tmp_path / "m.mgir"
    assert metagenc_main([main_mg, "--target", "ir", "--tiny", "-o", str(out), "-MD"]) == 1
    err = capsys.readouterr().err
    assert f"{out}.d:1:1: error: cannot name " in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["a;b.mg", "main.mg"]  # nothing written


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


# ------------------------------------------------------------------ output-side failures
# Every OS error on the output side is a located diagnostic (exit 1), never a
# traceback, and leaves neither a temporary file nor a half-changed target.

TRAINING = example("tutorial", "step4_training.yaml")


def _run(fn, argv, capsys) -> tuple[int, str, str]:
    code = fn(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


class _FullDisk:
    """A writable file whose every write fails as on a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def _fill_disk(monkeypatch):
    import builtins

    import metagen.outputs

    def fake_open(file, mode="r", *a, **kw):
        fh = builtins.open(file, mode, *a, **kw)
        return _FullDisk(fh) if "w" in mode else fh

    monkeypatch.setattr(metagen.outputs, "open", fake_open, raising=False)


def test_full_disk_is_a_diagnostic_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.mgir"
    out.write_text("previous build\n")
    _fill_disk(monkeypatch)
    code, _, err = _run(metagenc_main, [MINIMAL, "--target", "ir", "--tiny", "-o", str(out), "-MD"], capsys)
    assert code == 1 and f"{out}:1:1: error: cannot write output: No space left on device" in err
    code, _, err = _run(main, ["synth", MINIMAL, "--tiny", "--out", str(tmp_path / "runs"), "--run-id", "r"], capsys)
    assert code == 1 and f"{tmp_path / 'runs' / 'r'}:1:1: error: cannot write the run folder: No space left on device" in err
    assert out.read_text() == "previous build\n"
    assert listing(tmp_path) == ["m.mgir"]  # no temporary file, no depfile, no run folder


def test_read_only_folder_is_a_diagnostic(tmp_path, monkeypatch, capsys):
    """Root ignores a folder's mode bits, so the refusal is simulated where the OS
    gives it: creating the temporary file or folder beside the target."""
    import errno
    import tempfile

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    out = tmp_path / "m.py"
    code, _, err = _run(metagenc_main, [MINIMAL, "--target", "torch", "--tiny", "-o", str(out)], capsys)
    assert code == 1 and f"{out}:1:1: error: cannot write output: Read-only file system" in err
    code, _, err = _run(main, ["synth", MINIMAL, "--tiny", "--out", str(tmp_path), "--run-id", "r"], capsys)
    assert code == 1 and f"{tmp_path / 'r'}:1:1: error: cannot write the run folder: Read-only file system" in err
    assert listing(tmp_path) == []


def test_depfile_path_that_is_a_folder_writes_nothing(tmp_path, capsys):
    (tmp_path / "deps").mkdir()
    out = tmp_path / "m.mgir"
    code, _, err = _run(metagenc_main, [MINIMAL, "--target", "ir", "--tiny", "-o", str(out), "-MF", str(tmp_path / "deps")], capsys)
    assert code == 1 and f"{tmp_path / 'deps'}:1:1: error: cannot write output: it is a directory" in err
    assert not out.exists()


def test_empty_output_name_is_misuse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        metagenc_main([MINIMAL, "--target", "ir", "-o", ""])
    assert exc.value.code == 2 and os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["text", "empty", "missing", "folder", "fifo", "truncated"])
def test_weights_that_are_not_safetensors_are_a_diagnostic(tmp_path, capsys, kind):
    w = tmp_path / "w.safetensors"
    if kind == "text":
        w.write_text("not tensors\n")
    elif kind == "empty":
        w.write_bytes(b"")
    elif kind == "folder":
        w.mkdir()
    elif kind == "fifo":
        os.mkfifo(w)
    elif kind == "truncated":
        w.write_bytes((200).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}')
    out = tmp_path / "m.onnx"
    code, _, err = _run(metagenc_main, [MINIMAL, "--target", "onnx", "--tiny", "-o", str(out), "--weights", str(w)], capsys)
    assert code == 1 and err.startswith(f"{w}:1:1: error: cannot read weights: "), err
    assert not out.exists()


# ------------------------------------------------------------------ strict JSON


def _strict_json(data: bytes):
    import json

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(data, parse_constant=refuse)


def test_json_outputs_are_strict(tmp_path, capsys):
    """Every JSON file of a run parses under RFC 8259 (no NaN or Infinity)."""
    code, _, _ = _run(main, ["synth", TRAINING, "--tiny", "--out", str(tmp_path), "--run-id", "r"], capsys)
    assert code == 0
    found = sorted((tmp_path / "r").rglob("*.json"))
    assert {p.name for p in found} >= {"params_estimate.json", "graph.json", "training_report.json"}
    for p in found:
        _strict_json(p.read_bytes())


def test_huge_training_duration_is_a_diagnostic_not_infinity(tmp_path, capsys):
    """`duration: "1e300 days"` wrote `"tokens_in_duration": Infinity`."""
    spec = tmp_path / "t.yaml"
    spec.write_text(open(TRAINING).read().replace('"5 days"', '"1e300 days"'))
    code, _, err = _run(main, ["synth", str(spec), "--tiny", "--out", str(tmp_path / "runs")], capsys)
    assert code == 1 and f"{spec}:19:15: error: 'training.compute.duration': duration '1e300 days' is out of range" in err
    assert not (tmp_path / "runs").exists()


def test_non_finite_json_value_is_a_located_diagnostic():
    from metagen.artifacts import _json
    from metagen.diagnostics import CompileError, Loc

    assert _json({"a": [1.5, None]}, "x.json", Loc("s.yaml")) == b'{\n  "a": [\n    1.5,\n    null\n  ]\n}\n'
    with pytest.raises(CompileError) as exc:
        _json({"a": {"b": [0.0, float("inf")]}}, "blueprint/x.json", Loc("s.yaml", 3, 4))
    assert str(exc.value) == (
        "s.yaml:3:4: error: blueprint/x.json: 'a.b.1' would be inf, which JSON cannot hold; a value in the spec is out of range"
    )


# ------------------------------------------------------------------ stale temporary files


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", ""])
    p.wait()
    return p.pid


def test_next_write_removes_stale_temps_of_killed_runs(tmp_path, capsys):
    """Leftovers of a killed run (`.metagen-<pid>-*`, pid gone, untouched for
    STALE_AFTER_S) are removed by the next write into that folder; a temp whose process
    is alive, or that changed recently, and a name not of our form, are kept."""
    from metagen.outputs import STALE_AFTER_S

    dead, old = _dead_pid(), time.time() - STALE_AFTER_S - 60
    stale_file = tmp_path / f".metagen-{dead}-ab12cd34"
    stale_dir = tmp_path / f".metagen-{dead}-old-cd34ef56"
    users = tmp_path / ".metagen-settings"  # not a name of ours: never touched
    live = tmp_path / f".metagen-{os.getppid()}-gh78ij90"
    fresh = tmp_path / f".metagen-{dead}-ij90kl12"
    for p in (stale_file, users, live, fresh):
        p.write_bytes(b"x" * 100)
    (stale_dir / "onnx").mkdir(parents=True)
    (stale_dir / "onnx" / "model.onnx").write_bytes(b"x")
    for p in (stale_file, users, live, stale_dir / "onnx" / "model.onnx", stale_dir / "onnx", stale_dir):
        os.utime(p, (old, old))
    code, _, _ = _run(metagenc_main, [MINIMAL, "--target", "ir", "--tiny", "-o", str(tmp_path / "m.mgir")], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["m.mgir", users.name, live.name, fresh.name])

    # the same for `metagen synth`, in its --out folder
    stale_run = tmp_path / "runs" / f".metagen-{dead}-kl12mn34"
    (stale_run / "code").mkdir(parents=True)
    for p in (stale_run / "code", stale_run):
        os.utime(p, (old, old))
    code, _, _ = _run(main, ["synth", MINIMAL, "--tiny", "--out", str(tmp_path / "runs"), "--run-id", "r"], capsys)
    assert code == 0 and os.listdir(tmp_path / "runs") == ["r"]


def test_a_temp_with_a_recent_change_deep_inside_is_kept(tmp_path):
    """A live writer filling a big file deep in its temp folder keeps the folder's own
    mtime old; the newest mtime inside counts."""
    from metagen.outputs import STALE_AFTER_S, remove_stale_temps

    busy = tmp_path / f".metagen-{_dead_pid()}-mn34op56"
    (busy / "onnx").mkdir(parents=True)
    (busy / "onnx" / "model.onnx.data").write_bytes(b"x")
    old = time.time() - STALE_AFTER_S - 60
    for p in (busy / "onnx", busy):
        os.utime(p, (old, old))
    assert remove_stale_temps(str(tmp_path)) == [] and busy.exists()
    assert remove_stale_temps(str(tmp_path), now=time.time() + STALE_AFTER_S + 60) == [str(busy)]


# ------------------------------------------------------------------ terminal encodings, closed pipes


def _ascii_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIO", "PYTHONUTF8"))}
    return dict(env, LC_ALL="C", PYTHONIOENCODING="ascii", PYTHONUTF8="0", **extra)


def test_non_utf8_terminal_gets_no_unicode_errors(tmp_path):
    """Under PYTHONIOENCODING=ascii / LC_ALL=C: stdout is UTF-8 bytes (validate's OK
    line, `-o -`, schema, convert), stderr escapes what ASCII cannot show."""
    spec = write(tmp_path / "u.yaml", SMALL_SPEC.replace('"small_lm"', '"ünï ∞"').replace('["text"]\n  outputs', '["txét"]\n  outputs', 1))
    env = _ascii_env()
    r = subprocess.run([METAGEN, "validate", spec], capture_output=True, env=env, timeout=120)
    assert r.returncode == 0 and b"Traceback" not in r.stderr
    assert r.stdout.decode("utf-8").startswith("OK ünï ∞ ")
    assert r.stderr.isascii() and b'"tx\\xe9t"' in r.stderr
    r = subprocess.run([METAGENC, spec, "--target", "ir", "--tiny", "-o", "-"], capture_output=True, env=env, timeout=120)
    assert r.returncode == 0
    assert metagenc_main([spec, "--target", "ir", "--tiny", "-o", str(tmp_path / "u.mgir")]) == 0
    assert r.stdout == (tmp_path / "u.mgir").read_bytes() and "ünï ∞".encode() in r.stdout
    for argv in (["schema"], ["convert", spec, "--to", "mg"]):
        r = subprocess.run([METAGEN, *argv], capture_output=True, env=env, timeout=120)
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
        r.stdout.decode("utf-8")


def test_reader_closing_the_pipe_early_is_quiet(tmp_path):
    """`metagen schema | head -c 10`: the reader is gone before the first write, so
    every write hits EPIPE; the command ends with exit 1 and prints nothing."""
    for argv in ([METAGEN, "schema"], [METAGENC, MINIMAL, "--target", "ir", "--tiny", "-o", "-"]):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        p.stdout.close()
        err = p.stderr.read()
        assert p.wait(timeout=120) == 1 and err == b"", err


SIGTERM_DURING_WRITE = r"""
import os, signal, sys
import metagen.outputs
from metagen import cli

class Stall:
    def __init__(self, fh):
        self.fh = fh
    def write(self, data):
        self.fh.write(data[:10])
        self.fh.flush()
        os.kill(os.getpid(), signal.SIGTERM)  # delivered here, mid-write
        raise AssertionError("SIGTERM did not stop the write")
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.fh.close()

real_open = open
metagen.outputs.open = lambda f, mode="r", *a, **k: Stall(real_open(f, mode, *a, **k)) if "w" in mode else real_open(f, mode, *a, **k)
cli._entry(lambda: cli.main(sys.argv[1:]) if sys.argv[1] == "synth" else cli.metagenc_main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["synth", MINIMAL, "--tiny", "--out", "runs", "--run-id", "r"], [MINIMAL, "--target", "ir", "--tiny", "-o", "m.mgir"]])
def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path, argv):
    r = subprocess.run([sys.executable, "-c", SIGTERM_DURING_WRITE, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 128 + 15, r.stderr
    assert "Traceback" not in r.stderr
    assert listing(tmp_path) == [] and [e for e in os.listdir(tmp_path) if e.startswith(".metagen-")] == []


@pytest.mark.parametrize("out", ["newdir/", "sub/..", "."])
def test_output_named_like_a_folder_is_refused(tmp_path, monkeypatch, capsys, out):
    """`-o out/` wrote a file named `out` (the fuzzer's case 552 of seed 18)."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(metagenc_main, [MINIMAL, "--target", "ir", "--tiny", "-o", out], capsys)
    assert code == 1 and err.startswith(f"{out}:1:1: error: cannot write output: a name ending in '/', '.' or '..' is a folder's")
    assert os.listdir(tmp_path) == []


def test_define_on_a_spec_that_is_not_a_mapping(tmp_path, capsys):
    """`-D architecture.heads=3` on a spec whose text is one word raised TypeError
    (the fuzzer's case 338 of seed 18)."""
    spec = write(tmp_path / "s.yaml", "metag\n")
    code, _, err = _run(main, ["validate", spec, "-D", "architecture.heads=3", "-D", "name=x"], capsys)
    assert code == 1 and f"{spec}:1:1: error: a spec must be a mapping of sections, not a string" in err


def test_c_locale_file_names_round_trip_through_depfile_and_stdout(tmp_path):
    """Under LC_ALL=C (PYTHONUTF8=0) the bytes of `ü.yaml` reach Python as surrogates;
    the depfile and `wrote ...` raised UnicodeEncodeError (bench/fuzz.py seed 18, case
    3302). They now carry the names' own bytes."""
    shutil.copy(MINIMAL, tmp_path / "ü.yaml")
    env = _ascii_env()
    r = subprocess.run([METAGENC, "ü.yaml", "--target", "ir", "--tiny", "-o", "☃/o.mgir", "-MD"], cwd=tmp_path,
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert (tmp_path / "☃" / "o.mgir.d").read_bytes() == "☃/o.mgir: ü.yaml\nü.yaml:\n".encode()
    r = subprocess.run([METAGEN, "synth", "ü.yaml", "--tiny", "--out", "ü", "--run-id", "r"], cwd=tmp_path,
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("wrote ü/r\n".encode()), r.stderr


def test_precision_flag_sets_the_specs_precision(tmp_path, capsys):
    """`--precision P` is `-D constraints.precision=P` (one concept), on metagen and
    metagenc alike; the later of the two wins; an unknown precision is a usage error."""
    spec = example("tutorial", "pattern_edge.yaml")  # edge: int8 by default
    assert main(["validate", spec, "--precision", "fp16"]) == 0
    assert capsys.readouterr().out.splitlines()[4].endswith(", fp16")
    assert main(["validate", spec, "-D", "constraints.precision=fp32", "--precision", "bf16"]) == 0
    assert capsys.readouterr().out.splitlines()[4].endswith(", bf16")
    out = tmp_path / "m.mgir"
    assert metagenc_main([spec, "--target", "ir", "--tiny", "--precision", "fp16", "-o", str(out)]) == 0
    with pytest.raises(SystemExit) as exc:
        metagenc_main([spec, "--target", "ir", "--precision", "int4", "-o", str(out)])
    assert exc.value.code == 2
