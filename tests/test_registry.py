"""The backend registry: every consumer reads it, its references resolve, reading it
loads no framework, synth honours `outputs.targets`, and an op or layer a backend has
no rule for is a diagnostic at the op's location."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from conftest import example

from metagen.backends import registry
from metagen.diagnostics import CompileError, Loc
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec
from metagen.ir.types import DType, TensorType

LOWERED = [b for b in registry.BACKENDS.values() if b.name != "ir"]  # backends with rule tables


def test_every_reference_resolves():
    for b in registry.BACKENDS.values():
        refs = [b.lowering, b.runner, b.training, *(g.render for g in b.goldens)]
        for ref in filter(None, refs):
            assert callable(registry.resolve(ref)), f"{b.name}: {ref}"


def test_reading_the_registry_and_the_schema_loads_no_framework():
    code = (
        "import sys, metagen.backends.registry, metagen.frontend.schema, metagen.cli\n"
        "print(sorted(m for m in ('torch', 'jax', 'flax', 'onnx', 'onnxruntime', 'black') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_consumers_read_the_registry():
    from metagen import cli, golden
    from metagen.frontend.schema import lookup

    names = registry.names()
    assert cli.TARGETS == names
    targets = lookup("outputs.targets")
    assert targets.item.choices == names and targets.default == list(names)
    want = {(b.name, g.filename) for b in registry.BACKENDS.values() for g in b.goldens}
    assert {(v.target, v.filename) for v in golden.VARIANTS} == want
    assert len({b.suffix for b in registry.BACKENDS.values()}) == len(names)
    assert len({b.synth_path for b in registry.BACKENDS.values()}) == len(names)


@pytest.mark.parametrize("backend", LOWERED, ids=lambda b: b.name)
def test_every_op_has_a_rule(backend):
    from metagen.backends.pyemit import uncovered_ops

    mod = importlib.import_module(backend.module)
    assert uncovered_ops(mod.OPS, mod.LAYERS) == []


def test_synth_honours_outputs_targets(tmp_path):
    from metagen.cli import main

    spec = tmp_path / "only_torch.yaml"
    with open(example("tutorial", "step4_training.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert "\noutputs:" not in text
    spec.write_text(text + "\noutputs:\n  targets: [torch, ir]\n", encoding="utf-8")
    assert main(["synth", str(spec), "--tiny", "--out", str(tmp_path / "out"), "--run-id", "r"]) == 0
    run = tmp_path / "out" / "r"
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert "code/torch/model.py" in files and "code/torch/train.py" in files and "ir/model.mgir" in files
    assert not [f for f in files if f.startswith(("code/flax/", "onnx/"))], files


def test_unknown_target_in_spec_is_a_located_error(tmp_path, capsys):
    from metagen.cli import main

    spec = tmp_path / "bad.yaml"
    with open(example("tutorial", "step1_minimal.yaml"), encoding="utf-8") as f:
        text = f.read()
    spec.write_text(text + "\noutputs:\n  targets: [torch, tensorflow]\n", encoding="utf-8")
    assert main(["validate", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:" in err and "tensorflow" in err and "Traceback" not in err


# ------------------------------------------------------------------ missing rules

OP_LOC = Loc("model.yaml", 7, 5)
LAYER_LOC = Loc("model.yaml", 4, 3)


def _model():
    """x -> linear layer -> gelu -> y, the layer's call and the op located in a spec."""
    mb = ModelBuilder()
    b = mb.module("Tiny")
    t = TensorType(DType.f32, ("batch", 8))
    x = b.input("x", t)
    b.layer("proj", "linear", in_features=8, out_features=8)
    y = b.op("gelu", b.call("proj", x, hint="h"), hint="y")
    top = b.ret(y, names=["y"])
    for node in top.nodes:
        node.loc = LAYER_LOC if node.kind == "call" else OP_LOC
    return mb.finish(
        top, name="Tiny", spec_name="tiny", inputs=[InputSpec("x", t, "normal")], config={}, family="test",
        symbols={"batch": "batch"},
    )


