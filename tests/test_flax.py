"""The flax backend against the torch backend: every registry op on a one-op graph,
tied and nested parameters, init bit-identity, the canonical round trip and
safetensors interchange, and the example specs end to end at --tiny."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import example, load_module

from metagen.backends.flax_backend import check_coverage, lower_to_flax
from metagen.backends.torch_backend import lower_to_torch
from metagen.ir import ops
from metagen.ir.builder import ModelBuilder, ModuleBuilder
from metagen.ir.graph import InputSpec, normal
from metagen.ir.types import DType, TensorType
from metagen.verify import ATOL, RTOL

F32, I64 = DType.f32, DType.i64


def f32(*shape):
    return TensorType(F32, tuple(shape))


class Graph:
    """One case's module under construction: inputs are declared with their kind so
    example_inputs() draws valid values."""

    def __init__(self, mb: ModelBuilder, name: str):
        self.mb = mb
        self.m: ModuleBuilder = mb.module(name)
        self.specs: list[InputSpec] = []

    def x(self, name, *shape, kind="normal", dtype=F32, low=0.0, high=0.0):
        t = TensorType(dtype, tuple(shape))
        self.specs.append(InputSpec(name, t, kind, low, high))
        return self.m.input(name, t)

    def ids(self, name, *shape, high=10):
        return self.x(name, *shape, kind="tokens", dtype=I64, high=high)


def _binary(op, **attrs):
    def build(g):
        return g.m.op(op, g.x("x", 2, 5, 8), g.x("y", 8), **attrs)

    return build


def _unary(op, shape=(2, 5, 8), **attrs):
    def build(g):
        return g.m.op(op, g.x("x", *shape), **attrs)

    return build


def _layer(op, shape=(2, 5, 8), **attrs):
    def build(g):
        g.m.layer("layer", op, **attrs)
        return g.m.call("layer", g.x("x", *shape))

    return build


def _attention(causal, heads, kv_heads, sk=5, scale=None):
    def build(g):
        d = 4
        q = g.x("q", 2, 5, heads * d)
        k = g.x("k", 2, sk, kv_heads * d)
        v = g.x("v", 2, sk, kv_heads * d)
        return g.m.op("attention", q, k, v, heads=heads, kv_heads=kv_heads, head_dim=d, causal=causal, scale=scale)

    return build


def _tied_head(g):
    g.m.layer("emb", "embedding", num=10, dim=8)
    h = g.m.call("emb", g.ids("ids", 2, 5))
    return g.m.op("linear_fn", h, g.m.get_param("emb.weight"))


def _prepend(g):
    token = g.m.param("cls_token", (1, 1, 8), normal(0.02))
    return g.m.op("prepend", g.x("x", 2, 5, 8), token)


# Op name -> graph builders; every registry op needs at least one entry.
CASES: dict[str, list] = {
    "linear": [_layer("linear", in_features=8, out_features=6), _layer("linear", in_features=8, out_features=6, bias=False)],
    "embedding": [lambda g: (g.m.layer("emb", "embedding", num=10, dim=8), g.m.call("emb", g.ids("ids", 2, 5)))[1]],
    "layer_norm": [
        _layer("layer_norm", dim=8),
        _layer("layer_norm", dim=8, bias=False, eps=1e-6),
        _layer("layer_norm", dim=8, affine=False),
    ],
    "rms_norm": [_layer("rms_norm", dim=8, eps=1e-5)],
    "group_norm": [_layer("group_norm", (2, 8, 4, 4), groups=4, channels=8)],
    "conv2d": [
        _layer("conv2d", (2, 3, 8, 8), in_channels=3, out_channels=4, kernel=3, stride=2, padding=1),
        _layer("conv2d", (2, 3, 8, 8), in_channels=3, out_channels=5, kernel=4, stride=4, bias=False),
    ],
    "add": [_binary("add")],
    "sub": [_binary("sub")],
    "mul": [_binary("mul")],
    "div": [lambda g: g.m.op("div", g.x("x", 2, 5, 8), g.m.op("add", g.m.op("exp", g.x("y", 8)), g.x("z", 2, 5, 8, kind="uniform", low=0.5, high=1.0)))],
    "scale": [_unary("scale", factor=0.125)],
    "gelu": [_unary("gelu")],
    "gelu_tanh": [_unary("gelu_tanh")],
    "quick_gelu": [_unary("quick_gelu")],
    "silu": [_unary("silu")],
    "relu": [_unary("relu")],
    "tanh": [_unary("tanh")],
    "sigmoid": [_unary("sigmoid")],
    "exp": [_unary("exp")],
    "softmax": [_unary("softmax"), _unary("softmax", axis=1)],
    "l2_normalize": [_unary("l2_normalize"), _unary("l2_normalize", axis=0)],
    "matmul": [
        lambda g: g.m.op("matmul", g.x("x", 2, 5, 8), g.x("y", 2, 6, 8), transpose_b=True),
        lambda g: g.m.op("matmul", g.x("x", 2, 5, 8), g.x("y", 8, 6)),
    ],
    "linear_fn": [_tied_head],
    "attention": [
        _attention(causal=True, heads=4, kv_heads=2),
        _attention(causal=False, heads=4, kv_heads=4, sk=7, scale=0.3),
        _attention(causal=True, heads=4, kv_heads=1),
        lambda g: g.m.op(
            "attention", g.x("q", 2, 3, 16), g.x("k", 2, 5, 8), g.x("v", 2, 5, 8),
            g.m.op("attention_bias", g.ids("mask", 2, 5, high=2), g.x("x", 2, 3, 1), causal=True),
            heads=4, kv_heads=2, head_dim=4,
        ),
        lambda g: g.m.op(  # keys and values in the KV cache's [B, KVH, S, D] layout
            "attention", g.x("q", 2, 3, 16), g.x("k", 2, 2, 5, 4), g.x("v", 2, 2, 5, 4),
            g.m.op("attention_bias", g.ids("mask", 2, 5, high=2), g.x("x", 2, 3, 1), causal=True),
            heads=4, kv_heads=2, head_dim=4, split_kv=True,
        ),
        lambda g: g.m.op(
            "attention", g.x("q", 2, 5, 8), g.x("k", 2, 2, 5, 4), g.x("v", 2, 2, 5, 4),
            heads=2, kv_heads=2, head_dim=4, causal=True, split_kv=True,
        ),
    ],

    "rope": [
        _unary("rope", (2, 5, 16), heads=2, head_dim=8),
        _unary("rope", (2, 6, 12), heads=3, head_dim=4, theta=500.0),
        lambda g: g.m.op("rope", g.x("x", 2, 5, 16), g.ids("pos", 2, 5, high=50), heads=2, head_dim=8),
        _unary("rope", (2, 40, 16), heads=2, head_dim=8, scaling="llama3", factor=8.0, original_context=64),
        lambda g: g.m.op(
            "rope", g.x("x", 2, 5, 16), g.ids("pos", 2, 5, high=50), heads=2, head_dim=8, scaling="llama3", factor=8.0,
            original_context=16,
        ),
    ],
    "attention_bias": [
        lambda g: g.m.op("attention_bias", g.ids("mask", 2, 7, high=2), g.x("x", 2, 5, 8)),
        lambda g: g.m.op("attention_bias", g.ids("mask", 2, 7, high=2), g.x("x", 2, 5, 8), causal=True),
        lambda g: g.m.op("attention_bias", g.ids("mask", 2, 7, high=2), g.x("x", 2, 7, 8), causal=True, window=3),
    ],
    "split_heads": [_unary("split_heads", (2, 5, 12), heads=3, head_dim=4)],
    "merge_heads": [_unary("merge_heads", (2, 3, 5, 4))],
    "positions": [lambda g: g.m.op("positions", g.x("x", 2, 5, 8))],
    "concat": [lambda g: g.m.op("concat", g.x("x", 2, 5, 8), g.x("y", 2, 3, 8), axis=1)],
    "stack": [lambda g: g.m.op("stack", g.x("x", 2, 5), g.x("y", 2, 5), axis=-1)],
    "slice": [_unary("slice", axis=-1, start=2, end=6), _unary("slice", axis=1, start=0, end=1)],
    "select": [_unary("select", axis=1, index=3), _unary("select", axis=-1, index=0)],
    "transpose": [_unary("transpose", perm=(2, 0, 1))],
    "unsqueeze": [_unary("unsqueeze", axes=(3, 0))],
    "prepend": [_prepend],
    "flatten_spatial": [_unary("flatten_spatial", (2, 3, 4, 5))],
    "unflatten_spatial": [lambda g: g.m.op("unflatten_spatial", g.x("x", 2, 20, 3), g.x("like", 2, 1, 4, 5))],
    "merge_axes": [_unary("merge_axes", (2, 3, 4, 5), start=0), _unary("merge_axes", (2, 3, 4, 5), start=1, count=3)],
    "split_axis": [lambda g: g.m.op("split_axis", g.x("x", 6, 4, 5), g.x("like", 2, 3, 1), axis=0, like_axes=(0, 1)),
                   lambda g: g.m.op("split_axis", g.x("x", 2, 20, 3), g.x("like", 5, 1, 4), axis=1, like_axes=(2, 0))],
    "expand_axis": [lambda g: g.m.op("expand_axis", g.x("x", 2, 5), g.x("like", 2, 3, 1), axis=1, like_axis=1),
                    lambda g: g.m.op("expand_axis", g.x("x", 2, 5), g.x("like", 4), axis=2, like_axis=0)],
    "pad2d": [_unary("pad2d", (2, 3, 4, 5), pads=(0, 1, 0, 1)), _unary("pad2d", (2, 3, 4, 5), pads=(2, 0, 1, 3))],
    "require_multiple": [_unary("require_multiple", (2, 3, 4, 6), axes=(2, 3), multiple=2, what="sample")],
    "mean": [_unary("mean", axis=1)],
    "gather_argmax": [lambda g: g.m.op("gather_argmax", g.x("x", 2, 5, 8), g.ids("ids", 2, 5, high=50))],
    "upsample_nearest": [_unary("upsample_nearest", (2, 3, 4, 5)), _unary("upsample_nearest", (2, 3, 2, 2), factor=3)],
    "timestep_embedding": [
        lambda g: g.m.op("timestep_embedding", g.x("t", 2, kind="uniform", high=1000.0), dim=16),
        lambda g: g.m.op(
            "timestep_embedding", g.x("t", 2, kind="uniform", high=1000.0), dim=8, flip_sin_to_cos=False, freq_shift=1.0
        ),
    ],
    "cast": [lambda g: g.m.op("cast", g.ids("ids", 2, 5), dtype="f32")],
    "cross_entropy": [lambda g: g.m.op("cross_entropy", g.x("logits", 2, 5, 10), g.ids("labels", 2, 5))],
    "mse": [lambda g: g.m.op("mse", g.x("x", 2, 5, 8), g.x("y", 2, 5, 8))],
    "dice_loss": [
        lambda g: g.m.op("dice_loss", g.x("logits", 2, 3, 4, 5), g.ids("labels", 2, 4, 5, high=3)),
        lambda g: g.m.op("dice_loss", g.x("logits", 3, 4, 6), g.ids("labels", 3, 6, high=4), smooth=0.5),
    ],
    "batch_norm": [
        _layer("batch_norm", (2, 6, 5, 4), channels=6),
        _layer("batch_norm", (3, 4, 2, 2), channels=4, eps=1e-3, frozen=True),
    ],
    "sine_positions_2d": [
        _unary("sine_positions_2d", (2, 3, 4, 5), features=6),
        _unary("sine_positions_2d", (1, 2, 3, 3), features=4, temperature=20.0, scale=1.0),
    ],
    "max_pool2d": [
        _unary("max_pool2d", (2, 3, 9, 8), kernel=3, stride=2, padding=1),
        _unary("max_pool2d", (2, 3, 6, 6), kernel=2, stride=2),
    ],
    "masked_cross_entropy": [
        lambda g: g.m.op(
            "masked_cross_entropy",
            g.x("logits", 2, 5, 10),
            g.ids("labels", 2, 5),
            g.x("mask", 2, 5, kind="tokens", high=2),
        )
    ],
    "dropout": [_unary("dropout", rate=0.25)],
    "div": [lambda g: g.m.op("div", g.x("x", 2, 5, 8), g.x("y", 8, kind="uniform", low=0.5, high=2.0))],
    "sqrt": [
        lambda g: g.m.op("sqrt", g.x("x", 2, 5, 8, kind="uniform", low=0.01, high=4.0)),
        lambda g: g.m.op("sqrt", g.x("x", 2, 5, 8, kind="uniform", low=0.0, high=4.0), eps=1e-5),
    ],
    "reshape": [
        lambda g: g.m.op("reshape", g.x("x", 2, 3, 4, 8), shape=(-1, 4, 8)),
        lambda g: g.m.op("reshape", g.x("x", 6, 5), shape=(2, -1, 5)),
    ],
    "frames": [_unary("frames", (2, 3, 13), size=4, step=3), _unary("frames", (2, 8), size=8, step=1)],
    "log_softmax": [_unary("log_softmax"), _unary("log_softmax", axis=1)],
    "take_along": [
        lambda g: g.m.op("take_along", g.x("x", 2, 5, 8), g.ids("index", 2, 5, high=8)),
        lambda g: g.m.op("take_along", g.x("x", 3, 4), g.ids("index", 3, high=4)),
    ],
    "clip": [_unary("clip", low=-0.2, high=0.3)],
    "minimum": [_binary("minimum")],
    "gather_rows": [
        lambda g: g.m.op("gather_rows", g.x("x", 5, 8), g.ids("index", 7, high=5)),
        lambda g: g.m.op("gather_rows", g.x("x", 5, 2, 3), g.ids("index", 4, high=5)),
    ],
    "scatter_add": [
        lambda g: g.m.op("scatter_add", g.x("src", 9, 8), g.ids("index", 9, high=6), g.x("like", 6, 8)),
        lambda g: g.m.op("scatter_add", g.x("src", 9, 2, 3), g.ids("index", 9, high=4), g.x("like", 5)),
    ],
    "segment_softmax": [
        lambda g: g.m.op("segment_softmax", g.x("scores", 12, 3), g.ids("index", 12, high=4), g.x("like", 5, 8)),
        lambda g: g.m.op("segment_softmax", g.x("scores", 7), g.ids("index", 7, high=3), g.x("like", 3)),
    ],
    "leaky_relu": [_unary("leaky_relu"), _unary("leaky_relu", slope=0.2)],
    "degree": [lambda g: g.m.op("degree", g.ids("index", 9, high=5), g.x("like", 6, 2))],
    "huber": [
        lambda g: g.m.op("huber", g.x("x", 2, 5, 8), g.x("y", 2, 5, 8)),
        lambda g: g.m.op("huber", g.x("x", 2, 5, 8), g.x("y", 2, 5, 8), delta=0.3),
    ],
}


def build_model(cases: dict):
    """One model running every case side by side: case `c` is sub-module `c`, its
    inputs are top-level inputs `c_<name>` and its result is output `c` (one model,
    so one code generation and one jit for the whole op table)."""
    mb = ModelBuilder()
    top = mb.module("Top")
    specs, outs = [], []
    for cid, case in cases.items():
        g = Graph(mb, f"Case_{cid}")
        sub = g.m.ret(case(g))
        args = []
        for spec in g.specs:
            name = f"{cid}_{spec.name}"
            specs.append(InputSpec(name, spec.type, spec.kind, spec.low, spec.high))
            args.append(top.input(name, spec.type))
        top.sub(cid, sub)
        outs.append(top.call(cid, *args))
    top_def = top.ret(*outs, names=list(cases))
    return mb.finish(top_def, name="Top", spec_name="op_table", inputs=specs, config={}, family="test", symbols={})


def generated_pair(tmp_path, model):
    (tmp_path / "t.py").write_text(lower_to_torch(model))
    (tmp_path / "f.py").write_text(lower_to_flax(model))
    return load_module(str(tmp_path / "t.py")), load_module(str(tmp_path / "f.py"))


def perturbed(weights, seed=1):
    """Canonical weights with every entry moved, so zero biases and unit norm scales
    do not hide a layout or naming mistake."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.1).astype(np.float32) for k, v in weights.items()}


