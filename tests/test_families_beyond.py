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


def agree_and_learn(tmp_path, spec: str, steps: int = 60, lr: float = 3e-3, factor: float = 0.5, defines=None):
    """Torch and flax agree on the loss and every gradient of the first batch (in
    train mode, so the spec must not drop out); the torch loss on a fixed synthetic
    batch falls below `factor` x its first value within `steps` Adam steps."""
    torch_train, flax_train = programs(tmp_path, spec, defines)
    batch = torch_train.DataSource(None, 0).batch(0, 8)
    model = torch_train.M.init(0).train()
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


@pytest.mark.parametrize("family,objective,out,extra", [
    ("mlp", "regression", "regression", "  config:\n    loss: huber\n"),
    ("transformer", "classification", "label", ""),
])
def test_tabular_objectives_agree_and_learn(tmp_path, family, objective, out, extra):
    spec = tabular(tmp_path, out=out, family=family, objective=objective, extra=extra)
    torch_train, _ = agree_and_learn(tmp_path, spec, defines=[("architecture.dropout", "0.0")])
    if objective == "regression":
        assert [tuple(s) for s in torch_train.LOSS_SOURCES] == [("output", "prediction"), ("batch", "targets")]
