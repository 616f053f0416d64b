"""The ONNX backend: every op against the torch backend on single-op graphs, every
example spec end to end, checker and shape inference, determinism, --weights,
external data and the graph-only form for models too large to materialize."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from conftest import ROOT, example, load_module  # noqa: E402

from metagen.backends import onnx_backend  # noqa: E402
from metagen.backends.onnx_backend import build_onnx, lower_to_onnx  # noqa: E402
from metagen.backends.torch_backend import lower_to_torch  # noqa: E402
from metagen.diagnostics import CompileError  # noqa: E402
from metagen.generate import complete_inputs  # noqa: E402
from metagen.ir import ops  # noqa: E402
from metagen.ir.builder import ModelBuilder  # noqa: E402
from metagen.ir.graph import InputSpec, normal  # noqa: E402
from metagen.ir.types import DType, TensorType  # noqa: E402

BIN = os.path.dirname(sys.executable)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """CONTRACT §5: |a - b| <= 1e-5 + 1e-4 |b|."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not np.issubdtype(b.dtype, np.floating):
        return bool(np.array_equal(a, b))
    return bool(np.all(np.abs(a.astype(np.float64) - b) <= 1e-5 + 1e-4 * np.abs(b.astype(np.float64))))


def session(data):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_onnx(data, inputs: dict) -> dict:
    s = session(data)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, inputs)))


def torch_module(model, tmp_path, name="m.py"):
    path = tmp_path / name
    path.write_text(lower_to_torch(model))
    return load_module(str(path))


# ------------------------------------------------------------------ single-op graphs

F = DType.f32


def T(*shape, dtype=F) -> TensorType:
    return TensorType(dtype, tuple(shape))


def inp(name, t, kind="normal", low=0.0, high=0.0):
    return InputSpec(name, t, kind, low, high)


BSD = T("batch", "seq", 8)
IDS = inp("ids", T("batch", "seq", dtype=DType.i64), "tokens", 0, 10)

