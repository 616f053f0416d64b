"""Precision: ONNX fp16 (norms, softmax, losses in float32) and int8 (onnxruntime's
dynamic quantization), the generated torch/flax modules' `dtype`, each against the
float32 outputs on the same weights within metagen.precision.TOLERANCE; and the CLI
flag as a spelling of `constraints.precision`."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import onnx
import pytest

import onnxruntime as ort  # noqa: E402

from conftest import ROOT, example, load_module  # noqa: E402

from metagen.backends import onnx_backend, registry  # noqa: E402
from metagen.backends.onnx_backend import lower_to_onnx  # noqa: E402
from metagen.pipeline import compile_spec  # noqa: E402
from metagen.precision import TOLERANCE, drift, within  # noqa: E402

SPECS = [("reference", "gpt2_small.yaml"), ("reference", "llama2_7b.yaml"), ("reference", "vit_base_patch16.yaml"),
         ("reference", "clip_vit_b32.yaml"), ("reference", "bert_base_classifier.yaml"), ("tutorial", "step6_diffusion.yaml")]
IDS = [s[1].split(".")[0] for s in SPECS]


def _run(data, feed):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def _module(model, backend, tmp_path):
    path = tmp_path / f"{backend}_model.py"
    path.write_bytes(registry.get(backend).lower(model)[""])
    return load_module(str(path))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_onnx_fp16_and_int8_agree_with_fp32(spec, tmp_path):
    model = compile_spec(example(*spec), tiny=True).model
    feed = _module(model, "numpy", tmp_path).example_inputs(batch_size=2, seed=1)
    fp32 = lower_to_onnx(model, seed=0)
    want = _run(fp32[""], feed)
    for precision in ("fp16", "int8"):
        files = lower_to_onnx(model, seed=0, precision=precision)
        proto = onnx.load_from_string(files[""])
        onnx.checker.check_model(proto, full_check=True)
        assert {p.key: p.value for p in proto.metadata_props}[onnx_backend.PRECISION_PROP] == precision
        assert len(files[""]) < 0.75 * len(fp32[""])
        got = _run(files[""], feed)
        assert sorted(got) == sorted(want)
        for name, ref in want.items():
            assert got[name].dtype == ref.dtype  # inputs and outputs keep their types
            if np.issubdtype(ref.dtype, np.floating):
                assert within(got[name], ref, precision), f"{precision} {name}: drift {drift(got[name], ref):.3g}"
                assert not np.array_equal(got[name], ref)  # it did compute at another precision


def test_fp16_graph_keeps_norms_softmax_and_rope_in_float32():
    model = compile_spec(example("reference", "llama2_7b.yaml"), tiny=True).model
    proto = onnx.load_from_string(lower_to_onnx(model, seed=0, precision="fp16")[""])
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert [t.name for t in proto.graph.initializer] == [n for n, _ in model.walk_params()]
    g = onnx.shape_inference.infer_shapes(proto, strict_mode=True).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    elem.update({t.name: t.data_type for t in g.initializer})
    kinds = {}
    for node in g.node:
        types = {elem.get(x) for x in node.input if x and elem.get(x) in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
        kinds.setdefault(node.op_type, set()).update(types)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for op in ("RMSNormalization", "Attention", "RotaryEmbedding"):
        assert kinds[op] == {f32}, op
    assert kinds["MatMul"] == {f16}
    assert elem["logits"] == f32 and g.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_int8_quantizes_the_matmuls():
    model = compile_spec(example("reference", "gpt2_small.yaml"), tiny=True).model
    proto = onnx.load_from_string(lower_to_onnx(model, seed=0, precision="int8")[""])
    ops = [n.op_type for n in proto.graph.node]
    assert "MatMulInteger" in ops and "MatMul" not in ops
    assert lower_to_onnx(model, seed=0, precision="int8") == {"": lower_to_onnx(model, seed=0, precision="int8")[""]}


def test_int8_of_a_graph_only_model_is_a_diagnostic():
    from metagen.diagnostics import CompileError

    model = compile_spec(example("reference", "gpt2_small.yaml"), tiny=True).model
    with pytest.raises(CompileError, match="int8 quantizes the weights"):
        lower_to_onnx(model, seed=0, precision="int8", materialize_limit=1000)


@pytest.mark.parametrize("backend", ["torch", "flax"])
@pytest.mark.parametrize("spec", SPECS[:2], ids=IDS[:2])
def test_python_modules_load_weights_in_a_dtype(backend, spec, tmp_path):
    model = compile_spec(example(*spec), tiny=True).model
    mod = _module(model, backend, tmp_path)
    feed = mod.example_inputs(batch_size=2, seed=3)
    want = mod.run(mod.init(5), feed)["logits"]
    fp32 = mod.to_canonical(mod.init(5))
    for dtype, precision in (("bfloat16", "bf16"), ("float16", "fp16")):
        state = mod.init(5, dtype)
        weights = mod.to_canonical(state)
        for name, w in weights.items():  # float32 back out, holding the init weights rounded to dtype
            assert w.dtype == np.float32
            assert np.array_equal(w, fp32[name].astype(getattr(ml_dtypes, dtype, dtype)).astype(np.float32)), name
        got = mod.run(state, feed)["logits"]
        assert got.dtype == np.float32
        assert within(got, want, precision), f"{dtype}: drift {drift(got, want):.3g} > {TOLERANCE[precision]}"
        assert not np.array_equal(got, want)
        again = mod.run(mod.load_canonical(fp32, dtype), feed)["logits"]
        assert np.array_equal(again, got)


def _metagenc(*args):
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "metagenc"), *args], capture_output=True, text=True, cwd=ROOT)


def test_precision_flag_is_the_spec_key(tmp_path):
    spec = example("reference", "gpt2_small.yaml")
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    res = _metagenc(spec, "--target", "onnx", "--tiny", "--precision", "fp16", "-o", str(a))
    assert res.returncode == 0, res.stderr
    res = _metagenc(spec, "--target", "onnx", "--tiny", "-D", "constraints.precision=fp16", "-o", str(b))
    assert res.returncode == 0, res.stderr
    assert a.read_bytes() == b.read_bytes()
    assert {t.data_type for t in onnx.load(str(a)).graph.initializer} == {onnx.TensorProto.FLOAT16}
    res = _metagenc(spec, "--target", "onnx", "--tiny", "--precision", "bf16", "-o", str(b))
    assert res.returncode == 0 and "warning: onnx: bf16 graphs are not emitted" in res.stderr
    assert {t.data_type for t in onnx.load(str(b)).graph.initializer} == {onnx.TensorProto.FLOAT}
    res = _metagenc(spec, "--target", "onnx", "--tiny", "--precision", "fp8", "-o", str(b))
    assert res.returncode == 2
    # the device's default precision (bf16 on a GPU) sizes the estimates only: fp32 graph
    assert {t.data_type for t in onnx.load_from_string(lower_to_onnx(compile_spec(spec, tiny=True).model)[""]).graph.initializer} == {
        onnx.TensorProto.FLOAT
    }
