"""Families beyond media (issue 16): tabular, time series, graphs, reinforcement
learning. Per family: the structure it builds, its diagnostics, and its objective in
both training programs (torch and flax agree on loss and gradients, and the loss
falls on the synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import example, load_module

from metagen.diagnostics import DiagnosticSink  # noqa: F401
from metagen.pipeline import compile_spec
from metagen.synth import synth_files


SLOW = pytest.mark.slow  # jit-compiling a transformer's gradient in flax takes ~10 s


def close(a, b) -> bool:
    """CONTRACT §5: |a - b| <= 1e-5 + 1e-4 |b|."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_spec(tmp_path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def programs(tmp_path, spec: str, defines: dict | None = None):
    comp = compile_spec(spec, tiny=True, overrides=defines or [])
    for rel, data in synth_files(comp, 0).items():
        if rel.startswith("code/"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return load_module(str(tmp_path / "code/torch/train.py")), load_module(str(tmp_path / "code/flax/train.py"))


def agree_and_learn(
    tmp_path, spec: str, steps: int = 60, lr: float = 3e-3, factor: float = 0.5, defines=None, flax: bool = True
):
    """Torch and flax agree on the loss and every gradient of the first batch (in
    train mode, so the spec must not drop out); the torch loss on a fixed synthetic
    batch falls below `factor` x its first value within `steps` Adam steps.
    `flax=False` skips the agreement (jit-compiling a transformer's gradient takes
    ~10 s; those cases have a slow twin that checks it)."""
    torch_train, flax_train = programs(tmp_path, spec, defines)
    batch = torch_train.DataSource(None, 0).batch(0, 8)
    model = torch_train.M.init(0).train()
    if flax:
        loss_t = torch_train.compute_loss(model, torch_train.to_tensors(batch, "cpu"))
        loss_t.backward()
        loss_f, grads_f = flax_train.loss_and_grads(flax_train.M.init(0), batch)
        assert close(loss_f, loss_t.item()), (loss_f, loss_t.item())
        for n, p in model.named_parameters():
            assert close(grads_f[n], p.grad.numpy()), n
    bt = torch_train.to_tensors(batch, "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = loss = None
    for _ in range(steps):
        loss = torch_train.compute_loss(model, bt)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < factor * first, (first, loss.item())
    return torch_train, flax_train


# ---------------------------------------------------------------- tabular

TABULAR = """\
metagen_version: "1.0"
name: "tab"
modality:
  inputs: ["tabular"]
  outputs: ["{out}"]
task:
  num_features: 6
  categorical_features: ["city:7", "zone:3"]
architecture:
  family: {family}
training:
  objective: ["{objective}"]
{extra}"""


def tabular(tmp_path, out="regression", family="mlp", objective="regression", extra="") -> str:
    text = TABULAR.format(out=out, family=family, objective=objective, extra=extra)
    return write_spec(tmp_path, text, f"tab_{family}_{objective}.yaml")


def test_tabular_mlp_structure():
    comp = compile_spec(example("tabular", "house_prices.yaml"))
    m = comp.model
    assert [i.name for i in m.inputs] == ["features", "city", "zone"]
    assert m.inputs[1].type.shape == ("batch",) and m.inputs[1].high == 40
    assert m.top_module.output_names == ["prediction"]
    # Embedding widths: fast.ai's min(50, (c + 1) // 2): 20 for city, 3 for zone.
    assert m.modules["InputBlock"].children["linear"].attr_dict()["in_features"] == 12 + 20 + 3
    ops_used = {n.op for md in m.modules.values() for n in md.nodes if n.kind == "op"}
    assert {"relu", "dropout", "concat"} <= ops_used
    assert comp.ctx.arch["variant"] == "mlp"


def test_tabular_ft_transformer_tokens():
    comp = compile_spec(example("tabular", "churn_ft_transformer.yaml"), tiny=True)
    m = comp.model
    top = m.top_module
    assert top.output_names == ["logits"]
    params = dict(top.params)
    assert params["num_weight"].type.shape == (4, 32) and params["num_bias"].type.shape == (4, 32)
    assert "cls_token" in params and comp.ctx.arch["variant"] == "ft_transformer"


def test_auto_picks_the_ft_transformer_for_larger_budgets(tmp_path):
    small = compile_spec(tabular(tmp_path, family="auto"), overrides=[("constraints.parameter_budget.max", "1M")])
    assert small.ctx.arch["variant"] == "mlp"
    big = compile_spec(tabular(tmp_path, family="auto"), overrides=[("constraints.parameter_budget.max", "20M")])
    assert big.ctx.arch["variant"] == "ft_transformer"


@pytest.mark.parametrize("bad,message", [
    ('categorical_features: ["city"]', "is not 'name:cardinality'"),
    ('categorical_features: ["features:4"]', "column name 'features' is taken"),
])
def test_tabular_bad_columns_are_located_errors(tmp_path, bad, message):
    text = TABULAR.format(out="regression", family="mlp", objective="regression", extra="").replace(
        'categorical_features: ["city:7", "zone:3"]', bad
    )
    spec = write_spec(tmp_path, text)
    from metagen.diagnostics import CompileError

    with pytest.raises(CompileError) as err:
        compile_spec(spec)
    assert message in str(err.value) and "spec.yaml:8:25: error:" in str(err.value)


@pytest.mark.parametrize("family,objective,out,extra,flax", [
    ("mlp", "regression", "regression", "  config:\n    loss: huber\n", True),
    ("transformer", "classification", "label", "", False),
    pytest.param("transformer", "classification", "label", "", True, marks=SLOW),
])
def test_tabular_objectives_agree_and_learn(tmp_path, family, objective, out, extra, flax):
    spec = tabular(tmp_path, out=out, family=family, objective=objective, extra=extra)
    torch_train, _ = agree_and_learn(tmp_path, spec, defines=[("architecture.dropout", "0.0")], flax=flax)
    if objective == "regression":
        assert [tuple(s) for s in torch_train.LOSS_SOURCES] == [("output", "prediction"), ("batch", "targets")]


# ---------------------------------------------------------------- time series


def test_patchtst_matches_transformers(tmp_path):
    """At PatchTSTForPrediction(PatchTSTConfig(num_input_channels=1, context_length=90,
    prediction_length=30, patch_length=16, patch_stride=8)): the same parameter count,
    and the same forecast on mapped weights, BatchNorm running statistics included."""
    transformers = pytest.importorskip("transformers")
    from conftest import compile_to
    from metagen.hf import patchtst_to_canonical

    path, comp = compile_to(tmp_path, example("reference", "patchtst.yaml"), "torch", tiny=False)
    mod = load_module(str(path))
    assert comp.model.param_count() == 602_142
    torch.manual_seed(0)
    hf = transformers.PatchTSTForPrediction(
        transformers.PatchTSTConfig(
            num_input_channels=1, context_length=90, prediction_length=30, patch_length=16, patch_stride=8
        )
    ).eval()
    assert sum(p.numel() for p in hf.parameters()) == 602_142
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, buf in hf.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.3)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    ours = mod.load_canonical(patchtst_to_canonical(hf.state_dict()))
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(3, 90, 1)).astype(np.float32)
    with torch.no_grad():
        ref = hf(past_values=torch.from_numpy(x)).prediction_outputs.numpy()
    got = mod.run(ours, {"past_values": x})["prediction"]
    assert got.shape == ref.shape == (3, 30, 1)
    assert close(got, ref), np.abs(got - ref).max()


