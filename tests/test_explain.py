"""A CLI that explains itself: help text for every command and option, the summary
of `validate` and `synth`, `metagen explain` (why each free dimension has its value)
and `metagen compare` (two designs side by side)."""

from __future__ import annotations

import argparse
import json
import os
import textwrap

import pytest

from conftest import example
from metagen.artifacts import params_estimate
from metagen.cli import main, metagenc_main
from metagen.diagnostics import DiagnosticSink
from metagen.pipeline import compile_spec

SPEC = textwrap.dedent("""\
    metagen_version: "1.0"
    name: "small_lm"
    modality:
      inputs: ["text"]
      outputs: ["text"]
    constraints:
      parameter_budget:
        max: "20M"
      context_window: "1k"
    """)


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------ help text


def _parsers(entry, monkeypatch) -> list[argparse.ArgumentParser]:
    """Every parser `entry` builds: the top one and each sub-command's."""
    grabbed = []

    def grab(self, *args, **kwargs):
        grabbed.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(SystemExit):
        entry([])
    out, todo = [], list(grabbed)
    while todo:
        p = todo.pop()
        out.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())
    return out


@pytest.mark.parametrize("entry", [main, metagenc_main], ids=["metagen", "metagenc"])
def test_every_command_and_option_has_help(entry, monkeypatch):
    parsers = _parsers(entry, monkeypatch)
    assert len(parsers) >= (8 if entry is main else 1)
    for p in parsers:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for c in a._choices_actions:
                    assert c.help, f"{p.prog} {c.dest}: no help"
            else:
                assert a.help and a.help != argparse.SUPPRESS, f"{p.prog} {a.option_strings or a.dest}: no help"


def test_synth_help_describes_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    out = capsys.readouterr().out
    assert "run folder" in out and "test scale" in out and "as if written in the spec" in out


# ------------------------------------------------------------------ summaries


def test_validate_keeps_its_ok_line_and_adds_a_summary(tmp_path, capsys):
    spec = write(tmp_path / "lm.yaml", SPEC)
    assert main(["validate", spec]) == 0
    lines = capsys.readouterr().out.splitlines()
    comp = compile_spec(spec, DiagnosticSink())
    r = comp.ctx.report
    assert lines[0].startswith("OK small_lm (decoder_lm, ") and lines[0].endswith(f"binding: {r['binding_constraint']})")
    summary = {k.strip(): v.strip() for k, v in (line.split(": ", 1) for line in lines[1:])}
    assert summary["family"] == "decoder_lm"
    assert summary["parameters"].endswith(f"({r['total_params']:,})")
    assert summary["binding constraint"] == r["binding_constraint"]
    assert "weights" in summary["inference memory"] and "kv cache" in summary["inference memory"]