def assert_close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    if not np.issubdtype(b.dtype, np.floating):
        np.testing.assert_array_equal(a, b)
        return
    bad = np.abs(a.astype(np.float64) - b) > ATOL + RTOL * np.abs(b.astype(np.float64))
    assert not bad.any(), f"max abs error {np.abs(a - b).max():.3e}"


def test_every_registry_op_has_a_flax_emitter():
    assert check_coverage() == []


def test_every_registry_op_has_an_equivalence_case():
    assert sorted(set(ops.REGISTRY) - set(CASES)) == []


CASE_IDS = {f"{name}{i}": c for name in sorted(CASES) for i, c in enumerate(CASES[name])}


def run_both(tmp_path, cases: dict):
    model = build_model(cases)
    t, f = generated_pair(tmp_path, model)
    weights = perturbed(t.to_canonical(t.init(0)))
    inputs = t.example_inputs()
    return t.run(t.load_canonical(weights), inputs), f.run(f.load_canonical(weights), inputs)


@pytest.fixture(scope="module")
def op_table(tmp_path_factory):
    """Every case at once; None when the combined model fails, so each case then
    runs alone and the failing op is named."""
    try:
        return run_both(tmp_path_factory.mktemp("ops"), CASE_IDS)
    except Exception:
        return None