# (case id, op, inputs, attrs, params owned by the module: name -> shape)
CASES = [
    ("linear", "linear", [inp("x", BSD)], dict(in_features=8, out_features=6), {}),
    ("linear_nobias", "linear", [inp("x", BSD)], dict(in_features=8, out_features=6, bias=False), {}),
    ("embedding", "embedding", [IDS], dict(num=10, dim=4), {}),
    ("layer_norm", "layer_norm", [inp("x", BSD)], dict(dim=8), {}),
    ("layer_norm_nobias", "layer_norm", [inp("x", BSD)], dict(dim=8, bias=False), {}),
    ("layer_norm_plain", "layer_norm", [inp("x", BSD)], dict(dim=8, affine=False), {}),
    ("rms_norm", "rms_norm", [inp("x", BSD)], dict(dim=8, eps=1e-5), {}),
    ("group_norm", "group_norm", [inp("x", T("batch", 8, 4, 4))], dict(groups=2, channels=8), {}),
    ("conv2d", "conv2d", [inp("x", T("batch", 3, 8, 8))], dict(in_channels=3, out_channels=4, kernel=3, stride=2, padding=1), {}),
    ("dice_loss", "dice_loss", [inp("logits", T("batch", 3, 4, 5)), inp("labels", T("batch", 4, 5, dtype=DType.i64), "tokens", 0, 3)], dict(smooth=0.5), {}),
    ("sine_positions_2d", "sine_positions_2d", [inp("x", T("batch", 3, 4, 5))], dict(features=6), {}),
    ("batch_norm_frozen", "batch_norm", [inp("x", T("batch", 4, 3, 3))], dict(channels=4, frozen=True), {}),
    ("batch_norm", "batch_norm", [inp("x", T("batch", 6, 5, 4))], dict(channels=6, eps=1e-3), {}),
    ("max_pool2d", "max_pool2d", [inp("x", T("batch", 3, 9, 8))], dict(kernel=3, stride=2, padding=1), {}),
    ("conv2d_nobias", "conv2d", [inp("x", T("batch", 3, 5, 5))], dict(in_channels=3, out_channels=2, kernel=1, bias=False), {}),
    ("add", "add", [inp("a", BSD), inp("b", T(8))], {}, {}),
    ("sub", "sub", [inp("a", BSD), inp("b", BSD)], {}, {}),
    ("mul", "mul", [inp("a", BSD), inp("b", T("batch", 1, 8))], {}, {}),
    ("div", "div", [inp("a", BSD), inp("b", T("batch", 1, 8), "uniform", 0.5, 2.0)], {}, {}),
    ("scale", "scale", [inp("x", BSD)], dict(factor=0.125), {}),
    *[(u, u, [inp("x", BSD)], {}, {}) for u in ("gelu", "gelu_tanh", "quick_gelu", "silu", "relu", "tanh", "sigmoid", "exp")],
    ("softmax", "softmax", [inp("x", BSD)], {}, {}),
    ("softmax_axis1", "softmax", [inp("x", BSD)], dict(axis=1), {}),
    ("l2_normalize", "l2_normalize", [inp("x", BSD)], {}, {}),
    ("matmul", "matmul", [inp("a", T("batch", 4, 8)), inp("b", T("batch", 8, 5))], {}, {}),
    ("matmul_tb", "matmul", [inp("a", T("batch", 4, 8)), inp("b", T(5, 8))], dict(transpose_b=True), {}),
    ("linear_fn", "linear_fn", [inp("x", BSD)], {}, {"w": (6, 8)}),
    (
        "attention_gqa_causal",
        "attention",
        [inp("q", T("batch", "seq", 16)), inp("k", T("batch", "seq", 8)), inp("v", T("batch", "seq", 8))],
        dict(heads=4, kv_heads=2, head_dim=4, causal=True),
        {},
    ),
    (
        "attention_cross_scaled",
        "attention",
        [inp("q", T("batch", "seq", 8)), inp("k", T("batch", 7, 8)), inp("v", T("batch", 7, 8))],
        dict(heads=2, kv_heads=2, head_dim=4, scale=0.3),
        {},
    ),
    (
        "attention_split_kv",
        "attention",
        [inp("q", T("batch", "seq", 16)), inp("k", T("batch", 2, "seq", 4)), inp("v", T("batch", 2, "seq", 4))],
        dict(heads=4, kv_heads=2, head_dim=4, causal=True, split_kv=True),
        {},
    ),
    ("rope", "rope", [inp("x", T("batch", "seq", 16))], dict(heads=2, head_dim=8, theta=500.0), {}),
    (
        "rope_positions",
        "rope",
        [inp("x", T("batch", "seq", 16)), inp("pos", T("batch", "seq", dtype=DType.i64), "tokens", 0, 50)],
        dict(heads=2, head_dim=8),
        {},
    ),
    ("attention_bias", "attention_bias", [inp("mask", T("batch", 9, dtype=DType.i64), "tokens", 0, 2), inp("x", BSD)], {}, {}),
    (
        "attention_bias_window",
        "attention_bias",
        [inp("mask", T("batch", 9, dtype=DType.i64), "tokens", 0, 2), inp("x", BSD)],
        dict(causal=True, window=3),
        {},
    ),
    (
        "attention_biased",
        "attention",
        [inp("q", T("batch", "seq", 16)), inp("k", T("batch", 7, 8)), inp("v", T("batch", 7, 8)), inp("bias", T("batch", 1, "seq", 7))],
        dict(heads=4, kv_heads=2, head_dim=4),
        {},
    ),
    ("split_heads", "split_heads", [inp("x", T("batch", "seq", 12))], dict(heads=3, head_dim=4), {}),
    ("merge_heads", "merge_heads", [inp("x", T("batch", 3, "seq", 4))], {}, {}),
    ("rope_llama3", "rope", [inp("x", T("batch", "seq", 16))],
     dict(heads=2, head_dim=8, scaling="llama3", factor=8.0, original_context=64), {}),
    ("positions", "positions", [inp("x", BSD)], {}, {}),
    ("concat", "concat", [inp("a", BSD), inp("b", T("batch", "seq", 3))], dict(axis=-1), {}),
    ("stack", "stack", [inp("a", BSD), inp("b", BSD)], dict(axis=1), {}),
    ("slice", "slice", [inp("x", BSD)], dict(axis=-1, start=2, end=6), {}),
    ("select", "select", [inp("x", T("batch", 4, 8))], dict(axis=1, index=3), {}),
    ("transpose", "transpose", [inp("x", BSD)], dict(perm=(2, 0, 1)), {}),
    ("unsqueeze", "unsqueeze", [inp("x", BSD)], dict(axes=(1, 4)), {}),
    ("prepend", "prepend", [inp("x", BSD)], {}, {"token": (1, 1, 8)}),
    ("flatten_spatial", "flatten_spatial", [inp("x", T("batch", 4, 3, 5))], {}, {}),
    ("unflatten_spatial", "unflatten_spatial", [inp("x", T("batch", 15, 4)), inp("like", T("batch", 1, 3, 5))], {}, {}),
    ("merge_axes", "merge_axes", [inp("x", T("batch", "seq", 3, 5))], dict(start=0), {}),
    ("merge_axes_mid", "merge_axes", [inp("x", T("batch", 4, 3, 5))], dict(start=1, count=3), {}),
    ("split_axis", "split_axis", [inp("x", T("batch", 12, 5)), inp("like", T("batch", 3, 4))], dict(axis=1, like_axes=(2, 1)), {}),
    ("expand_axis", "expand_axis", [inp("x", T("batch", 5)), inp("like", T("batch", "seq", 2))], dict(axis=1, like_axis=1), {}),
    ("expand_axis_first", "expand_axis", [inp("x", T("batch", 5)), inp("like", T(3, "batch"))], dict(axis=0, like_axis=0), {}),
    ("pad2d", "pad2d", [inp("x", T("batch", 3, 4, 5))], dict(pads=(2, 0, 1, 3)), {}),
    ("require_multiple", "require_multiple", [inp("x", T("batch", 3, 4, 6))], dict(axes=(2, 3), multiple=2, what="sample"), {}),
    ("mean", "mean", [inp("x", BSD)], dict(axis=1), {}),
    ("gather_argmax", "gather_argmax", [inp("x", BSD), IDS], {}, {}),
    ("upsample_nearest", "upsample_nearest", [inp("x", T("batch", 3, 4, 5))], dict(factor=2), {}),
    ("timestep_embedding", "timestep_embedding", [inp("t", T("batch"), "uniform", 0, 1000)], dict(dim=8), {}),
    (
        "timestep_embedding_sin_cos",
        "timestep_embedding",
        [inp("t", T("batch"), "uniform", 0, 1000)],
        dict(dim=6, flip_sin_to_cos=False, freq_shift=1.0),
        {},
    ),
    ("cast", "cast", [IDS], dict(dtype="f32"), {}),
    ("cross_entropy", "cross_entropy", [inp("logits", T("batch", "seq", 10)), IDS], {}, {}),
    ("mse", "mse", [inp("a", BSD), inp("b", BSD)], {}, {}),
    (
        "masked_cross_entropy",
        "masked_cross_entropy",
        [inp("logits", T("batch", "seq", 10)), IDS, inp("mask", T("batch", "seq"), "tokens", 0, 2)],
        {},
        {},
    ),    ("dropout", "dropout", [inp("x", BSD)], dict(rate=0.25), {}),
    ("div", "div", [inp("a", BSD), inp("b", T(8), "uniform", 0.5, 2.0)], {}, {}),
    ("sqrt", "sqrt", [inp("x", BSD, "uniform", 0.01, 4.0)], {}, {}),
    ("sqrt_eps", "sqrt", [inp("x", BSD, "uniform", 0.0, 4.0)], dict(eps=1e-5), {}),
    ("reshape", "reshape", [inp("x", T("batch", 3, 4, 8))], dict(shape=(-1, 4, 8)), {}),
    ("reshape_back", "reshape", [inp("x", T("batch", 12, 8))], dict(shape=(-1, 3, 4, 8)), {}),
    ("frames", "frames", [inp("x", T("batch", 3, 13))], dict(size=4, step=3), {}),
    ("huber", "huber", [inp("a", BSD), inp("b", BSD)], dict(delta=0.3), {}),
    ("log_softmax", "log_softmax", [inp("x", BSD)], dict(axis=1), {}),
    ("take_along", "take_along", [inp("x", T("batch", 5, 10)), inp("i", T("batch", 5, dtype=DType.i64), "tokens", 0, 10)], {}, {}),
    ("clip", "clip", [inp("x", BSD)], dict(low=-0.2, high=0.3), {}),
    ("minimum", "minimum", [inp("a", BSD), inp("b", T(8))], {}, {}),
    ("gather_rows", "gather_rows", [inp("x", T("nodes", 8)), inp("i", T("edges", dtype=DType.i64), "tokens", 0, 5)], {}, {}),
    (
        "scatter_add",
        "scatter_add",
        [inp("s", T("edges", 2, 3)), inp("i", T("edges", dtype=DType.i64), "tokens", 0, 5), inp("like", T("nodes", 4))],
        {},
        {},
    ),
    (
        "segment_softmax",
        "segment_softmax",
        [inp("s", T("edges", 3)), inp("i", T("edges", dtype=DType.i64), "tokens", 0, 5), inp("like", T("nodes", 4))],
        {},
        {},
    ),
    ("leaky_relu", "leaky_relu", [inp("x", BSD)], dict(slope=0.2), {}),
    ("degree", "degree", [inp("i", T("edges", dtype=DType.i64), "tokens", 0, 5), inp("like", T("nodes", 4))], {}, {}),
]