@pytest.mark.parametrize("backend", LOWERED, ids=lambda b: b.name)
def test_missing_op_rule_is_located(backend, monkeypatch):
    mod = importlib.import_module(backend.module)
    assert backend.lower(_model())[""]  # complete tables lower it
    monkeypatch.delitem(mod.OPS, "gelu")
    with pytest.raises(CompileError) as exc:
        backend.lower(_model())
    (d,) = exc.value.diagnostics
    assert (d.loc, d.message) == (OP_LOC, f"the {backend.name} backend has no emitter for op 'gelu'")


@pytest.mark.parametrize("backend", LOWERED, ids=lambda b: b.name)
def test_missing_layer_rule_is_located(backend, monkeypatch):
    mod = importlib.import_module(backend.module)
    monkeypatch.delitem(mod.LAYERS, "linear")
    with pytest.raises(CompileError) as exc:
        backend.lower(_model())
    (d,) = exc.value.diagnostics
    assert (d.loc, d.message) == (LAYER_LOC, f"the {backend.name} backend has no emitter for layer op 'linear'")


def test_unlocated_node_falls_back_to_its_module(monkeypatch):
    from metagen.backends import torch_backend

    model = _model()
    module_loc = Loc("model.yaml", 2, 1)
    model.top_module.loc = module_loc
    for node in model.top_module.nodes:
        node.loc = None
    monkeypatch.delitem(torch_backend.OPS, "gelu")
    with pytest.raises(CompileError) as exc:
        registry.get("torch").lower(model)
    assert exc.value.diagnostics[0].loc == module_loc


@pytest.mark.parametrize("target,table,entry,kind", [("torch", "OPS", "add", "op"), ("flax", "LAYERS", "linear", "layer op")])
def test_missing_rule_through_metagenc_points_into_the_spec(target, table, entry, kind, tmp_path, monkeypatch, capsys):
    from metagen.cli import metagenc_main

    monkeypatch.delitem(getattr(importlib.import_module(registry.get(target).module), table), entry)
    spec, out = example("tutorial", "step1_minimal.yaml"), tmp_path / "m.py"
    code = metagenc_main([spec, "--target", target, "--tiny", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists() and "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(f"{spec}:") and first.endswith(f": error: the {target} backend has no emitter for {kind} '{entry}'")


def test_base_table_rule_composes_per_backend():
    """quick_gelu is written once, in terms of each backend's own sigmoid."""
    from metagen.backends import flax_backend, pyemit, torch_backend

    assert torch_backend.OPS["quick_gelu"] is pyemit.BASE_OPS["quick_gelu"] is flax_backend.OPS["quick_gelu"]
    model = _model()
    for emitter, want in ((torch_backend.TorchEmitter, "torch.sigmoid(1.702 * h)"), (flax_backend.FlaxEmitter, "jax.nn.sigmoid(1.702 * h)")):
        ctx = pyemit.PyContext(op_name="quick_gelu", a={}, emitter=emitter(model))
        assert pyemit.BASE_OPS["quick_gelu"](ctx, "h") == f"h * {want}"


@pytest.mark.parametrize("backend", LOWERED, ids=lambda b: b.name)
def test_rules_see_operands_types_and_location(backend, monkeypatch):
    mod = importlib.import_module(backend.module)
    seen = []
    rule = mod.OPS["gelu"]

    def spy(ctx, *args):
        seen.append(ctx)
        return rule(ctx, *args)

    monkeypatch.setitem(mod.OPS, "gelu", spy)
    model = _model()
    backend.lower(model)
    (ctx,) = seen
    node = model.top_module.nodes[-1]
    assert (ctx.op_name, ctx.loc) == ("gelu", OP_LOC)
    assert ctx.in_types == (node.operands[0].type,) and ctx.out_types == (node.results[0].type,)
    assert len(ctx.operands) == 1 and isinstance(ctx.operands[0], str)