@pytest.mark.parametrize("cid", sorted(CASE_IDS))
def test_op_matches_torch(tmp_path, op_table, cid):
    want, got = op_table if op_table is not None else run_both(tmp_path, {cid: CASE_IDS[cid]})
    assert_close(got[cid], want[cid])


def _nested_tied(g):
    """A parameter read two sub-modules deep, next to a Repeat."""
    inner = g.mb.module("Inner")
    x = inner.input("x", f32(2, 5, 8))
    inner.layer("emb", "embedding", num=10, dim=8)
    inner.layer("proj", "linear", in_features=8, out_features=8)
    inner_def = inner.ret(inner.op("add", x, inner.call("proj", x)))
    blk = g.mb.module("Block")
    bx = blk.input("x", f32(2, 5, 8))
    blk.layer("norm", "layer_norm", dim=8)
    blk_def = blk.ret(blk.op("gelu", blk.call("norm", bx)))
    enc = g.mb.module("Enc")
    ids = enc.input("ids", TensorType(I64, (2, 5)))
    enc.layer("tok", "embedding", num=10, dim=8)
    enc.sub("inner", inner_def)
    enc.repeat("blocks", blk_def, 2)
    h = enc.call("blocks", enc.call("inner", enc.call("tok", ids)))
    g.m.sub("enc", enc.ret(h))
    return g.m.op("linear_fn", g.m.call("enc", g.ids("ids", 2, 5)), g.m.get_param("enc.inner.emb.weight"))