def single_op_model(op: str, inputs: list[InputSpec], attrs: dict, params: dict):
    """A one-op model: inputs -> op (or layer) -> output 'y'."""
    mb = ModelBuilder()
    b = mb.module("Single")
    args = [b.input(i.name, i.type) for i in inputs]
    args += [b.param(name, shape, normal(0.5)) for name, shape in params.items()]
    if ops.get(op).is_layer:
        b.layer("layer", op, **attrs)
        y = b.call("layer", *args, hint="y")
    else:
        y = b.op(op, *args, hint="y", **attrs)
    top = b.ret(y, names=["y"])
    return mb.finish(
        top,
        name="Single",
        spec_name=f"single {op}",
        inputs=inputs,
        config={},
        family="test",
        symbols={"batch": "batch", "seq": "sequence", "nodes": "graph nodes", "edges": "graph edges"},
        examples={"seq": 5, "nodes": 6, "edges": 9},
    )


def test_every_registry_op_has_an_onnx_emitter_and_a_case():
    covered = {c[1] for c in CASES}
    assert sorted(set(ops.REGISTRY) - covered) == [], "ops without a single-op ONNX test"
    for name, d in ops.REGISTRY.items():
        table = onnx_backend.LAYERS if d.is_layer else onnx_backend.OPS
        assert name in table, f"no ONNX emitter for op '{name}'"
    assert set(onnx_backend.FUSED) <= set(ops.REGISTRY)


