"""The numpy backend, the reference semantics, against the torch backend: every
registry op on a one-op graph, tied and nested parameters, the canonical round trip,
the example specs and their loss programs end to end at --tiny, and a generated module
that runs with no framework importable."""

from __future__ import annotations

import ast
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import compile_to, example, load_module
from test_flax import CASES, build_model, perturbed

from metagen.backends.numpy_backend import check_coverage, lower_to_numpy
from metagen.backends.torch_backend import lower_to_torch
from metagen.diagnostics import CompileError
from metagen.verify import ATOL, RTOL


def tolerance_used(a, b) -> float:
    """max |a - b| / (ATOL + RTOL |b|): CONTRACT §5 holds when this is <= 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / (ATOL + RTOL * np.abs(b))))


def assert_agree(reference: dict, other: dict) -> None:
    """Every output of `other` (torch) agrees with `reference` (numpy): same names,
    shapes and dtypes, integers equal, floats within CONTRACT §5 around the reference."""
    assert list(other) == list(reference)
    for name in reference:
        a, b = np.asarray(other[name]), np.asarray(reference[name])
        assert a.dtype == b.dtype, f"{name}: torch's dtype {a.dtype} vs {b.dtype}"
        if not np.issubdtype(b.dtype, np.floating):
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert tolerance_used(a, b) <= 1.0, f"{name}: max |diff| {np.max(np.abs(a - b)):.3e}"


def generated(tmp_path, model, stem="m"):
    """(torch module, numpy module) generated from one IR model."""
    (tmp_path / f"{stem}_t.py").write_text(lower_to_torch(model))
    (tmp_path / f"{stem}_n.py").write_text(lower_to_numpy(model))
    return load_module(str(tmp_path / f"{stem}_t.py")), load_module(str(tmp_path / f"{stem}_n.py"))


def run_pair(t, n, weights, inputs):
    """(numpy outputs, torch outputs) on the same canonical weights and inputs."""
    return n.run(n.load_canonical(weights), inputs), t.run(t.load_canonical(weights), inputs)


# ------------------------------------------------------------------ every op


def test_every_registry_op_has_a_numpy_emitter():
    assert check_coverage() == []


CASE_IDS = {f"{name}{i}": c for name in sorted(CASES) for i, c in enumerate(CASES[name])}


@pytest.fixture(scope="module")
def op_table(tmp_path_factory):
    """Every case of the flax op table in one model: (numpy outputs, torch outputs)
    on perturbed weights."""
    t, n = generated(tmp_path_factory.mktemp("ops"), build_model(CASE_IDS))
    return run_pair(t, n, perturbed(t.to_canonical(t.init(0))), t.example_inputs())


@pytest.mark.parametrize("cid", sorted(CASE_IDS))
def test_op_matches_torch(op_table, cid):
    got, want = op_table
    assert_agree({cid: got[cid]}, {cid: want[cid]})


def test_missing_op_emitter_is_a_compile_error(monkeypatch):
    from metagen.backends import numpy_backend

    monkeypatch.delitem(numpy_backend.OPS, "gelu")
    with pytest.raises(CompileError, match="no emitter for op 'gelu'"):
        lower_to_numpy(build_model({"gelu": CASES["gelu"][0]}))


def test_missing_layer_emitter_is_a_compile_error(monkeypatch):
    from metagen.backends import numpy_backend

    monkeypatch.delitem(numpy_backend.LAYERS, "rms_norm")
    with pytest.raises(CompileError, match="no emitter for layer op 'rms_norm'"):
        lower_to_numpy(build_model({"rms": CASES["rms_norm"][0]}))


def test_extreme_inputs_stay_finite_and_exact(tmp_path):
    """The forms chosen for the reference hold where naive ones fail: sigmoid through
    tanh does not overflow, GELU through erfc keeps the far negative tail."""
    import math

    model = build_model({c: CASES[c][0] for c in ("sigmoid", "gelu", "softmax", "silu")})
    n = load_module(_write(tmp_path, lower_to_numpy(model)))
    x = np.zeros((2, 5, 8), dtype=np.float32)
    x[0, 0, :6] = [-800.0, -30.0, -8.0, 0.0, 8.0, 800.0]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = n.run(n.load_canonical({}), {f"{c}_x": x for c in model.top_module.output_names})
    assert all(np.isfinite(v).all() for v in out.values())
    assert out["gelu"][0, 0, 2] == np.float32(-8.0 * 0.5 * math.erfc(8.0 / math.sqrt(2.0))) != 0.0
    assert out["sigmoid"][0, 0, 0] == 0.0 and out["sigmoid"][0, 0, 5] == 1.0


def _round_trip(dtype):
    def build(g):
        return g.m.op("cast", g.m.op("cast", g.x("x", 2, 5, 8), dtype=dtype), dtype="f32")

    return build


def test_casts_to_narrow_floats_round_as_torch_does(tmp_path):
    """bfloat16 (emulated on the float32 bits) and float16 rounding, bit for bit,
    on values with ties and magnitudes beyond float16's range."""
    t, n = generated(tmp_path, build_model({"bf16": _round_trip("bf16"), "f16": _round_trip("f16")}))
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 5, 8)) * 10.0 ** rng.integers(-6, 6, (2, 5, 8))).astype(np.float32)
    x[0, 0, :4] = [1.00390625, 1.01171875, 70000.0, -1e-8]  # bf16 ties to even, f16 overflow, underflow
    with np.errstate(over="ignore"):  # 70000 -> inf in float16, in both backends
        got, want = run_pair(t, n, {}, {"bf16_x": x, "f16_x": x})
    for name in ("bf16", "f16"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _write(tmp_path, src: str, name: str = "m_np.py") -> str:
    (tmp_path / name).write_text(src)
    return str(tmp_path / name)


# ------------------------------------------------------------------ weights


def _nested_tied(g):
    """A parameter read two sub-modules deep, next to a Repeat."""
    from test_flax import f32

    from metagen.ir.graph import normal
    from metagen.ir.types import DType, TensorType

    inner = g.mb.module("Inner")
    x = inner.input("x", f32(2, 5, 8))
    inner.layer("emb", "embedding", num=10, dim=8)
    inner.layer("proj", "linear", in_features=8, out_features=8)
    inner_def = inner.ret(inner.op("add", x, inner.call("proj", x)))
    blk = g.mb.module("Block")
    bx = blk.input("x", f32(2, 5, 8))
    blk.param("gain", (8,), normal(0.02))
    blk.layer("norm", "layer_norm", dim=8)
    blk_def = blk.ret(blk.op("mul", blk.op("gelu", blk.call("norm", bx)), blk.get_param("gain")))
    enc = g.mb.module("Enc")
    ids = enc.input("ids", TensorType(DType.i64, (2, 5)))
    enc.layer("tok", "embedding", num=10, dim=8)
    enc.sub("inner", inner_def)
    enc.repeat("blocks", blk_def, 2)
    h = enc.call("blocks", enc.call("inner", enc.call("tok", ids)))
    g.m.sub("enc", enc.ret(h))
    return g.m.op("linear_fn", g.m.call("enc", g.ids("ids", 2, 5)), g.m.get_param("enc.inner.emb.weight"))


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    model = build_model({"nested": _nested_tied})
    t, n = generated(tmp_path_factory.mktemp("nested"), model)
    return model, t, n


def test_tied_and_nested_parameters(nested):
    model, t, n = nested
    names = [name for name, _ in model.walk_params()]
    assert "nested.enc.inner.emb.weight" in names and "nested.enc.blocks.1.gain" in names
    weights = perturbed(t.to_canonical(t.init(0)))
    state = n.load_canonical(weights)
    assert state.nested.enc.blocks[1].gain.dtype == np.float64
    back = n.to_canonical(state)
    assert list(back) == names
    assert sum(v.size for v in back.values()) == model.param_count()
    for k in weights:
        assert back[k].dtype == np.float32 and np.array_equal(back[k], weights[k]), k
    inputs = t.example_inputs()
    assert_agree(*run_pair(t, n, weights, inputs))


def test_init_is_bit_identical_to_torch(nested):
    _, t, n = nested
    a, b = t.to_canonical(t.init(3)), n.to_canonical(n.init(3))
    assert list(a) == list(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_load_canonical_rejects_wrong_names_and_shapes(nested):
    _, _, n = nested
    w = n.to_canonical(n.init(0))
    renamed = dict(w)
    renamed["bogus.weight"] = renamed.pop("nested.enc.tok.weight")
    with pytest.raises(KeyError, match="bogus.weight"):
        n.load_canonical(renamed)
    w["nested.enc.tok.weight"] = w["nested.enc.tok.weight"].T
    with pytest.raises(ValueError, match="nested.enc.tok.weight"):
        n.load_canonical(w)


# ------------------------------------------------------------------ example specs

# sd15_unet at --tiny spends ~13 s here (2-core machine), most of it on the torch side;
# step6_diffusion covers the same family in the fast suite.
SLOW_SPECS = {"sd15_unet.yaml", "sd15_pipeline.yaml"}
SPECS = [
    pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW_SPECS else p
    for p in sorted(glob.glob(example("*", "*.yaml")))
]


def _spec_id(path: str) -> str:
    return os.path.relpath(path, example()).replace(os.sep, "/")


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_example_tiny_matches_torch(spec, tmp_path):
    from metagen.compiler.objectives import ObjectiveError, build_loss

    tpath, comp = compile_to(tmp_path, spec, "torch")
    npath, _ = compile_to(tmp_path, spec, "numpy")
    t, n = load_module(str(tpath)), load_module(str(npath))
    weights = t.to_canonical(t.init(0))
    assert n.OUTPUTS == t.OUTPUTS and n.INPUTS == t.INPUTS and n.CONFIG == t.CONFIG
    inputs = t.example_inputs(batch_size=2, seed=1)
    assert_agree(*run_pair(t, n, weights, inputs))
    try:
        loss = build_loss(comp.ctx)
    except ObjectiveError:
        return
    lt, ln = generated(tmp_path, loss.loss, "loss")
    assert_agree(*run_pair(lt, ln, {}, lt.example_inputs(seed=2)))


# ------------------------------------------------------------------ the module itself

GPT2 = example("reference", "gpt2_small.yaml")


def test_generated_numpy_imports_no_framework(tmp_path):
    """Only numpy and the standard library, checked twice: the import statements, and a
    run in a fresh interpreter where torch, jax, flax and onnx cannot be imported."""
    path, _ = compile_to(tmp_path, GPT2, "numpy")
    src = path.read_text()
    roots = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots <= {"math", "zlib", "numpy"}
    script = (
        "import importlib.util, sys\n"
        "for name in ('torch', 'jax', 'jaxlib', 'flax', 'onnx', 'onnxruntime', 'metagen'):\n"
        "    sys.modules[name] = None\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "out = m.run(m.init(0), m.example_inputs())\n"
        "print(sorted(out), out['logits'].shape, out['logits'].dtype)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("['logits'] (2, ") and r.stdout.strip().endswith("float32")


def test_generated_numpy_is_black_formatted_and_deterministic():
    from metagen.backends.pyemit import format_python
    from metagen.pipeline import compile_spec

    src = lower_to_numpy(compile_spec(GPT2, tiny=True).model)
    assert format_python(src) == src
    assert src == lower_to_numpy(compile_spec(GPT2, tiny=True).model)


def test_metagenc_target_numpy(tmp_path):
    from metagen.cli import metagenc_main

    assert metagenc_main([GPT2, "--target", "numpy", "--tiny", "-o", str(tmp_path / "gpt2_np.py")]) == 0
    n = load_module(str(tmp_path / "gpt2_np.py"))
    assert n.run(n.init(0), n.example_inputs())["logits"].dtype == np.float32