def test_patchtst_channels_are_independent():
    """Channel independence: each channel's forecast depends on that channel only."""
    comp = compile_spec(example("timeseries", "load_forecaster.yaml"), tiny=True)
    from metagen.backends.numpy_backend import lower_to_numpy
    import types

    mod = types.ModuleType("ts_np")
    exec(compile(lower_to_numpy(comp.model), "ts_np", "exec"), mod.__dict__)
    state = mod.init(0)
    x = mod.example_inputs(batch_size=2)["past_values"]
    y = mod.run(state, {"past_values": x})["prediction"]
    x2 = x.copy()
    x2[:, :, 1] = x2[:, :, 1] * 3.0 + 1.0
    y2 = mod.run(state, {"past_values": x2})["prediction"]
    assert np.allclose(y[:, :, 0], y2[:, :, 0]) and np.allclose(y[:, :, 2], y2[:, :, 2])
    # Instance normalization: an affine change of a channel moves its forecast the same way.
    assert np.allclose(y2[:, :, 1], y[:, :, 1] * 3.0 + 1.0, atol=1e-6)


def test_anomaly_score_is_the_reconstruction_error():
    comp = compile_spec(example("timeseries", "sensor_anomaly.yaml"), tiny=True)
    from metagen.backends.numpy_backend import lower_to_numpy
    import types

    mod = types.ModuleType("ae_np")
    exec(compile(lower_to_numpy(comp.model), "ae_np", "exec"), mod.__dict__)
    x = mod.example_inputs(batch_size=3)
    out = mod.run(mod.init(0), x)
    err = ((x["values"] - out["reconstruction"]) ** 2).mean(axis=(1, 2))
    assert out["anomaly_score"].shape == (3,) and np.allclose(out["anomaly_score"], err)