FUSED_CASES = [c for c in CASES if c[1] in onnx_backend.FUSED]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_single_op_matches_torch(case, tmp_path):
    _check_single_op(case, False, tmp_path)


@pytest.mark.parametrize("case", FUSED_CASES, ids=[c[0] for c in FUSED_CASES])
def test_single_op_fused_form_matches_torch(case, tmp_path):
    _check_single_op(case, True, tmp_path)


def _check_single_op(case, fused, tmp_path):
    _, op, inputs, attrs, params = case
    model = single_op_model(op, inputs, attrs, params)
    mod = torch_module(model, tmp_path)
    feed = mod.example_inputs(batch_size=2, seed=3)
    state = mod.init(0)
    want = mod.run(state, feed)["y"]
    proto, types = build_onnx(model, fused=fused)
    onnx.checker.check_model(proto, full_check=True)
    got = run_onnx(proto.SerializeToString(), feed)["y"]
    assert close(got, want), f"max |diff| {np.max(np.abs(got.astype(np.float64) - want))}"
    _assert_shapes_agree(proto, types)


def test_missing_emitter_is_a_compile_error(monkeypatch):
    model = single_op_model("gelu", [inp("x", BSD)], {}, {})
    monkeypatch.delitem(onnx_backend.OPS, "gelu")
    with pytest.raises(CompileError, match="onnx backend has no emitter for op 'gelu'"):
        lower_to_onnx(model)


# ------------------------------------------------------------------ shape inference


def _assert_shapes_agree(proto: onnx.ModelProto, types: dict) -> None:
    """ONNX shape inference must not contradict the IR's type of any value."""
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    infos = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    checked = 0
    for name, t in types.items():
        vi = infos.get(name)
        if vi is None:
            continue
        tt = vi.type.tensor_type
        assert tt.elem_type == onnx_backend.ONNX_DTYPES[t.dtype], f"{name}: dtype {tt.elem_type} vs IR {t}"
        if not tt.HasField("shape"):
            continue
        dims = tt.shape.dim
        assert len(dims) == t.rank, f"{name}: rank {len(dims)} vs IR {t}"
        for d, want in zip(dims, t.shape):
            if d.HasField("dim_value"):
                assert isinstance(want, int) and d.dim_value == want, f"{name}: {d.dim_value} vs IR {t}"
            elif d.HasField("dim_param") and isinstance(want, int):
                raise AssertionError(f"{name}: symbolic {d.dim_param} where the IR has {want}")
        checked += 1
    assert checked, "shape inference typed none of the IR's values"


# ------------------------------------------------------------------ example specs


def _compile(spec: str, tiny: bool = True):
    from metagen.pipeline import compile_spec

    comp = compile_spec(spec, tiny=tiny)
    src = lower_to_torch(comp.model)
    return comp, src