def test_tied_and_nested_parameters(tmp_path):
    model = build_model({"nested": _nested_tied})
    t, f = generated_pair(tmp_path, model)
    names = [n for n, _ in model.walk_params()]
    assert "nested.enc.inner.emb.weight" in names
    weights = perturbed(t.to_canonical(t.init(0)))
    state = f.load_canonical(weights)
    back = f.to_canonical(state)
    assert list(back) == names
    import jax
    from flax import nnx

    leaves = jax.tree.leaves(nnx.state(state, nnx.Param))
    assert len(leaves) == len(names)
    assert sum(x.size for x in leaves) == model.param_count()
    inputs = t.example_inputs()
    assert_close(f.run(state, inputs)["nested"], t.run(t.load_canonical(weights), inputs)["nested"])


def test_missing_flax_emitter_is_a_compile_error(monkeypatch):
    from metagen.backends import flax_backend
    from metagen.diagnostics import CompileError

    model = build_model({"gelu": CASES["gelu"][0]})
    monkeypatch.delitem(flax_backend.OPS, "gelu")
    with pytest.raises(CompileError, match="no emitter for op 'gelu'"):
        lower_to_flax(model)


# ------------------------------------------------------------------ whole specs

GPT2 = example("reference", "gpt2_small.yaml")