@pytest.mark.parametrize("where,name,steps,lr,flax", [
    ("timeseries", "load_forecaster.yaml", 40, 3e-3, False),
    pytest.param("timeseries", "load_forecaster.yaml", 40, 3e-3, True, marks=SLOW),
    ("timeseries", "sensor_anomaly.yaml", 100, 1e-2, True),
])
def test_time_series_objectives_agree_and_learn(tmp_path, where, name, steps, lr, flax):
    torch_train, _ = agree_and_learn(tmp_path, example(where, name), steps=steps, lr=lr, flax=flax)
    batch = torch_train.DataSource(None, 0).batch(0, 2)
    if name.startswith("load"):
        assert batch["future_values"].shape == (2, 8, 3)


# ---------------------------------------------------------------- reinforcement learning


def test_dqn_nature_cnn_count():
    comp = compile_spec(example("reference", "dqn_atari.yaml"))
    assert comp.model.param_count() == 1_693_362  # Mnih et al. 2015 with 18 actions
    m = comp.model
    assert m.inputs[0].type.shape == ("batch", 4, 84, 84)
    assert m.top_module.output_names == ["q_values"]
    convs = [(c.attr_dict()["out_channels"], c.attr_dict()["kernel"], c.attr_dict()["stride"])
             for c in m.modules["Trunk"].children.values() if c.op == "conv2d"]
    assert convs == [(32, 8, 4), (64, 4, 2), (64, 3, 1)]


def rl_programs(tmp_path, spec):
    torch_train, flax_train = programs(tmp_path, spec)
    model = torch_train.M.init(0).train()
    torch_train.refresh_runners(model, 0)
    batch = torch_train.DataSource(None, 0).batch(0, 16)
    loss_t = torch_train.compute_loss(model, torch_train.to_tensors(batch, "cpu"))
    loss_t.backward()
    loss_f, grads_f = flax_train.loss_and_grads(flax_train.M.init(0), batch)
    assert close(loss_f, loss_t.item()), (loss_f, loss_t.item())
    for n, p in model.named_parameters():
        assert close(grads_f[n], p.grad.numpy()), n
    return torch_train, flax_train


@pytest.mark.parametrize("where,name", [
    ("rl", "dqn_vector.yaml"),
    pytest.param("reference", "dqn_atari.yaml", marks=SLOW),
])
def test_dqn_learns_the_corridor(tmp_path, where, name):
    """The TD loss falls and the greedy policy learns to walk right in every state."""
    from safetensors.numpy import load_file

    torch_train, _ = rl_programs(tmp_path, example(where, name))
    history = torch_train.train(["--synthetic", "--steps", "600", "--batch-size", "32", "--log-every", "50",
                                 "--learning-rate", "2e-3", "--checkpoint-dir", str(tmp_path / "ck")])
    losses = [v for _, v in history]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[1:4]), losses
    model = torch_train.M.load_canonical(load_file(str(tmp_path / "ck/model.safetensors")))
    shape = torch_train.M.INPUTS["observation"]["shape"][1:]
    obs = torch_train._observe(np.arange(torch_train.CORRIDOR - 1), shape, 0)
    with torch.no_grad():
        q = model(observation=torch.from_numpy(obs))["q_values"].numpy()
    assert (q.argmax(axis=-1) == 1).all(), q