# sd15_unet at --tiny spends ~40 s (on a loaded 2-core machine) in the torch side;
# step6_diffusion covers the same family in the fast suite.
SLOW_SPECS = {"sd15_unet.yaml", "sd15_pipeline.yaml"}
SPECS = [
    pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW_SPECS else p
    for p in sorted(glob.glob(example("reference", "*.yaml")) + glob.glob(example("tutorial", "*.yaml")))
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: os.path.relpath(p, example()).replace(os.sep, "/"))
def test_example_tiny_matches_torch(spec, tmp_path):
    comp, src = _compile(spec)
    (tmp_path / "m.py").write_text(src)
    mod = load_module(str(tmp_path / "m.py"))
    feed = mod.example_inputs(batch_size=2, seed=1)
    want = mod.run(mod.init(0), feed)
    proto, types = build_onnx(comp.model, seed=0)
    onnx.checker.check_model(proto, full_check=True)
    _assert_shapes_agree(proto, types)
    got = run_onnx(proto.SerializeToString(), feed)
    assert sorted(got) == sorted(mod.OUTPUTS)
    for name in mod.OUTPUTS:
        assert close(got[name], want[name]), f"{name}: max |diff| {np.max(np.abs(got[name] - want[name]))}"
    buffers = comp.model.buffer_names()  # batch norm's running statistics: initializers, not parameters
    n_init = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.name not in buffers)
    assert n_init == comp.model.param_count() == sum(p.numel() for p in mod.init(0).parameters())
    assert [t.name for t in proto.graph.initializer] == [n for n, _ in comp.model.walk_params()]
    assert [i.name for i in proto.graph.input] == [i.name for i in comp.model.inputs]


def test_wire_initializers_equal_the_proto_ones():
    comp, _ = _compile(example("reference", "gpt2_small.yaml"))
    fast = onnx.load_from_string(lower_to_onnx(comp.model, seed=3)[""])
    slow, _ = build_onnx(comp.model, seed=3)
    assert fast.graph.node == slow.graph.node
    assert [t.name for t in fast.graph.initializer] == [t.name for t in slow.graph.initializer]
    for a, b in zip(fast.graph.initializer, slow.graph.initializer):
        assert a.dims == b.dims and a.data_type == b.data_type
        assert np.array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))


def test_dynamic_axes_are_named():
    comp, _ = _compile(example("reference", "gpt2_small.yaml"))
    proto, _ = build_onnx(comp.model)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", comp.model.config["vocab_size"]]
    # and they are dynamic: another batch and length run
    ids = np.random.default_rng(0).integers(0, comp.model.config["vocab_size"], size=(3, 11)).astype(np.int64)
    assert run_onnx(proto.SerializeToString(), complete_inputs(comp.model, {"input_ids": ids}))["logits"].shape == (3, 11, comp.model.config["vocab_size"])


def test_fused_form_matches_decomposed_on_llama():
    comp, _ = _compile(example("reference", "llama2_7b.yaml"))
    ids = np.random.default_rng(0).integers(0, comp.model.config["vocab_size"], size=(2, 9)).astype(np.int64)
    feed = complete_inputs(comp.model, {"input_ids": ids})
    a = run_onnx(lower_to_onnx(comp.model, fused=False)[""], feed)["logits"]
    b = run_onnx(lower_to_onnx(comp.model, fused=True)[""], feed)["logits"]
    assert close(b, a)


# ------------------------------------------------------------------ CLI, determinism, weights


def _metagenc(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "metagenc"), *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_bytes_identical_across_processes(tmp_path):
    spec = example("reference", "gpt2_small.yaml")
    outs = []
    for seed in ("1", "987"):
        out = tmp_path / f"h{seed}.onnx"
        res = _metagenc(spec, "--target", "onnx", "--tiny", "-o", str(out), env=dict(os.environ, PYTHONHASHSEED=seed))
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert b"metagen" in outs[0]


def test_weights_file_is_embedded(tmp_path):
    from safetensors.numpy import save_file

    spec = example("reference", "llama2_7b.yaml")
    comp, src = _compile(spec)
    (tmp_path / "m.py").write_text(src)
    mod = load_module(str(tmp_path / "m.py"))
    state = mod.init(7)  # not the seed metagenc would draw by default
    save_file(mod.to_canonical(state), str(tmp_path / "w.safetensors"))
    out = tmp_path / "w.onnx"
    res = _metagenc(spec, "--target", "onnx", "--tiny", "--weights", str(tmp_path / "w.safetensors"), "-o", str(out))
    assert res.returncode == 0, res.stderr
    feed = mod.example_inputs(batch_size=2, seed=4)
    want = mod.run(state, feed)["logits"]
    assert close(run_onnx(str(out), feed)["logits"], want)
    default = lower_to_onnx(comp.model, seed=0)[""]
    assert not close(run_onnx(default, feed)["logits"], want)


