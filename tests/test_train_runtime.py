"""The training runtime as modules (backends/runtime): each piece tested directly
(synthetic data, the objectives' data transforms, the learning-rate schedule, the
optimizers, checkpoint round trips), the copy into train.py (standalone, every
name defined, no metagen import), and the objectives' data declarations."""

from __future__ import annotations

import ast
import builtins
import dataclasses
import math
import symtable
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import example

from metagen.backends.runtime import data, flax_train, import_block, program, runtime_source, split_source, torch_train
from metagen.compiler.objectives import OBJECTIVES, build_loss
from metagen.pipeline import compile_spec
from metagen.training import training_files

RUNTIME = ("data", "torch_train", "flax_train")


def _tables(t):
    yield t
    for child in t.get_children():
        yield from _tables(child)


def lint(source: str) -> tuple[set[str], set[str]]:
    """(names read as globals that the module never binds, imports never read):
    pyflakes' two checks that matter for a copied-together program, on the stdlib's
    symbol tables."""
    top = symtable.symtable(source, "<program>", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    known = bound | set(dir(builtins)) | {"__file__"}
    undefined = {
        s.get_name()
        for t in _tables(top)
        for s in t.get_symbols()
        if s.is_referenced() and (t is top or s.is_global()) and s.get_name() not in known
    }
    read = {s.get_name() for t in _tables(top) for s in t.get_symbols() if s.is_referenced()}
    unused = {s.get_name() for s in top.get_symbols() if s.is_imported()} - read
    return undefined, unused


def test_lint_finds_undefined_names_and_unused_imports():
    src = "import os\nimport sys\n\ndef f():\n    return sys.argv + missing\n\nclass C:\n    x = other\n"
    assert lint(src) == ({"missing", "other"}, {"os"})


@pytest.mark.parametrize("name", RUNTIME + ("program",))
def test_runtime_modules_lint_clean(name):
    module = {"data": data, "torch_train": torch_train, "flax_train": flax_train, "program": program}[name]
    with open(module.__file__, encoding="utf-8") as f:
        assert lint(f.read()) == (set(), set())


# ---------------------------------------------------------------- the copy


def test_runtime_source_drops_docstring_and_metagen_imports():
    src = runtime_source("torch_train")
    assert "import torch" in src.imports and "from torch import nn" in src.imports
    assert not any("metagen" in s for s in src.imports)
    assert src.body.startswith("def decay_mask(") and "metagen" not in src.body
    assert compile(src.body, "<body>", "exec")


def test_split_source_rejects_a_late_import():
    with pytest.raises(ValueError, match="line 4"):
        split_source("x", '"""doc"""\nimport os\nX = 1\nimport sys\n')


def test_import_block_groups_stdlib_then_third_party():
    lines = import_block(["from torch import nn", "import torch", "import os", "import numpy as np", "import os"])
    assert lines == ["import os", "", "import numpy as np", "import torch", "from torch import nn", ""]


PROGRAM_SPECS = [
    ("tutorial", "step4_training.yaml"),
    ("reference", "bert_base_classifier.yaml"),
    ("tutorial", "step6_diffusion.yaml"),
    ("tutorial", "step7_clip.yaml"),
]


@pytest.mark.parametrize("where,name", PROGRAM_SPECS, ids=[n for _, n in PROGRAM_SPECS])
def test_generated_programs_are_standalone_and_lint_clean(where, name):
    files = training_files(compile_spec(example(where, name), tiny=True), 0)
    for rel in ("code/torch/train.py", "code/flax/train.py"):
        source = files[rel].decode("utf-8")
        assert lint(source) == (set(), set()), rel
        modules = {
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        }
        assert not any(m.split(".")[0] == "metagen" for m in modules), rel
        for module in RUNTIME[:1] + (("torch_train",) if "torch" in rel else ("flax_train",)):
            assert runtime_source(module).body in source


@pytest.mark.parametrize("name", RUNTIME + ("sampling",))
def test_runtime_bodies_are_in_black_layout(name):
    """Programs carry these bodies verbatim, unread by black (`Lines.verbatim`): they
    must already be what black would make of them."""
    import black

    from metagen.backends.pyemit import BLACK_MODE

    body = runtime_source(name).body + "\n"
    assert black.format_str(body, mode=BLACK_MODE) == body


def test_a_program_with_verbatim_blocks_is_what_black_makes_of_it():
    import black

    from metagen.backends.pyemit import BLACK_MODE

    files = training_files(compile_spec(example("tutorial", "step4_training.yaml"), tiny=True), 0)
    source = files["code/torch/train.py"].decode("utf-8")
    assert black.format_str(source, mode=BLACK_MODE) == source


# ---------------------------------------------------------------- data


@pytest.fixture
def fake_model(monkeypatch):
    """A model module with unusual input names, bound as the runtime's M."""
    kinds = [
        {"name": "latents", "kind": "normal", "low": 0.0, "high": 0.0, "dtype": "float32"},
        {"name": "when", "kind": "uniform", "low": 0.0, "high": 1000.0, "dtype": "float32"},
        {"name": "ids", "kind": "tokens", "low": 0, "high": 50, "dtype": "int64"},
    ]
    shapes = {"latents": ["batch", 2, 3], "when": ["batch"], "ids": ["batch", "seq"]}
    m = SimpleNamespace(
        _INPUT_KINDS=kinds,
        _EXAMPLE_SIZES={"seq": 7},
        INPUTS={k: {"shape": v} for k, v in shapes.items()},
    )
    monkeypatch.setattr(data, "M", m)
    monkeypatch.setattr(data, "TRAIN", {"seq_len": 0, "data": []})
    return m


def _batch(rng, n=4):
    return {
        "latents": rng.standard_normal((n, 2, 3)).astype(np.float32),
        "when": np.zeros(n, np.float32),
        "ids": data._synthetic_tokens(rng, (n, 7), 50).astype(np.int64),
    }


def test_synthetic_tokens_count_up_by_a_small_stride():
    x = data._synthetic_tokens(np.random.default_rng(0), (5, 3, 9), 11)
    step = (x[..., 1:] - x[..., :-1]) % 11
    assert x.shape == (5, 3, 9) and x.min() >= 0 and x.max() < 11
    assert (step == step[..., :1]).all() and set(np.unique(step)) <= {1, 2, 3}


def test_alphas_cumprod_is_the_scaled_linear_schedule():
    sched = {"steps": 10, "beta_start": 0.01, "beta_end": 0.04}
    ab = data._alphas_cumprod(sched)
    betas = [(0.1 + (0.2 - 0.1) * i / 9) ** 2 for i in range(10)]
    assert np.allclose(ab, np.cumprod([1 - b for b in betas]))
    assert (np.diff(ab) < 0).all()


def test_diffusion_noise_uses_the_declared_inputs(fake_model):
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    x0 = batch["latents"].copy()
    sched = {"kind": "scaled_linear", "steps": 50, "beta_start": 0.00085, "beta_end": 0.012}
    t = {"kind": "diffusion_noise", "inputs": {"sample": "latents", "timestep": "when"}, "outputs": {"noise": "eps"},
         "carry": [], "params": {"schedule": sched}}
    data.diffusion_noise(batch, np.random.default_rng(1), t, 4, True)
    steps = batch["when"]
    assert batch["when"].dtype == np.float32 and ((0 <= steps) & (steps < 50)).all()
    ab = data._alphas_cumprod(sched)[steps.astype(int)].reshape(-1, 1, 1)
    want = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * batch["eps"]
    assert np.allclose(batch["latents"], want, atol=1e-6)
    assert "noise" not in batch and batch["eps"].shape == x0.shape


def test_mask_tokens_hides_at_least_one_token_a_row(fake_model):
    batch = _batch(np.random.default_rng(0), 64)
    original = batch["ids"].copy()
    t = {"kind": "mask_tokens", "inputs": {"tokens": "ids"}, "outputs": {"labels": "y", "mask": "hidden"},
         "carry": [], "params": {"rate": 0.15, "mask_id": 49}}
    data.mask_tokens(batch, np.random.default_rng(1), t, 64, True)
    hidden = batch["hidden"].astype(bool)
    assert hidden.any(axis=1).all() and 0.1 < hidden.mean() < 0.3
    assert (batch["ids"][hidden] == 49).all() and (batch["ids"][~hidden] == original[~hidden]).all()
    assert (batch["y"] == original).all() and "mask" not in batch and "labels" not in batch
    given = {"ids": original.copy(), "y": original.copy()}
    data.mask_tokens(given, np.random.default_rng(1), t, 64, False)
    assert set(given) == {"ids", "y"} and (given["ids"] == original).all()


def test_class_labels_are_carried_by_synthetic_inputs(fake_model):
    t = {"kind": "class_labels", "inputs": {}, "outputs": {"labels": "labels"}, "carry": ["latents", "ids"],
         "params": {"classes": 10, "shape": ["batch"]}}
    batch = _batch(np.random.default_rng(0), 32)
    before = {k: v.copy() for k, v in batch.items()}
    data.class_labels(batch, np.random.default_rng(1), t, 32, True)
    labels = batch["labels"]
    assert labels.dtype == np.int64 and labels.shape == (32,) and labels.max() < 10
    assert (batch["ids"][:, 0] == labels).all() and (batch["ids"][:, 1:] == before["ids"][:, 1:]).all()
    assert np.allclose(batch["latents"] - before["latents"], (labels / 10).reshape(-1, 1, 1))
    assert (batch["when"] == before["when"]).all()  # not declared: untouched
    from_file = _batch(np.random.default_rng(0), 32)
    data.class_labels(from_file, np.random.default_rng(1), t, 32, False)
    assert (from_file["ids"] == before["ids"]).all() and (from_file["labels"] == labels).all()


def test_per_position_labels(fake_model):
    t = {"kind": "class_labels", "inputs": {}, "outputs": {"labels": "tags"}, "carry": ["ids"],
         "params": {"classes": 5, "shape": ["batch", 7]}}
    batch = _batch(np.random.default_rng(0))
    data.class_labels(batch, np.random.default_rng(1), t, 4, True)
    assert batch["tags"].shape == (4, 7) and (batch["ids"] == batch["tags"]).all()


def test_pair_keys_share_a_key_per_row(fake_model):
    t = {"kind": "pair_keys", "inputs": {}, "outputs": {}, "carry": ["latents", "ids"], "params": {"keys": 16}}
    batch = _batch(np.random.default_rng(0), 32)
    before = {k: v.copy() for k, v in batch.items()}
    data.pair_keys(batch, np.random.default_rng(1), t, 32, True)
    keys = batch["ids"][:, 0]
    assert np.allclose(batch["latents"] - before["latents"], (keys / 16).reshape(-1, 1, 1))
    untouched = _batch(np.random.default_rng(0), 32)
    data.pair_keys(untouched, np.random.default_rng(1), t, 32, False)
    assert all((untouched[k] == before[k]).all() for k in before)


def test_data_source_is_a_function_of_seed_and_step(fake_model, tmp_path):
    data.TRAIN["data"] = [
        {"kind": "class_labels", "inputs": {}, "outputs": {"labels": "labels"}, "carry": ["ids"],
         "params": {"classes": 3, "shape": ["batch"]}}
    ]
    a, b = data.DataSource(None, 5).batch(2, 4), data.DataSource(None, 5).batch(2, 4)
    assert set(a) == {"latents", "when", "ids", "labels"}
    assert all((a[k] == b[k]).all() for k in a)
    assert not (data.DataSource(None, 5).batch(3, 4)["latents"] == a["latents"]).all()
    assert a["ids"].shape == (4, 7) and (a["ids"][:, 0] == a["labels"]).all()
    data.TRAIN["data"] = []
    np.save(tmp_path / "tok.npy", np.arange(40))  # below the vocabulary (50): windows count up
    windows = data.DataSource(str(tmp_path / "tok.npy"), 0).batch(0, 3)["ids"]
    assert (np.diff(windows, axis=1) == 1).all()


def test_every_transform_the_objectives_declare_exists():
    for where, name in PROGRAM_SPECS:
        comp = compile_spec(example(where, name), tiny=True)
        loss = build_loss(comp.ctx)
        inputs = {i.name for i in comp.model.inputs}
        batch_sources = {n for kind, n in loss.sources if kind == "batch"}
        for t in loss.data:
            assert t.kind in (data.OUTPUT_TRANSFORMS if t.reads else data.TRANSFORMS), t.kind
            assert set(t.inputs.values()) | set(t.carry) <= inputs, t
            assert set(t.outputs.values()) <= batch_sources, t
        assert batch_sources <= inputs | {n for t in loss.data for n in t.outputs.values()}


def test_diffusion_finds_its_timestep_in_the_graph_not_by_name():
    comp = compile_spec(example("tutorial", "step6_diffusion.yaml"), tiny=True)
    (noising,) = build_loss(comp.ctx).data
    assert noising.inputs == {"sample": "sample", "timestep": "timestep"}
    model = comp.model
    renamed = {"sample": "latents_in", "timestep": "t_float"}
    model = dataclasses.replace(model, inputs=[dataclasses.replace(i, name=renamed.get(i.name, i.name)) for i in model.inputs])
    (noising,) = OBJECTIVES["diffusion"](model, 0).data
    assert noising.inputs == {"sample": "latents_in", "timestep": "t_float"}


# ---------------------------------------------------------------- schedule


def test_learning_rate_schedules(monkeypatch):
    train = {"learning_rate": 1.0, "warmup": 4, "warmup_fraction": 0.1, "min_lr_ratio": 0.1, "schedule": "cosine"}
    monkeypatch.setattr(data, "TRAIN", train)
    assert [data.learning_rate(s, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert data.learning_rate(4, 20) == 1.0 and math.isclose(data.learning_rate(20, 20), 0.1)
    assert math.isclose(data.learning_rate(12, 20), 0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    train["schedule"] = "linear"
    assert math.isclose(data.learning_rate(12, 20), 0.5) and data.learning_rate(20, 20) == 0.0
    train["schedule"] = "constant"
    assert data.learning_rate(19, 20) == 1.0
    train["warmup"] = None  # 10% of 30 steps
    assert [data.learning_rate(s, 30) for s in range(3)] == [1 / 3, 2 / 3, 1.0]


# ---------------------------------------------------------------- torch


ADAMW = {"optimizer": "adamw", "learning_rate": 0.01, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1,
         "grad_clip": 1.0, "objective": "test"}


def test_torch_optimizer_decays_matrices_only(monkeypatch):
    monkeypatch.setattr(torch_train, "TRAIN", dict(ADAMW))
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = torch_train.make_optimizer(net)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [(4, 3)] and decayed["weight_decay"] == 0.1
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    torch_train.TRAIN["optimizer"] = "sgd"
    assert isinstance(torch_train.make_optimizer(net), torch.optim.SGD)


def test_torch_compute_loss_routes_outputs_and_batch(monkeypatch):
    monkeypatch.setattr(torch_train, "M", SimpleNamespace(INPUTS={"x": {}}))
    monkeypatch.setattr(torch_train, "LOSS_SOURCES", [["output", "y"], ["batch", "target"]])
    monkeypatch.setattr(torch_train, "LOSS", lambda y, target: {"loss": ((y - target) ** 2).sum()})
    batch = {"x": torch.tensor([1.0, 2.0]), "target": torch.tensor([0.0, 0.0])}
    assert torch_train.compute_loss(lambda x: {"y": 3 * x}, batch).item() == 45.0


def test_torch_checkpoint_round_trip(monkeypatch, tmp_path):
    monkeypatch.setattr(torch_train, "TRAIN", dict(ADAMW))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch_train.make_optimizer(net)
    net(torch.ones(2, 3)).sum().backward()
    opt.step()
    torch_train.save_checkpoint(str(tmp_path), net, opt, 7, 0)
    weights, optim, step = torch_train.load_checkpoint(str(tmp_path))
    assert step == 7
    assert set(weights) == set(net.state_dict())
    for k, v in net.state_dict().items():
        assert np.array_equal(weights[k], v.numpy()), k
    saved = {k: v["exp_avg"] for k, v in optim["state"].items()}
    assert set(saved) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert torch.equal(saved["0.weight"], opt.state[net[0].weight]["exp_avg"])


# ---------------------------------------------------------------- flax


def test_flax_adamw_matches_torch_step_for_step(monkeypatch):
    """The optax chain is torch's AdamW with clipping: three steps on the same
    gradients give the same parameters."""
    import jax.numpy as jnp
    import optax

    monkeypatch.setattr(flax_train, "TRAIN", dict(ADAMW))
    monkeypatch.setattr(torch_train, "TRAIN", dict(ADAMW))
    rng = np.random.default_rng(0)
    w0, b0 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    grads = [(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)) for _ in range(3)]
    net = torch.nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(w0))
        net.bias.copy_(torch.from_numpy(b0))
    opt = torch_train.make_optimizer(net)
    params = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}
    tx = flax_train.make_optimizer()
    state = tx.init(params)
    for lr, (gw, gb) in zip((0.01, 0.02, 0.005), grads):
        net.weight.grad, net.bias.grad = torch.from_numpy(gw * 3), torch.from_numpy(gb * 3)
        torch.nn.utils.clip_grad_norm_(net.parameters(), ADAMW["grad_clip"])
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        updates, state = tx.update({"w": jnp.asarray(gw * 3), "b": jnp.asarray(gb * 3)}, state, params)
        params = optax.apply_updates(params, {k: -lr * u for k, u in updates.items()})
    assert np.allclose(params["w"], net.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert np.allclose(params["b"], net.bias.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_flax_checkpoint_round_trip(monkeypatch, tmp_path):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from safetensors.numpy import load_file

    monkeypatch.setattr(flax_train, "TRAIN", dict(ADAMW))
    monkeypatch.setattr(flax_train, "M", SimpleNamespace(
        to_canonical=lambda m: {"weight": np.asarray(m.kernel[...]).T, "bias": np.asarray(m.bias[...])}))
    graphdef, params, rest = flax_train.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    tx = flax_train.make_optimizer()
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    flax_train.save_checkpoint(str(tmp_path), graphdef, params, rest, state, 5)
    weights, restored, step = flax_train.load_checkpoint(str(tmp_path), tx.init(params))
    assert step == 5
    assert np.array_equal(weights["weight"], np.asarray(params["kernel"][...]).T)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert set(load_file(str(tmp_path / "model.safetensors"))) == {"weight", "bias"}
