"""The IR: textual round trip, verifier, exact counts without allocation."""

from __future__ import annotations

import collections
import glob
import os

import pytest

from conftest import EXAMPLES
from metagen.diagnostics import CompileError
from metagen.ir import ops
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import InputSpec, Layer
from metagen.ir.parser import parse_model
from metagen.ir.printer import print_model
from metagen.ir.types import DType, TensorType
from metagen.ir.verify import VerifyError, verify_model
from metagen.pipeline import compile_spec

SPECS = sorted(glob.glob(os.path.join(EXAMPLES, "tutorial", "*.yaml")) + glob.glob(os.path.join(EXAMPLES, "reference", "*.yaml")))


@pytest.mark.parametrize("tiny", [True, False], ids=["tiny", "full"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: os.path.basename(p))
def test_print_parse_print(spec, tiny):
    comp = compile_spec(spec, tiny=tiny)
    text = print_model(comp.model)
    again = parse_model(text)
    verify_model(again)
    assert print_model(again) == text
    assert again.param_count() == comp.model.param_count()


def _tiny_model():
    mb = ModelBuilder()
    b = mb.module("Top")
    x = b.input("x", TensorType(DType.f32, ("batch", 8)))
    b.layer("fc", "linear", in_features=8, out_features=4)
    y = b.call("fc", x, hint="y")
    top = b.ret(b.op("relu", y, hint="out"), names=["out"])
    return mb.finish(top, name="Top", spec_name="t", inputs=[InputSpec("x", x.type, "normal")], config={}, family="test", symbols={})


def test_verifier_accepts_a_good_model():
    verify_model(_tiny_model())


def test_verifier_catches_a_wrong_result_type():
    m = _tiny_model()
    node = m.modules["Top"].nodes[-1]
    node.results[0].type = TensorType(DType.f32, ("batch", 5))
    with pytest.raises(VerifyError, match="result types"):
        verify_model(m)


def test_verifier_catches_use_before_definition():
    m = _tiny_model()
    nodes = m.modules["Top"].nodes
    nodes.reverse()
    with pytest.raises(VerifyError, match="before it is defined"):
        verify_model(m)


def test_parser_reports_the_line_of_a_bad_node():
    text = print_model(_tiny_model()).replace("relu(", "relux(")
    with pytest.raises(CompileError) as info:
        parse_model(text, "m.mgir")
    d = info.value.diagnostics[0]
    assert d.loc.path == "m.mgir" and "relux" in d.message
    assert text.splitlines()[d.loc.line - 1].strip().startswith("%out = relux(")


def _op_uses(model):
    """(op, attrs, operand types, result types) of every op node and layer call."""
    for md in model.modules.values():
        for node in md.nodes:
            ins, outs = [v.type for v in node.operands], [v.type for v in node.results]
            if node.kind == "op":
                yield node.op, node.attrs, ins, outs
            elif node.kind == "call" and isinstance(md.children[node.target], Layer):
                child = md.children[node.target]
                yield child.op, ops.get(child.op).resolve_attrs(child.attr_dict()), ins, outs


def test_op_rules_hold_where_the_examples_use_them():
    """Where an example model or its loss uses an op, its declared shape rule gives
    the types the graph holds and its FLOP rule a non-negative int with every symbol
    bound; a model's FLOPs are the sum of these."""
    from metagen.compiler.objectives import ObjectiveError, build_loss

    bindings = collections.defaultdict(lambda: 3, batch=2)  # every symbol bound
    seen = set()
    for spec in SPECS:
        comp = compile_spec(spec, tiny=True)
        models = [comp.model]
        try:
            models.append(build_loss(comp.ctx).loss)
        except ObjectiveError:
            pass
        for model in models:
            for name, attrs, ins, outs in _op_uses(model):
                d = ops.get(name)
                assert ops.infer(name, attrs, ins) == outs, (spec, name)
                flops = d.flops(attrs, ins, outs, bindings)
                assert type(flops) is int and flops >= 0, (spec, name, flops)
                seen.add(name)
    assert {"linear", "attention", "conv2d", "cross_entropy", "mse"} <= seen


def test_op_attribute_checks():
    with pytest.raises(ops.OpError, match="no attribute"):
        ops.get("linear").resolve_attrs({"in_features": 2, "out_features": 2, "bogus": 1})
    with pytest.raises(ops.OpError, match="needs attribute"):
        ops.get("linear").resolve_attrs({"in_features": 2})
    with pytest.raises(ops.OpError, match="kv_heads"):
        ops.infer(
            "attention",
            {"heads": 3, "kv_heads": 2, "head_dim": 4},
            [TensorType(DType.f32, ("b", "s", 12)), TensorType(DType.f32, ("b", "s", 8)), TensorType(DType.f32, ("b", "s", 8))],
        )


def test_ir_has_no_framework_imports():
    root = os.path.join(os.path.dirname(EXAMPLES), "ir")
    for path in glob.glob(os.path.join(root, "*.py")):
        text = open(path, encoding="utf-8").read()
        for banned in ("import torch", "import jax", "import onnx", "from torch", "from jax", "from onnx", "import flax"):
            assert banned not in text, (path, banned)


def test_every_spec_dtype_is_an_ir_dtype():
    """constraints.dtype sizes come from the IR's one dtype table."""
    from metagen.frontend.schema import DTYPES

    assert {d: DType.from_numpy(d).nbytes for d in DTYPES} == {"float32": 4, "bfloat16": 2, "float16": 2}
    with pytest.raises(ValueError):
        DType.from_numpy("float8")
