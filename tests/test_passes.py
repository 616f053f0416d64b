"""The pass manager and the pipeline a user can see: options as fields, results that
say whether anything changed, declared requirements, and metagenc's
--list-passes / --print-after-all / --print-after."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from conftest import example
from metagen.cli import metagenc_main
from metagen.compiler.context import CompileContext
from metagen.compiler.pass_infra import Fact, Pass, PassManager, PassResult, PipelineError
from metagen.compiler.passes import BuildGraph, FitDimensions, SelectFamily, standard_passes
from metagen.diagnostics import CompileError, DiagnosticSink
from metagen.ir.parser import parse_model
from metagen.pipeline import compile_spec, load_spec

GPT2 = example("reference", "gpt2_small.yaml")  # every size pinned
EDGE = example("tutorial", "pattern_edge.yaml")  # sizes free


@pytest.mark.parametrize("tiny", [False, True])
def test_standard_pipelines_are_in_order_and_documented(tiny):
    passes = standard_passes(tiny)
    PassManager(passes)  # the manager accepts the order (it raises otherwise)
    names = [p.name for p in passes]
    assert len(set(names)) == len(names)
    assert ("shrink" in names, "fit-dimensions" in names) == (tiny, not tiny)
    for p in passes:
        assert dataclasses.is_dataclass(p) and type(p).__dataclass_params__.frozen
        summary = p.summary()
        # A real one-line docstring, not the dataclass's generated "Name(...)".
        assert summary and "\n" not in summary and not summary.startswith(type(p).__name__ + "(")


def test_a_pass_before_what_it_requires_is_rejected():
    with pytest.raises(PipelineError, match="'build-graph' requires every architecture dimension resolved"):
        PassManager([SelectFamily(), BuildGraph()])
    # What the caller already has counts as ensured.
    PassManager([BuildGraph()], given=frozenset({Fact.ARCHITECTURE}))


def test_options_are_frozen_fields_and_spelled_like_xdsl():
    assert FitDimensions().spelling() == "fit-dimensions"
    assert FitDimensions(print_time=True).spelling() == "fit-dimensions{print-time=true}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        FitDimensions().print_time = True


def _changes(spec: str, tiny: bool = False) -> dict[str, bool]:
    seen: dict[str, bool] = {}
    compile_spec(spec, DiagnosticSink(), tiny=tiny, instruments=[lambda p, r, ctx: seen.__setitem__(p.name, r.changed)])
    return seen


def test_results_say_what_changed():
    assert _changes(EDGE) == {
        "select-family": True,
        "resolve-defaults": True,
        "fit-dimensions": True,
        "build-graph": True,
        "count-parameters": False,
        "check-constraints": False,
        "estimate-training-compute": False,
    }
    # Nothing free to fit: the fitter leaves the architecture alone and says so.
    assert _changes(GPT2)["fit-dimensions"] is False
    assert _changes(GPT2, tiny=True)["shrink"] is True


@dataclass(frozen=True)
class _Corrupt(Pass):
    """Break the model's output names (a pass with a bug)."""

    name = "corrupt"
    requires = frozenset({Fact.MODEL})

    def run(self, ctx):
        top = ctx.model.top_module
        top.output_names.append(top.output_names[0])
        return PassResult(changed=True)


def test_the_verifier_runs_after_a_pass_that_changed_the_model():
    sink = DiagnosticSink()
    spec, _ = load_spec(GPT2, sink)
    ctx = CompileContext(spec=spec, sink=sink)
    with pytest.raises(CompileError) as exc:
        PassManager([*standard_passes(True)[:4], _Corrupt()]).run(ctx)
    assert any("internal error after pass 'corrupt'" in d.message for d in exc.value.diagnostics)


@dataclass(frozen=True)
class _BreakANode(Pass):
    """Give one node of a block a wrong result type (a pass with a bug)."""

    name = "break-a-node"
    requires = frozenset({Fact.MODEL})

    def run(self, ctx):
        from metagen.ir.types import DType, TensorType

        block = next(m for m in ctx.model.modules.values() if m.name != ctx.model.top and m.nodes)
        node = next(n for n in block.nodes if n.kind == "op" and n.loc is not None)
        node.results[0].type = TensorType(DType.i64, (1,))
        return PassResult(changed=True)


def test_a_verifier_error_points_at_the_spec_key_that_built_the_node():
    """Nodes carry the spec location that caused them, so an internal error says
    which part of the user's spec it came from instead of the file's first line."""
    sink = DiagnosticSink()
    spec, _ = load_spec(GPT2, sink)
    ctx = CompileContext(spec=spec, sink=sink)
    with pytest.raises(CompileError) as exc:
        PassManager([*standard_passes(True)[:4], _BreakANode()]).run(ctx)
    diags = [d for d in exc.value.diagnostics if "break-a-node" in d.message]
    assert any("result types" in d.message for d in diags)
    assert diags and all(d.loc.path == GPT2 and d.loc.line > 1 for d in diags)


# ---------------------------------------------------------------- metagenc


def test_list_passes_needs_no_spec_and_follows_the_flags(capsys):
    assert metagenc_main(["--list-passes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == [p.name for p in standard_passes(False)]
    assert lines[2].split(None, 1)[1] == FitDimensions.summary()
    assert metagenc_main(["--list-passes", "--tiny"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[0] == "shrink"


def test_print_after_all_dumps_the_ir_after_every_pass(tmp_path, capsys):
    out = tmp_path / "m.mgir"
    assert metagenc_main([GPT2, "--target", "ir", "--tiny", "-o", str(out), "--print-after-all"]) == 0
    err = capsys.readouterr().err
    heads = [ln for ln in err.splitlines() if ln.startswith("; *** IR Dump After ")]
    assert [h.split()[5] for h in heads] == [p.name for p in standard_passes(True)]
    assert heads[0] == "; *** IR Dump After select-family (changed): no IR yet, family decoder_lm ***"
    assert heads[3] == "; *** IR Dump After build-graph (changed) ***"
    # Each dump is the .mgir text: it parses, and the last one is what was written.
    dumps = err.split("; *** IR Dump After ")
    last = dumps[-1].split("\n", 1)[1]
    assert last == out.read_text()
    parse_model(dumps[4].split("\n", 1)[1])


def test_print_after_one_pass(tmp_path, capsys):
    out = tmp_path / "m.mgir"
    assert metagenc_main([EDGE, "--target", "ir", "--tiny", "-o", str(out), "--print-after", "build-graph"]) == 0
    err = capsys.readouterr().err
    assert err.count("; *** IR Dump After ") == 1
    assert err.startswith("; *** IR Dump After build-graph (changed) ***\nmgir 1\n")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--print-after", "no-such-pass"], "no pass 'no-such-pass' in this pipeline; passes: select-family, "),
        (["--print-after", "shrink"], "no pass 'shrink' in this pipeline"),  # shrink runs with --tiny only
    ],
)
def test_print_after_an_unknown_pass_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        metagenc_main([GPT2, "--target", "ir", "-o", "-", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_spec_and_target_still_required_to_compile(capsys):
    with pytest.raises(SystemExit) as exc:
        metagenc_main(["--target", "ir"])
    assert exc.value.code == 2
    assert "required: spec" in capsys.readouterr().err