@pytest.mark.parametrize("name", ["ppo_discrete.yaml", "ppo_continuous.yaml"])
def test_ppo_agrees_and_earns_more(tmp_path, name, capsys):
    """The policy earns more on the contextual bandit: the mean reward the program
    logs over its last 50 steps beats its first 50."""
    torch_train, _ = rl_programs(tmp_path, example("rl", name))
    capsys.readouterr()
    torch_train.train(["--synthetic", "--steps", "200", "--batch-size", "64", "--log-every", "1",
                       "--checkpoint-dir", str(tmp_path / "ck")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    rewards = [float(line.split(" reward ")[1]) for line in lines]
    assert len(rewards) == 200
    first, last = np.mean(rewards[:50]), np.mean(rewards[-50:])
    assert last > first + 0.1 * abs(first) + 0.05, (first, last)


# ---------------------------------------------------------------- graphs

GRAPH = """\
metagen_version: "1.0"
name: "g"
modality:
  inputs: ["graph"]
  outputs: ["label"]
task:
  type: {task}
  num_classes: 3
  node_features: 5
{edge}architecture:
  message_passing: {mp}
training:
  objective: ["classification"]
"""


def graph_spec(tmp_path, mp, task="node_classification", edge=""):
    return write_spec(tmp_path, GRAPH.format(mp=mp, task=task, edge=edge), f"g_{mp}_{task}.yaml")


def numpy_module(spec: str):
    import types

    from metagen.backends.numpy_backend import lower_to_numpy

    comp = compile_spec(spec, tiny=True)
    mod = types.ModuleType("g_np")
    exec(compile(lower_to_numpy(comp.model), "g_np", "exec"), mod.__dict__)
    return mod


def random_graph(rng, nodes=7, edges=15, features=5, edge_features=0):
    src = rng.integers(0, nodes, size=edges)
    dst = rng.integers(0, nodes, size=edges)
    dst[0] = src[0]  # a self edge; node `nodes - 1` may have no incoming edge at all
    g = {"node_features": rng.standard_normal((nodes, features)), "edge_index": np.stack([src, dst]).astype(np.int64)}
    if edge_features:
        g["edge_features"] = rng.standard_normal((edges, edge_features))
    return g


def dense_layer(mp, w, h, src, dst, pre, ea=None):
    """One message-passing layer from a dense adjacency, written from the papers'
    formulas, independently of the compiler's ops. A[i, j] counts edges j -> i."""
    n = h.shape[0]
    adj = np.zeros((n, n))
    np.add.at(adj, (dst, src), 1.0)
    if mp == "gin":
        z = h + adj @ h
        z = np.maximum(z @ w[pre + "mlp_in.weight"].T + w[pre + "mlp_in.bias"], 0.0)
        return z @ w[pre + "mlp_out.weight"].T + w[pre + "mlp_out.bias"]
    if mp == "gcn":
        a_hat = adj + np.eye(n)
        deg = adj.sum(axis=1) + 1.0  # in-degree plus the self-loop
        norm = a_hat / np.sqrt(deg[:, None] * deg[None, :])
        return norm @ (h @ w[pre + "lin.weight"].T) + w[pre + "bias"]
    heads, c = w[pre + "att_src"].shape
    hw = (h @ w[pre + "lin.weight"].T).reshape(n, heads, c)
    out = np.zeros((n, heads, c))
    for head in range(heads):
        s_src = hw[:, head] @ w[pre + "att_src"][head]
        s_dst = hw[:, head] @ w[pre + "att_dst"][head]
        for i in range(n):
            incoming = np.flatnonzero(dst == i)
            if not len(incoming):
                continue
            e = s_src[src[incoming]] + s_dst[i]
            if ea is not None:
                he = (ea[incoming] @ w[pre + "lin_edge.weight"].T).reshape(len(incoming), heads, c)
                e = e + he[:, head] @ w[pre + "att_edge"][head]
            e = np.where(e >= 0, e, 0.2 * e)
            alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
            out[i, head] = alpha @ hw[src[incoming], head]
    return out.reshape(n, heads * c) + w[pre + "bias"]


@pytest.mark.parametrize("mp,edge", [("gcn", ""), ("gin", ""), ("gat", ""), ("gat", "  edge_features: 3\n")])
def test_message_passing_matches_a_dense_adjacency(tmp_path, mp, edge):
    mod = numpy_module(graph_spec(tmp_path, mp, edge=edge))
    state = mod.init(0)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in mod.to_canonical(state).items()}
    rng = np.random.default_rng(3)
    g = random_graph(rng, edge_features=3 if edge else 0)
    got = mod.run(state, {k: v.astype(mod.INPUTS[k]["dtype"]) for k, v in g.items()})["logits"]
    src, dst = g["edge_index"]
    h = g["node_features"] @ w["input_proj.weight"].T + w["input_proj.bias"]
    layers = mod.CONFIG["layers"]
    for i in range(layers):
        h = dense_layer(mp, w, h, src, dst, f"layers{i}.", g.get("edge_features"))
        h = np.maximum(h, 0.0) if i + 1 < layers else h  # no activation after the last layer for node tasks
    want = h @ w["head.weight"].T + w["head.bias"]
    assert got.shape == (7, 3)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6), np.abs(got - want).max()


