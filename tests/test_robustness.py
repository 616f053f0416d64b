"""Hostile and broken input: exact diagnostics for tests/invalid/*, fuzzing of both
frontends, alias bombs, absurd values, code injection through spec strings, and
failed compiles that leave nothing behind. A bad spec never gets a traceback."""

from __future__ import annotations

import ast
import contextlib
import glob
import io
import os
import re
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, example
from metagen import golden
from metagen.cli import main, metagenc_main

INVALID = os.path.join(ROOT, "tests", "invalid")
DIAG = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|note): (?P<msg>.+)$")
UPDATE = os.environ.get("METAGEN_UPDATE_EXPECTED") == "1"


def run_cli(fn, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = fn(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def diagnostic_lines(stderr: str) -> list[str]:
    """The `path:line:col: severity: message` lines, without the source echo."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    diags = [ln for ln in lines if DIAG.match(ln)]
    for ln in lines:
        assert DIAG.match(ln) or ln.startswith("    "), f"stderr line is neither a diagnostic nor a source echo: {ln!r}"
    return diags


# ------------------------------------------------------------------ tests/invalid/*.yaml


INVALID_CASES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(INVALID, "*.yaml")) + glob.glob(os.path.join(INVALID, "*.mg")))


@pytest.mark.parametrize("name", INVALID_CASES)
def test_invalid_spec_gets_exact_diagnostics(name, monkeypatch):
    """Each tests/invalid/X gets exactly the diagnostic lines in X.expected (path as
    given on the command line), exit 1 and no traceback (how fast: bench/robustness_bench.py).
    METAGEN_UPDATE_EXPECTED=1 rewrites the .expected files and skips the comparison."""
    monkeypatch.chdir(ROOT)
    rel = f"tests/invalid/{name}"
    code, out, err = run_cli(main, ["validate", rel])
    assert "Traceback" not in err
    assert code == 1, f"{rel} was accepted: {out}{err}"
    got = diagnostic_lines(err)
    assert got and all(DIAG.match(ln)["path"] == rel for ln in got)
    expected_path = os.path.join(INVALID, os.path.splitext(name)[0] + ".expected")
    if UPDATE:
        with open(expected_path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(got) + "\n")
        pytest.skip(f"wrote {os.path.relpath(expected_path, ROOT)}; review the diff, then run without METAGEN_UPDATE_EXPECTED")
    with open(expected_path, encoding="utf-8") as fh:
        expected = fh.read().splitlines()
    assert got == expected


def test_every_expected_file_has_a_spec():
    for p in glob.glob(os.path.join(INVALID, "*.expected")):
        stem = os.path.splitext(p)[0]
        assert any(os.path.exists(stem + ext) for ext in (".yaml", ".mg")), p


def test_alias_bomb_is_rejected():
    from metagen.diagnostics import CompileError
    from metagen.frontend.yaml_frontend import parse_yaml

    levels = ["a0: &a0 [" + ",".join(['"lol"'] * 9) + "]"]
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]  # 9^12 leaves
    with pytest.raises(CompileError) as exc:
        parse_yaml("\n".join(levels) + "\n", "bomb.yaml")
    assert "alias bomb" in str(exc.value) and str(exc.value).startswith("bomb.yaml:")


def test_absurd_budget_does_not_hang_the_fitter(tmp_path):
    """The largest budget allowed (10T) is fitted or refused with diagnostics (in
    seconds, not hours: bench/robustness_bench.py times it)."""
    spec = tmp_path / "big.yaml"
    spec.write_text(
        'metagen_version: "1.0"\nname: "big"\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
        'constraints:\n  parameter_budget:\n    max: "10T"\n  context_window: "1M"\n'
    )
    code, out, err = run_cli(main, ["validate", str(spec)])
    assert code in (0, 1) and "Traceback" not in err
    diagnostic_lines(err)


def test_oversized_and_unreadable_specs(tmp_path):
    big = tmp_path / "huge.yaml"
    big.write_bytes(b"# " + b"x" * (5 * 1024 * 1024) + b"\n")
    code, _, err = run_cli(main, ["validate", str(big)])
    assert code == 1 and f"{big}:1:1: error: spec file is" in err
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    code, _, err = run_cli(main, ["validate", str(folder)])
    assert code == 1 and f"{folder}:1:1: error: cannot read spec" in err
    other = tmp_path / "spec.toml"
    other.write_text("x = 1\n")
    code, _, err = run_cli(main, ["validate", str(other)])
    assert code == 1 and "unknown spec extension '.toml'" in err


# ------------------------------------------------------------------ fuzzing

FUZZ_SETTINGS = settings(
    max_examples=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SCRATCH = tempfile.mkdtemp(prefix="metagen-fuzz-")


def check_never_crashes(text: str, ext: str = ".yaml") -> None:
    path = os.path.join(SCRATCH, "fuzz" + ext)
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(text)
    code, out, err = run_cli(main, ["validate", path])
    assert code in (0, 1), (code, err)
    diags = diagnostic_lines(err)
    if code == 1:
        assert any(DIAG.match(d)["sev"] == "error" for d in diags), err
    else:
        assert out.startswith("OK "), out
    for d in diags:
        m = DIAG.match(d)
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1


def tokens(alphabet: str, extra: list[str], max_size: int):
    return st.lists(st.sampled_from(list(alphabet) + extra), max_size=max_size).map("".join)


YAML_TEXT = tokens("abcdemnortx:-[]{},&*!|>'\"#%@` \n\t0123456789.eE+_~?\x7f\x00", ["\u2028", "é", "∞", "<<", "\ufeff"], 60)
INTERESTING = [
    "-1", "0", "1e309", "-5M", "1e30", "999999999k", "null", "~", "[]", "{}", "true", "0x1F", "∞", "nan", ".inf",
    '"', "'", "&a", "*a", "!!binary aGk=", "!!python/name:os.system", "12345678901234567890", "[text]", "{a: 1}",
    "'8xA100'", "5 days", "2.5", "-", ":", "? x", "|", "\"\\u0000\"",
]


def example_texts(ext: str) -> list[str]:
    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "*", "*" + ext)))
    return [open(p, encoding="utf-8").read() for p in paths]


@st.composite
def mutated(draw, texts: list[str]):
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "value", "dupline", "swaplines", "truncate"]))
        n = len(text)
        i = draw(st.integers(0, max(n - 1, 0)))
        if kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 12)):]
        elif kind == "insert":
            text = text[:i] + draw(YAML_TEXT.filter(bool)) + text[i:]
        elif kind == "value":
            lines = text.splitlines()
            if lines:
                j = draw(st.integers(0, len(lines) - 1))
                head = re.split(r"(:\s*|\s+)", lines[j], maxsplit=1)[0]
                lines[j] = f"{head}: {draw(st.sampled_from(INTERESTING))}" if ":" in lines[j] else draw(st.sampled_from(INTERESTING))
                text = "\n".join(lines) + "\n"
        elif kind == "dupline":
            lines = text.splitlines(keepends=True)
            if lines:
                j = draw(st.integers(0, len(lines) - 1))
                lines.insert(j, lines[j])
                text = "".join(lines)
        elif kind == "swaplines":
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                j = draw(st.integers(0, len(lines) - 2))
                lines[j], lines[j + 1] = lines[j + 1], lines[j]
                text = "".join(lines)
        else:
            text = text[:i]
    return text


@FUZZ_SETTINGS
@given(YAML_TEXT)
def test_fuzz_random_yaml_never_crashes(text):
    check_never_crashes(text)


@FUZZ_SETTINGS
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(INTERESTING),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "modality", "inputs", "outputs", "constraints", "architecture", "layers",
                         "parameter_budget", "max", "metagen_version", "family", "training", "x"]), kids, max_size=4),
    max_leaves=12,
))
def test_fuzz_structured_yaml_never_crashes(value):
    import json

    check_never_crashes(json.dumps(value, ensure_ascii=False, allow_nan=True), ".json")


@FUZZ_SETTINGS
@given(mutated(example_texts(".yaml")))
def test_fuzz_mutated_example_yaml_never_crashes(text):
    check_never_crashes(text)


@FUZZ_SETTINGS
@given(mutated(example_texts(".mg") or ["metagen 1.0\n"]))
def test_fuzz_mutated_example_mg_never_crashes(text):
    check_never_crashes(text, ".mg")


@FUZZ_SETTINGS
@given(tokens('metagn1.0 model"{}[]()=;:,#\n\t-+*/<>x0123456789\\', ["import ", "model ", "metagen 1.0\n", "∞"], 60))
def test_fuzz_random_mg_never_crashes(text):
    check_never_crashes(text, ".mg")


# ------------------------------------------------------------------ code injection

HOSTILE_NAME = "x\"; __import__('os').system('touch pwned') #"
HOSTILE_SPEC = r'''metagen_version: "1.0"
name: "x\"; __import__('os').system('touch pwned') #"
description: "line one\n\"\"\" ''' + "'''" + r''' \\ \u2028 end\n}); import os; os.system('touch pwned') //\r\n\U0001F600 ünïcödé ${HOME} $(touch pwned) `touch pwned`"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  parameter_budget:
    max: "5M"
'''

PROBE = r"""
import importlib.util, os, sys
import numpy as np
path, do_run = sys.argv[1], sys.argv[2] == "1"
spec = importlib.util.spec_from_file_location("hostile_model", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert isinstance(mod.CONFIG, dict) and mod.OUTPUTS
if do_run:
    out = mod.run(mod.init(0), mod.example_inputs(batch_size=1))
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
print("OK", mod.Model.__name__)
"""


def test_hostile_strings_compile_to_safe_code(tmp_path):
    from metagen.ir.parser import parse_model

    work = tmp_path / "work"
    work.mkdir()
    spec = work / "hostile.yaml"
    spec.write_text(HOSTILE_SPEC, encoding="utf-8")
    targets = list(dict.fromkeys(v.target for v in golden.VARIANTS))
    outputs = {}
    for t in targets:
        out = work / f"model_{t}" / {"onnx": "model.onnx", "ir": "model.mgir"}.get(t, "model.py")
        code, _, err = run_cli(metagenc_main, [str(spec), "--target", t, "--tiny", "-o", str(out)])
        assert code == 0, err
        outputs[t] = out
    code, _, err = run_cli(main, ["synth", str(spec), "--tiny", "--out", str(work / "synth")])
    assert code == 0, err

    parse_model(outputs["ir"].read_text(encoding="utf-8"))
    py_files = [outputs[t] for t in ("torch", "flax") if t in outputs]
    py_files += [p for p in (work / "synth").rglob("*.py")]
    for p in py_files:
        src = p.read_text(encoding="utf-8")
        tree = ast.parse(src, filename=str(p))
        # the hostile text may appear only inside string constants (docstrings), never as code
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                assert node.id != "__import__", p
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "system", p
    if "onnx" in outputs:
        import onnx

        onnx.checker.check_model(onnx.load(str(outputs["onnx"]), load_external_data=False))
    for t in ("torch", "flax"):
        if t in outputs:
            r = subprocess.run([sys.executable, "-c", PROBE, str(outputs[t]), "1" if t == "torch" else "0"],
                               cwd=work, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            name = r.stdout.split()[-1]
            assert name.isidentifier() and name.isascii()
    assert not list(tmp_path.rglob("pwned")) and not os.path.exists(os.path.join(ROOT, "pwned"))


def test_number_as_model_name_gets_a_valid_class_name(tmp_path):
    spec = tmp_path / "n.yaml"
    spec.write_text('metagen_version: "1.0"\nname: 12345\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
                    'constraints:\n  parameter_budget:\n    max: "5M"\n')
    out = tmp_path / "n.py"
    code, _, err = run_cli(metagenc_main, [str(spec), "--target", "torch", "--tiny", "-o", str(out)])
    assert code == 0, err
    tree = ast.parse(out.read_text())
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes and all(c.isidentifier() for c in classes)


# ------------------------------------------------------------------ failed compiles write nothing


def test_failed_compile_leaves_no_output_and_keeps_old_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('metagen_version: "1.0"\nname: "b"\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
                   'constraints:\n  parameter_budget:\n    max: "-5M"\n')
    for t in ("ir", "torch"):
        code, _, _ = run_cli(metagenc_main, [str(bad), "--target", t, "-o", str(tmp_path / f"out.{t}"), "-MD"])
        assert code == 1
    code, _, _ = run_cli(main, ["synth", str(bad), "--out", str(tmp_path / "runs")])
    assert code == 1
    assert sorted(os.listdir(tmp_path)) == ["bad.yaml"]
    keep = tmp_path / "keep.mgir"
    keep.write_text("previous build\n")
    code, _, _ = run_cli(metagenc_main, [str(bad), "--target", "ir", "-o", str(keep)])
    assert code == 1 and keep.read_text() == "previous build\n"


# ------------------------------------------------------------------ spec input (issue 18)
#
# Every reproducer from the adversarial campaign on the input side, written here: a
# located diagnostic (or the right value), never a traceback, within the limits that
# docs/robustness.md lists.

HEAD_YAML = 'metagen_version: "1.0"\nname: "t"\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
HEAD_MG = 'metagen 1.0\nmodel "t" {\n  modality { inputs [text]; outputs [text] }\n'


def with_imports(*names: str) -> str:
    return "metagen 1.0\n" + "".join(f'import "{n}"\n' for n in names) + HEAD_MG.split("\n", 1)[1] + "}\n"


def validate(tmp_path, text: str, ext: str = ".yaml", *defines: str, name: str = "s") -> tuple[int, str, str]:
    path = tmp_path / f"{name}{ext}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    argv = ["validate", str(path)]
    for d in defines:
        argv += ["-D", d]
    code, out, err = run_cli(main, argv)
    assert "Traceback" not in err and code in (0, 1), err
    return code, out, err


def errors_of(err: str) -> list[str]:
    """`line:col: message` of each error (path dropped)."""
    return [f'{m["line"]}:{m["col"]}: {m["msg"]}' for m in map(DIAG.match, diagnostic_lines(err)) if m["sev"] == "error"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("!!int abc", "bad scalar: 'abc' is not an integer (write decimal digits)"),
        ("!!float x", "bad scalar: 'x' is not a number (write decimal digits)"),
        ("!!bool maybe", "bad scalar: 'maybe' is not a boolean (write true or false)"),
        ("!!timestamp x", "bad scalar: 'x' is not a timestamp"),
        ("!!timestamp 2001-02-03T10:00:00+25:00", "is not a timestamp"),
        ("!!timestamp 2001-02-30", "is not a timestamp"),
        ('"\\ud800"', "string holds a lone surrogate (U+D800), which is not a character"),
        ('"\\U00110000"', "malformed YAML: an escape names no character"),
    ],
)
def test_yaml_scalars_that_fail_construction_are_located(tmp_path, value, message):
    code, _, err = validate(tmp_path, HEAD_YAML + f"description: {value}\n")
    errs = errors_of(err)
    assert code == 1 and len(errs) == 1 and errs[0].startswith("6:") and message in errs[0], err
    # -D reads its value by the same rules, and says so at the option
    code, _, err = validate(tmp_path, HEAD_YAML, ".yaml", f"description={value}")
    expected = errs[0].split(": ", 1)[1].replace("malformed YAML: ", "")
    assert code == 1 and errors_of(err) == [f"1:1: -D description: {expected}"], err


def test_json_lone_surrogate_is_located(tmp_path):
    text = '{"metagen_version": "1.0", "name": "\\ud83d", "modality": {"inputs": ["text"], "outputs": ["text"]}}'
    code, _, err = validate(tmp_path, text, ".json")
    assert code == 1 and errors_of(err) == ["1:36: string holds a lone surrogate (U+D83D), which is not a character"]


def test_dates_are_text_in_files_and_in_defines(tmp_path):
    """A plain `2001-02-03` is the text written, in a file and after -D alike (YAML
    1.1 made it a date: 'must be a string, not a string'); `2001-02-30` no longer
    raises from datetime."""
    from metagen.diagnostics import DiagnosticSink
    from metagen.pipeline import load_spec

    for date in ("2001-02-03", "2001-02-30", "2001-02-03 10:00:00"):
        spec = tmp_path / "d.yaml"
        spec.write_text(HEAD_YAML + f"description: {date}\n")
        assert load_spec(str(spec), DiagnosticSink())[0].description == date
        bare = tmp_path / "b.yaml"
        bare.write_text(HEAD_YAML)
        assert load_spec(str(bare), DiagnosticSink(), [("description", date)])[0].description == date


# -- numbers: one grammar in YAML, .mg and -D ----------------------------------------

ONE_MEANING = [
    # (written, what every frontend makes of it in 'architecture.layers')
    ("12", None),
    ("010", "'architecture.layers' must be an integer, not a string '010'; a number cannot start with 0"),
    ("1:30", "'architecture.layers' must be an integer, not a string '1:30'"),
    ("0x10", "'architecture.layers' must be an integer, not a string '0x10'"),
    ("1_000", "'architecture.layers' must be an integer, not a string '1_000'"),
    ("１２", "'architecture.layers' must be an integer, not a string '１２'"),  # fullwidth
    ("١٢", "'architecture.layers' must be an integer, not a string '١٢'"),  # Arabic-Indic
]


@pytest.mark.parametrize("written, message", ONE_MEANING)
def test_numbers_mean_the_same_in_yaml_mg_and_defines(tmp_path, written, message):
    """`010` was 8 in YAML and -D but 10 in .mg; `1:30` was 90 (sexagesimal); Unicode
    digits were read by float(). Now one grammar: decimal ASCII digits, no leading zero."""
    runs = [
        validate(tmp_path, HEAD_YAML + f"architecture:\n  layers: {written}\n"),
        validate(tmp_path, HEAD_MG + f"  architecture {{ layers {written} }}\n}}\n", ".mg")
        if ":" not in written
        else validate(tmp_path, HEAD_MG + f'  architecture {{ layers "{written}" }}\n}}\n', ".mg"),
        validate(tmp_path, HEAD_YAML, ".yaml", f"architecture.layers={written}"),
    ]
    for code, out, err in runs:
        if message is None:
            assert code == 0, err
        else:
            assert code == 1 and len(errors_of(err)) == 1 and message in errors_of(err)[0], err


def test_leading_zero_text_is_kept_as_written(tmp_path):
    from metagen.diagnostics import DiagnosticSink
    from metagen.pipeline import load_spec

    y = tmp_path / "z.yaml"
    y.write_text(HEAD_YAML.replace('name: "t"', "name: 007"))
    m = tmp_path / "z.mg"
    m.write_text(HEAD_MG.replace('model "t"', "model 007") + "}\n")
    names = {load_spec(str(p), DiagnosticSink())[0].name for p in (y, m)}
    names.add(load_spec(str(y), DiagnosticSink(), [("name", "007")])[0].name)
    assert names == {"007"}


HUGE = ["9" * 310, "1" * 5000]


@pytest.mark.parametrize("digits", HUGE, ids=["310-digits", "5000-digits"])
def test_huge_numbers_are_diagnosed_not_raised(tmp_path, digits):
    """~310 digits overflowed float() (OverflowError); >4300 hit int()'s limit (ValueError)."""
    too_long = f"a number of {len(digits)} digits is too long; numbers have at most 100 digits"
    fields = {
        "architecture:\n  layers: {}\n": too_long,
        "constraints:\n  parameter_budget:\n    max: {}\n": too_long,
        'constraints:\n  parameter_budget:\n    max: "{}M"\n': too_long,
        'constraints:\n  context_window: "{}"\n': too_long,
        'constraints:\n  memory_budget: "{}GB"\n': too_long,
        'training:\n  compute:\n    hardware: "{}xA100"\n': too_long,
        'training:\n  compute:\n    duration: "{} days"\n': too_long,
        'training:\n  data:\n    size: "{} tokens"\n': too_long,
    }
    for template, message in fields.items():
        code, _, err = validate(tmp_path, HEAD_YAML + template.format(digits))
        assert code == 1 and any(message in e for e in errors_of(err)), (template, err)
    code, _, err = validate(tmp_path, HEAD_MG + f"  architecture {{ layers {digits} }}\n}}\n", ".mg")
    assert code == 1 and errors_of(err) == [f"4:25: {too_long}"]
    code, _, err = validate(tmp_path, HEAD_YAML, ".yaml", f"architecture.layers={digits}")
    assert code == 1 and errors_of(err) == [f"1:1: -D architecture.layers: {too_long}"]
    assert len(err) < 2000  # the number is not echoed whole


# -- import depth -------------------------------------------------------------------


def _chain(tmp_path, n: int, last: str = 'model "m" { description "x" }\n') -> str:
    for i in range(n):
        body = f'import "c{i + 1}.mg"\nmodel "m" {{}}\n' if i < n - 1 else last
        (tmp_path / f"c{i}.mg").write_text("metagen 1.0\n" + body)
    return str(tmp_path / "c0.mg")


def test_import_chain_deeper_than_the_limit_is_a_located_error(tmp_path):
    """500 files deep raised RecursionError; the chain is limited to MAX_IMPORT_DEPTH."""
    from metagen.frontend.tree import MAX_IMPORT_DEPTH

    code, _, err = run_cli(main, ["validate", _chain(tmp_path, 500)])
    assert code == 1 and "Traceback" not in err
    first = diagnostic_lines(err)[0]
    n = MAX_IMPORT_DEPTH
    assert first == (
        f'{tmp_path / f"c{n - 1}.mg"}:2:8: error: cannot import "c{n}.mg": imports nest more than {n} files deep '
        f"(from {tmp_path / 'c0.mg'}); refusing to load it"
    )


def test_import_chain_at_the_limit_loads_even_with_deep_yaml_at_its_end(tmp_path):
    from metagen.diagnostics import DiagnosticSink
    from metagen.frontend.dsl import parse_dsl_file
    from metagen.frontend.tree import MAX_DEPTH, MAX_IMPORT_DEPTH

    deep = "description: " + "[" * (MAX_DEPTH - 2) + "x" + "]" * (MAX_DEPTH - 2) + "\n"
    (tmp_path / "deep.yaml").write_text(deep)
    top = _chain(tmp_path, MAX_IMPORT_DEPTH - 1, 'import "deep.yaml"\nmodel "m" {}\n')  # deep.yaml is the last
    tree, deps = parse_dsl_file(top, DiagnosticSink())
    assert len(deps) == MAX_IMPORT_DEPTH and tree.value["description"].is_list


# -- diagnostics: linear in count, bounded in size ------------------------------------


def test_ten_thousand_errors_print_a_bounded_report(tmp_path):
    """10k unknown keys on one 100 KB line: 452 MB of stderr before (each error echoed
    the whole line); now 100 diagnostics, each echo clipped, and a count of the rest."""
    from metagen.diagnostics import MAX_SHOWN

    keys = ", ".join(f"k{i}: 1" for i in range(10_000))
    code, _, err = validate(tmp_path, HEAD_YAML + "architecture: {" + keys + "}\n")
    diags = diagnostic_lines(err)
    assert code == 1 and len(diags) == MAX_SHOWN + 1
    assert diags[-1].endswith(f"note: {10_000 - MAX_SHOWN} more errors not shown (at most {MAX_SHOWN} are printed)")
    assert max(len(line) for line in err.splitlines()) < 200 and len(err) < 40_000


def test_merging_diagnostics_is_linear(tmp_path, monkeypatch):
    """`d not in sink.items` compared every error with every other (10k duplicate .mg
    keys took 16 s); count the comparisons instead of timing them."""
    from metagen.diagnostics import Diagnostic

    calls = [0]
    eq = Diagnostic.__eq__

    def counting(self, other):
        calls[0] += 1
        return eq(self, other)

    monkeypatch.setattr(Diagnostic, "__eq__", counting)
    body = "".join(f'  description "d{i}"\n' for i in range(10_000))
    code, _, err = validate(tmp_path, HEAD_MG + body + "}\n", ".mg")
    assert code == 1 and diagnostic_lines(err)[-1].endswith("9899 more errors not shown (at most 100 are printed)")
    assert calls[0] < 5 * 10_000


def test_escapes_in_diagnostics_and_validate_output_are_escaped(tmp_path):
    """ESC and BEL in names, keys and echoed lines reached the terminal raw."""
    code, out, err = validate(tmp_path, HEAD_YAML.replace('"t"', '"t\\e[2J\\a"'))
    assert code == 0 and out.startswith("OK t\\x1b[2J\\x07 (") and "\x1b" not in out
    code, _, err = validate(tmp_path, HEAD_MG + '  "x\\u001b]0;pwn\\u0007" 1\n  note "\x1b[31m\x07"\n}\n', ".mg")
    assert code == 1 and "\x1b" not in err and "\x07" not in err
    assert 'unknown key "x\\x1b]0;pwn\\x07" at the top level' in err and "\\x1b[31m\\x07" in err


# -- budgets: .mg values, comment lines, YAML bytes after aliases ---------------------


def test_mg_value_budget_refuses_a_huge_list(tmp_path):
    """1.4M items ran past 120 s at 2 GB: the postlexer now stops at the budget."""
    from metagen.frontend.tree import MAX_VALUES

    code, _, err = validate(tmp_path, HEAD_MG + "  x [" + ",".join(["1"] * 1_400_000) + "]\n}\n", ".mg")
    errs = errors_of(err)
    assert code == 1 and len(errs) == 1 and errs[0].endswith(f"spec holds more than {MAX_VALUES} values; refusing to load it")


def test_a_million_comment_lines_are_one_token(tmp_path):
    """1M comment lines took 18 s and 690 MB (two Lark tokens a line); comment-only
    lines now ride in one new-line token, and the compiler never collects comments."""
    from metagen.frontend.dsl import _parse_lark

    text = "# c\n" * 1_000_000 + HEAD_MG + "}\n"
    code, out, _ = validate(tmp_path, text, ".mg")
    assert code == 0 and out.startswith("OK t ")
    _, comments = _parse_lark("# a\n\n  # b\nmetagen 1.0 # c\n# d\nmodel \"m\" {}\n", "c.mg")
    assert [(c.value, c.line, c.column) for c in comments] == [("# a", 1, 1), ("# b", 3, 3), ("# c", 4, 13), ("# d", 5, 1)]


def test_mg_imports_share_one_budget(tmp_path):
    """Each file is under 4 MiB; what they hold together is limited too."""
    big = "# " + "x" * (3 * 1024 * 1024) + "\nmodel \"b\" {}\n"
    (tmp_path / "a.mg").write_text(big)
    (tmp_path / "b.mg").write_text(big)
    code, _, err = validate(tmp_path, with_imports("a.mg", "b.mg"), ".mg")
    assert code == 1 and "hold more than 4 MiB of text together" in errors_of(err)[0]


def test_aliases_of_a_long_string_are_refused_by_bytes(tmp_path):
    """A 1 MB string aliased 200 times made `convert` write 210 MB: the budget now
    counts text after alias expansion, not just values."""
    text = HEAD_YAML + "description: &big " + "x" * 1_000_000 + "\nsources: [" + ", ".join(["*big"] * 200) + "]\n"
    code, _, err = validate(tmp_path, text)
    errs = errors_of(err)
    assert code == 1 and len(errs) == 1
    assert errs[0].endswith("spec expands to more than 4 MiB of text (aliases of long strings?); refusing to load it")
    code, out, err = run_cli(main, ["convert", str(tmp_path / "s.yaml"), "--to", "mg"])
    assert code == 1 and out == ""


# -- nonsense accepted silently before ------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("training.compute.hardware", "nan", "unknown accelerator 'nan' in 'nan'"),
        ("training.compute.hardware", "8xFOO", "unknown accelerator 'FOO' in '8xFOO'"),
        ("training.compute.hardware", "8xA100x2", "unknown accelerator 'A100x2' in '8xA100x2' (did you mean \"A100\"?)"),
        ("constraints.memory_budget", "0.1B", "memory budget '0.1B' is out of range; the allowed range is 1MB to 1PB"),
        ("training.data.size", "0.1 tokens", "data size '0.1 tokens' is out of range (1 to 10 quadrillion tokens)"),
        ("training.data.size", "1.5 samples", "data size '1.5 samples' is not a whole number of samples"),
        ("constraints.parameter_budget.max", "1G", "unknown suffix 'G' in '1G'; use K, M, B or T (e.g. \"500M\") (did you mean \"1B\"?)"),
        ("constraints.parameter_budget.max", "５M", "cannot read '５M' as a parameter count"),
        ("constraints.parameter_budget.max", "٥M", "cannot read '٥M' as a parameter count"),
        ("constraints.parameter_budget.max", "05M", "'05': a number cannot start with 0"),
    ],
)
def test_nonsense_values_are_refused(tmp_path, field, value, message):
    code, _, err = validate(tmp_path, HEAD_YAML, ".yaml", f"{field}={value}")
    errs = errors_of(err)
    assert code == 1 and len(errs) == 1 and f"'{field}': {message}" in errs[0], err


@pytest.mark.parametrize("hardware", ["8xA100", "512 x H100", "H100", "8xA100-80GB", "4xH100_SXM", "TPUv5e"])
def test_known_accelerators_and_variants_are_accepted(tmp_path, hardware):
    code, _, err = validate(tmp_path, HEAD_YAML, ".yaml", f"training.compute.hardware={hardware}")
    assert code == 0, err


def test_importing_a_file_that_is_not_a_spec_quotes_none_of_it(tmp_path):
    """A .mg import of a symlink to a key file printed the key's lines."""
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n"
    (tmp_path / "id_key").write_text(secret)
    for name in ("key.mg", "key.yaml"):
        (tmp_path / name).symlink_to("id_key")
        code, _, err = validate(tmp_path, with_imports(name), ".mg", name="main")
        assert code == 1 and "b3Bl" not in err and "BEGIN" not in err, err
        assert errors_of(err) == [f'2:8: cannot import "{name}": it is not a MetaGen spec ' + (
            "(a spec starts with 'metagen', 'import' or 'model')" if name.endswith(".mg")
            else "(a spec starts with a key such as 'metagen_version:')")]


def test_converted_yaml_reads_the_same_in_any_yaml_reader(tmp_path):
    """Text our reader keeps as text ("007", a date) is quoted in converted YAML, so
    PyYAML's safe_load (YAML 1.1) does not read 7 or a date."""
    import yaml

    spec = tmp_path / "t.mg"
    spec.write_text(HEAD_MG.replace('model "t"', "model 007") + "  description 2001-02-03\n}\n")
    code, out, err = run_cli(main, ["convert", str(spec), "--to", "yaml"])
    assert code == 0, err
    plain = yaml.safe_load(out)
    assert (plain["name"], plain["description"]) == ("007", "2001-02-03")