def test_synth_summary_names_the_folder(tmp_path, capsys):
    assert (
        main(["synth", example("tutorial", "step1_minimal.yaml"), "--tiny", "--out", str(tmp_path / "runs"), "--run-id", "r"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    folder = str(tmp_path / "runs" / "r")
    assert lines[0] == f"wrote {folder}"
    assert f"  folder:             {folder}" in lines and any(line.startswith("  inference memory:") for line in lines)


# ------------------------------------------------------------------ explain


def test_fit_trace_records_why_and_stays_out_of_params_estimate(tmp_path):
    comp = compile_spec(example("tutorial", "step3_constraints.yaml"), DiagnosticSink())
    r = comp.ctx.report
    trace, fit = r["fit_trace"], r["fit"]
    assert "fit_trace" not in json.dumps(params_estimate(comp))
    chosen = [t for t in trace if all(fit["chosen"][k] == v for k, v in t["width"].items())]
    assert len(chosen) == 1
    (pick,) = chosen
    reaching = [t for t in trace if t.get("outcome") == "reaches the minimum"]
    assert pick in reaching and pick["distance"] == min(t["distance"] for t in reaching)  # the rule
    assert pick["depth"] == fit["chosen"]["layers"] == min(pick["depth_limits"].values())
    assert r["binding_constraint"] == pick["limited_by"]
    for t in trace:  # every width gets an outcome; a depth never exceeds what a bound allows
        assert t.get("outcome")
        if t.get("depth"):
            assert t["depth"] <= min(t["depth_limits"].values())


def test_explain_names_each_free_dimension_and_the_pinned_ones(tmp_path, capsys):
    spec = write(tmp_path / "lm.yaml", SPEC)
    assert main(["explain", spec, "-D", "architecture.head_dim=32"]) == 0
    out = capsys.readouterr().out
    comp = compile_spec(spec, DiagnosticSink(), overrides=[("architecture.head_dim", "32")])
    fit = comp.ctx.report["fit"]
    assert "pinned: head_dim = 32" in out
    assert f"binding constraint: {comp.ctx.report['binding_constraint']}" in out
    why = out.split("why each free dimension has its value:\n")[1]
    for k in fit["free"]:
        assert why.count(f"{k} = {fit['chosen'][k]}") == 1, k
    assert sum(line.startswith("*") for line in out.splitlines()) == 1  # the chosen width, marked
    assert f"candidates: {len(comp.ctx.report['fit_trace'])} widths" in out


def test_explain_tiny_says_there_is_no_fit(capsys):
    assert main(["explain", example("tutorial", "step1_minimal.yaml"), "--tiny"]) == 0
    out = capsys.readouterr().out
    assert "no fit: --tiny" in out and "  layers = " in out


def test_explain_bad_spec_is_located(tmp_path, capsys):
    spec = write(tmp_path / "bad.yaml", SPEC.replace("modality", "modalty"))
    assert main(["explain", spec]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:3:1: error:" in err and "Traceback" not in err


# ------------------------------------------------------------------ compare


def test_compare_run_and_spec_side_by_side(tmp_path, capsys):
    spec = write(tmp_path / "lm.yaml", SPEC)
    other = write(tmp_path / "big.yaml", SPEC.replace('"20M"', '"40M"'))
    assert main(["synth", spec, "--out", str(tmp_path / "runs"), "--run-id", "a"]) == 0
    run = str(tmp_path / "runs" / "a")
    capsys.readouterr()
    assert main(["compare", run, other, "--json"]) == 0
    text = capsys.readouterr().out
    got = json.loads(text)
    assert text == json.dumps(got, sort_keys=True, indent=2) + "\n"  # strict, sorted keys
    a, b = got["a"], got["b"]
    assert (a["source"], b["source"]) == (run, other)
    assert a["total_params"] < b["total_params"] and "total_params" in got["differs"]
    assert a["total_params"] == compile_spec(spec, DiagnosticSink()).ctx.report["total_params"]
    assert sum(a["params_by_module"].values()) == a["total_params"]
    assert a["memory"]["total"] > 0 and a["latency_s"] > 0 and a["binding_constraint"]
    assert all(k in a["dimensions"] for k in ("hidden_size", "layers", "heads"))
    # the same design read from its run folder and compiled from its spec agrees
    assert main(["compare", run, spec, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["differs"] == []
    assert main(["compare", run, other]) == 0
    rows: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines():
        if line[2:].strip():
            rows.setdefault(line[2:].split()[0], line)  # the first row of that name
    assert rows["parameters"].startswith("*") and rows["family"].startswith(" ")


def test_compare_bad_input_is_located(tmp_path, capsys):
    spec = write(tmp_path / "lm.yaml", SPEC)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), spec]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{empty}:1:1: error: not a run folder") and "Traceback" not in err
    run = tmp_path / "run" / "blueprint"
    run.mkdir(parents=True)
    (run / "architecture.yaml").write_text("name: x\nfamily: decoder_lm\n")
    (run / "params_estimate.json").write_text('{"total_params": 1,\n  oops}')
    assert main(["compare", str(tmp_path / "run"), spec]) == 1
    err = capsys.readouterr().err
    assert f"{run / 'params_estimate.json'}:2:3: error: not valid JSON" in err and "Traceback" not in err
    for text, message in (
        ('{"total_params": "many"}', "a parameter count must be an integer"),
        ('{"total_params": 1, "by_module": {"blocks": {"count": 2}}}', "not a record of 'metagen synth'"),
        ('{"total_params": NaN}', "NaN is not a JSON number"),
        ("[1]", "expected a mapping"),
    ):
        (run / "params_estimate.json").write_text(text)
        assert main(["compare", str(tmp_path / "run"), spec]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{run / 'params_estimate.json'}:1:1: error: ") and message in err, err
    (run / "architecture.yaml").write_text("name: [x\n")
    assert main(["compare", str(tmp_path / "run"), spec]) == 1
    assert f"{run / 'architecture.yaml'}:2:1: error: not valid YAML" in capsys.readouterr().err
    bad = write(tmp_path / "bad.yaml", "name: [\n")
    assert main(["compare", spec, bad]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:") and "Traceback" not in err