def test_graph_readout_pools_each_graph_and_any_size_runs(tmp_path):
    """Graph classification over two graphs of different sizes: each graph's logits
    depend on its own nodes only, and one spec runs at any node and edge count."""
    mod = numpy_module(graph_spec(tmp_path, "gat", task="graph_classification"))
    state = mod.init(0)
    rng = np.random.default_rng(0)
    a, b = random_graph(rng, nodes=4, edges=6), random_graph(rng, nodes=9, edges=20)
    both = {
        "node_features": np.concatenate([a["node_features"], b["node_features"]]).astype(np.float32),
        "edge_index": np.concatenate([a["edge_index"], b["edge_index"] + 4], axis=1),
        "batch": np.array([0] * 4 + [1] * 9, dtype=np.int64),
        "num_nodes": np.array([4, 9], dtype=np.int64),
    }
    joint = mod.run(state, both)["logits"]
    alone = mod.run(state, {"node_features": a["node_features"].astype(np.float32), "edge_index": a["edge_index"],
                            "batch": np.zeros(4, dtype=np.int64), "num_nodes": np.array([4])})["logits"]
    assert joint.shape == (2, 3) and np.allclose(joint[0], alone[0], atol=1e-6)


@pytest.mark.parametrize("where,name", [
    ("graph", "molecule_gat.yaml"), ("graph", "citation_gcn.yaml"), ("graph", "link_gin.yaml"),
    ("graph", "solubility_gin.yaml"), ("graph", "node_regression.yaml"),
])
def test_graph_objectives_agree_and_learn(tmp_path, where, name):
    torch_train, _ = agree_and_learn(tmp_path, example(where, name), steps=80, lr=1e-2)
    batch = torch_train.DataSource(None, 0).batch(0, 4)
    assert batch["edge_index"].shape[0] == 2 and batch["node_features"].shape[0] == 32


def test_graph_to_graph_outputs_per_node_and_agrees_three_ways(tmp_path):
    """graph -> graph: `node_outputs` [nodes, num_outputs] from the last layer's node
    rows through the linear head (the dense-adjacency GCN written in the test), and
    every backend agrees with the numpy reference at --tiny."""
    import io

    from metagen.verify import verify_spec

    spec = example("graph", "node_regression.yaml")
    mod = numpy_module(spec)
    assert mod.CONFIG["task"] == "node_regression" and mod.OUTPUTS == ["node_outputs"]
    state = mod.init(0)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in mod.to_canonical(state).items()}
    g = random_graph(np.random.default_rng(5), nodes=9, edges=20, features=mod.CONFIG["node_features"])
    got = mod.run(state, {k: v.astype(mod.INPUTS[k]["dtype"]) for k, v in g.items()})["node_outputs"]
    src, dst = g["edge_index"]
    h = g["node_features"] @ w["input_proj.weight"].T + w["input_proj.bias"]
    for i in range(mod.CONFIG["layers"]):
        h = dense_layer("gcn", w, h, src, dst, f"layers{i}.")
        h = np.maximum(h, 0.0) if i + 1 < mod.CONFIG["layers"] else h
    want = h @ w["head.weight"].T + w["head.bias"]
    assert got.shape == (9, 3) and np.allclose(got, want, rtol=1e-4, atol=1e-6), np.abs(got - want).max()
    buf = io.StringIO()
    assert verify_spec(compile_spec(spec, tiny=True), seed=0, stream=buf), buf.getvalue()


@pytest.mark.parametrize("program", ["torch", pytest.param("flax", marks=SLOW)])
def test_graph_to_graph_train_program_learns_on_fresh_batches(tmp_path, capsys, program):
    """The program's own training loop (`train.py --synthetic`: a new batch of graphs
    every step, the whole batch in one process) lowers the node-regression loss.
    (flax jit-compiles its step: slow; its loss and gradients agree with torch's in
    test_graph_objectives_agree_and_learn.)"""
    torch_train, flax_train = programs(tmp_path, example("graph", "node_regression.yaml"))
    prog = torch_train if program == "torch" else flax_train
    capsys.readouterr()
    prog.train(["--synthetic", "--steps", "40", "--batch-size", "8", "--learning-rate", "1e-2",
                "--log-every", "1", "--checkpoint-dir", str(tmp_path / "ck")])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    losses = [float(line.split(" loss ")[1].split()[0]) for line in lines]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.4 * np.mean(losses[:5]), (losses[:5], losses[-10:])