def test_weights_that_do_not_fit_are_a_diagnostic(tmp_path):
    comp, _ = _compile(example("reference", "gpt2_small.yaml"))
    weights = {n: np.zeros(p.type.shape, np.float32) for n, p in comp.model.walk_params()}
    name = next(iter(weights))
    weights[name] = np.zeros((3,), np.float32)
    with pytest.raises(CompileError, match="do not fit the model"):
        lower_to_onnx(comp.model, weights=weights)


def test_external_data_when_over_the_protobuf_limit(tmp_path, monkeypatch):
    comp, _ = _compile(example("reference", "gpt2_small.yaml"))
    inline = lower_to_onnx(comp.model)
    assert list(inline) == [""]
    monkeypatch.setattr(onnx_backend, "PROTOBUF_LIMIT", 1000)
    files = lower_to_onnx(comp.model, data_name="g.onnx.data")
    assert sorted(files) == ["", "g.onnx.data"]
    assert len(files[""]) < 200_000 < len(files["g.onnx.data"])
    for rel, data in files.items():
        (tmp_path / (rel or "g.onnx")).write_bytes(data)
    onnx.checker.check_model(str(tmp_path / "g.onnx"), full_check=True)
    ids = np.arange(10, dtype=np.int64).reshape(1, 10)
    feed = complete_inputs(comp.model, {"input_ids": ids})
    a = run_onnx(str(tmp_path / "g.onnx"), feed)["logits"]
    b = run_onnx(inline[""], feed)["logits"]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("spec", [("reference", "llama2_7b.yaml"), ("tutorial", "pattern_large_lm.yaml")], ids=["llama2_7b", "70b"])
def test_large_models_compile_graph_only_without_allocating(spec, tmp_path):
    path = example(*spec)
    out = tmp_path / "big.onnx"
    res = _metagenc(path, "--target", "onnx", "--seed", "5", "-o", str(out))  # timed by bench/robustness_bench.py
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "big.onnx.data").exists()
    assert out.stat().st_size < 5_000_000
    proto = onnx.load(str(out), load_external_data=False)
    from metagen.pipeline import compile_spec

    model = compile_spec(path).model
    assert model.param_count() * 4 > onnx_backend.MATERIALIZE_LIMIT
    # parameters are initializers under the canonical names, never graph inputs
    assert [i.name for i in proto.graph.input] == [i.name for i in model.inputs]
    params = dict(model.walk_params())
    assert [t.name for t in proto.graph.initializer] == list(params)
    end = 0
    for t in proto.graph.initializer:
        assert list(t.dims) == list(params[t.name].type.shape)
        assert t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data
        ext = {e.key: e.value for e in t.external_data}
        assert ext["location"] == "big.onnx.data" and int(ext["length"]) == 4 * int(np.prod(t.dims))
        assert int(ext["offset"]) >= end and int(ext["offset"]) % 64 == 0
        end = int(ext["offset"]) + int(ext["length"])
    assert sum(int(np.prod(t.dims)) for t in proto.graph.initializer) == model.param_count()
    props = {p.key: p.value for p in proto.metadata_props}
    assert props[onnx_backend.INIT_SEED_PROP] == "5" and "metagen weights init" in props[onnx_backend.PENDING_PROP]
    with open(tmp_path / "big.onnx.data", "wb") as f:  # sparse: no disk used, but the checker sees the file
        f.truncate(end)
    onnx.checker.check_model(str(out), full_check=True)


@pytest.mark.slow
def test_gpt2_small_full_size_matches_torch(tmp_path):
    comp, src = _compile(example("reference", "gpt2_small.yaml"), tiny=False)
    (tmp_path / "m.py").write_text(src)
    mod = load_module(str(tmp_path / "m.py"))
    feed = mod.example_inputs(batch_size=1, seed=2)
    want = mod.run(mod.init(0), feed)["logits"]
    got = run_onnx(lower_to_onnx(comp.model)[""], feed)["logits"]
    assert close(got, want), f"max |diff| {np.max(np.abs(got - want))}"