@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    from conftest import compile_to

    d = tmp_path_factory.mktemp("gpt2")
    tpath, comp = compile_to(d, GPT2, "torch")
    fpath, _ = compile_to(d, GPT2, "flax")
    return load_module(str(tpath)), load_module(str(fpath)), comp


def test_init_is_bit_identical_to_torch(gpt2_pair):
    t, f, comp = gpt2_pair
    a, b = t.to_canonical(t.init(3)), f.to_canonical(f.init(3))
    assert list(a) == list(b) == [n for n, _ in comp.model.walk_params()]
    for k in a:
        assert a[k].dtype == b[k].dtype == np.float32
        assert np.array_equal(a[k], b[k]), k


def test_canonical_round_trip(gpt2_pair):
    t, f, _ = gpt2_pair
    w = perturbed(t.to_canonical(t.init(0)))
    back = f.to_canonical(f.load_canonical(w))
    assert list(back) == list(w)
    for k in w:
        assert back[k].shape == w[k].shape and np.array_equal(back[k], w[k]), k


def test_load_canonical_rejects_wrong_names(gpt2_pair):
    _, f, _ = gpt2_pair
    w = f.to_canonical(f.init(0))
    w["bogus.weight"] = w.pop("norm_f.weight")
    with pytest.raises(KeyError, match="bogus.weight"):
        f.load_canonical(w)


def test_safetensors_from_torch_load_into_flax(gpt2_pair, tmp_path):
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    t, f, _ = gpt2_pair
    model = t.load_canonical(perturbed(t.to_canonical(t.init(0))))
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    state = f.load_canonical(load_file(str(tmp_path / "w.safetensors")))
    inputs = t.example_inputs()
    assert_close(f.run(state, inputs)["logits"], t.run(model, inputs)["logits"])


def test_flax_param_count_matches_ir(gpt2_pair):
    import jax
    from flax import nnx

    _, f, comp = gpt2_pair
    leaves = jax.tree.leaves(nnx.state(f.init(0), nnx.Param))
    assert sum(x.size for x in leaves) == comp.model.param_count()
    # the tied LM head reads tok_embeddings: one leaf, not two
    assert len(leaves) == len(list(comp.model.walk_params()))


def test_generated_flax_is_standalone_and_black_formatted(gpt2_pair, tmp_path):
    import ast

    from metagen.backends.pyemit import format_python
    from metagen.pipeline import compile_spec

    src = lower_to_flax(compile_spec(GPT2, tiny=True).model)
    assert format_python(src) == src
    roots = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(node.module.split(".")[0])
    assert roots <= {"math", "zlib", "jax", "numpy", "flax"}
    assert "jax.config.update" not in src


def test_run_is_highest_precision_without_touching_the_global_setting(tmp_path, monkeypatch):
    """Importing a generated module leaves JAX's matmul precision alone; `run` traces
    the model under "highest" (CONTRACT §5) and restores it."""
    import jax

    from conftest import compile_to

    before = jax.config.jax_default_matmul_precision
    mod = load_module(str(compile_to(tmp_path, GPT2, "flax")[0]))
    assert jax.config.jax_default_matmul_precision == before
    seen, call = [], mod.Model.__call__

    def spy(self, *args, **kwargs):
        seen.append(jax.config.jax_default_matmul_precision)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(mod.Model, "__call__", spy)
    mod.run(mod.init(0), mod.example_inputs())
    assert seen == ["highest"] and jax.config.jax_default_matmul_precision == before


def test_generated_flax_is_deterministic():
    from metagen.pipeline import compile_spec

    assert lower_to_flax(compile_spec(GPT2, tiny=True).model) == lower_to_flax(compile_spec(GPT2, tiny=True).model)


def test_run_leaves_the_weights_in_place(tmp_path):
    """`run` jits a pure function of the split model whose outputs are the model's
    outputs and its non-parameter state only: after a call every weight is still the
    very array it was. (`nnx.jit` returned the whole state, so XLA copied every weight
    on every call and the model's variables were replaced by those copies.)"""
    import jax
    from flax import nnx

    from conftest import compile_to

    mod = load_module(str(compile_to(tmp_path, GPT2, "flax")[0]))
    model = mod.init(0)
    before = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    out = mod.run(model, mod.example_inputs())
    after = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    assert out and len(before) == len(after) > 0
    assert all(a is b for a, b in zip(before, after))
