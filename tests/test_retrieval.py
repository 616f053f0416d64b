"""Ranking, embeddings, retrieval and recommendation (issue 16 item 5): the sentence
embedder, the cross-encoder ranker, CLIP for retrieval and the two-tower
recommender. Each: selected from its spec, three backends equal to the reference at
--tiny, its loss graph the same in both training programs, and a loss that falls
on the synthetic data; plus each loss checked against a direct numpy computation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from conftest import example, load_module
from metagen.pipeline import compile_spec
from metagen.synth import synth_files
from metagen.verify import verify_spec

EXAMPLES = {
    "sentence_embedder": ("faq_embedder.yaml", "contrastive"),
    "cross_encoder": ("passage_reranker.yaml", "pairwise_ranking"),
    "clip": ("photo_search.yaml", "contrastive"),
    "two_tower": ("movie_recommender.yaml", "pairwise_ranking"),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (the CI machine has two cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _programs(tmp_path, spec, overrides=(), flax=True):
    comp = compile_spec(spec, tiny=True, overrides=list(overrides))
    for rel, data in synth_files(comp, 0).items():
        if rel.startswith("code/"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    ft = load_module(str(tmp_path / "code/flax/train.py")) if flax else None
    return comp, load_module(str(tmp_path / "code/torch/train.py")), ft


SLOW = pytest.mark.slow  # over 10 s on the 2-core CI machine (flax jit of the encoder's gradients, the CLIP towers)


@pytest.mark.parametrize("family", [pytest.param(f, marks=SLOW) if f == "clip" else f for f in sorted(EXAMPLES)])
def test_example_selects_its_family_and_verifies(family):
    spec = example("retrieval", EXAMPLES[family][0])
    comp = compile_spec(spec, tiny=True)
    assert comp.ctx.family == family
    buf = io.StringIO()
    assert verify_spec(comp, seed=0, stream=buf), buf.getvalue()


def test_full_size_examples_fit_their_budgets():
    for family, (name, _) in EXAMPLES.items():
        comp = compile_spec(example("retrieval", name))
        n = comp.model.param_count()
        budget = comp.spec.constraints.parameter_budget.max
        assert 0.9 * budget <= n <= budget, (family, n, budget)
    embedder = compile_spec(example("retrieval", "faq_embedder.yaml"))
    assert embedder.model.top_module.outputs[0].type.shape[-1] == 256  # task.embedding_dim
    clip = compile_spec(example("retrieval", "photo_search.yaml"))
    assert clip.ctx.arch["projection_dim"] == 256  # task.embedding_dim, for a retrieval CLIP


def _loss_falls_and_agrees(tmp_path, spec, overrides=(), batch_size=8):
    comp, tt, ft = _programs(tmp_path, spec, overrides)
    batch = tt.DataSource(None, 0).batch(0, batch_size)
    model = tt.M.init(0).train()
    loss_t = tt.compute_loss(model, tt.to_tensors(batch, "cpu"))
    loss_t.backward()
    loss_f, grads_f = ft.loss_and_grads(ft.M.init(0), batch)
    assert abs(loss_f - loss_t.item()) <= 1e-4 * (1 + abs(loss_t.item())), (loss_f, loss_t.item())
    for n, p in model.named_parameters():
        g = p.grad.numpy()
        assert np.abs(grads_f[n] - g).max() <= 1e-4 * (1 + np.abs(g).max()), n
    first = last = None
    for step in range(25):  # fresh synthetic batches: the pairing is learned, not one batch memorized
        b = tt.to_tensors(tt.DataSource(None, 0).batch(step, 16), "cpu")
        if step == 0:
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        loss = tt.compute_loss(model, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 0.5 * first, (first, last)
    return comp, tt, batch


@pytest.mark.parametrize(
    "name, objective",
    [
        pytest.param("faq_embedder.yaml", "contrastive", marks=SLOW),
        pytest.param("passage_reranker.yaml", "pairwise_ranking", marks=SLOW),
        pytest.param("passage_reranker.yaml", "ranking", marks=SLOW),
        ("movie_recommender.yaml", "pairwise_ranking"),
        ("movie_recommender.yaml", "contrastive"),
    ],
)
def test_objective_agrees_across_programs_and_learns(tmp_path, name, objective):
    _loss_falls_and_agrees(tmp_path, example("retrieval", name), [("training.objective", f"[{objective}]")])


def _softmax_ce(logits, labels):
    logits = logits - logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def _loss_fn(tmp_path, name, objective):
    """The objective's loss graph, lowered by the reference (NumPy) backend."""
    from metagen.backends import registry
    from metagen.compiler.objectives import build_loss

    comp = compile_spec(example("retrieval", name), tiny=True, overrides=[("training.objective", f"[{objective}]")])
    loss = build_loss(comp.ctx)
    path = tmp_path / f"{objective}_{name}.py"
    path.write_bytes(registry.reference().lower(loss.loss, seed=0, data_name="loss.data")[""])
    mod = load_module(str(path))
    names = [i.name for i in loss.loss.inputs]
    return lambda *xs: float(mod.run(mod.init(0), dict(zip(names, xs)))["loss"])


def test_losses_match_direct_computations(tmp_path):
    """Each loss graph against numpy written here from the definitions."""
    rng = np.random.default_rng(0)
    # in-batch contrastive: rows 2i, 2i+1 pairs
    emb = rng.standard_normal((6, 32)).astype(np.float32)
    pair = np.array([0, 0, 1, 1, 2, 2], dtype=np.float32)
    got = _loss_fn(tmp_path, "faq_embedder.yaml", "contrastive")(emb, pair)
    n = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = 20.0 * n @ n.T
    np.fill_diagonal(sim, -np.inf)
    want = _softmax_ce(sim, np.arange(6) + np.array([1, -1] * 3)).mean()
    assert abs(got - want) < 1e-4, (got, want)
    # ranking: groups of 4, one relevant
    score = rng.standard_normal(8).astype(np.float32)
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=np.float32)
    relevant = np.array([0, 1, 0, 0, 0, 0, 0, 1], dtype=np.float32)
    for objective in ("ranking", "pairwise_ranking"):
        got = _loss_fn(tmp_path, "passage_reranker.yaml", objective)(score, group, relevant)
        if objective == "ranking":
            want = np.mean([_softmax_ce(score[g * 4 : g * 4 + 4][None], np.array([int(np.argmax(relevant[g * 4 : g * 4 + 4]))]))[0] for g in (0, 1)])
        else:
            terms = [
                np.log1p(np.exp(-(score[i] - score[j])))
                for i in range(8) for j in range(8)
                if relevant[i] and not relevant[j] and group[i] == group[j]
            ]
            want = np.mean(terms)
        assert abs(got - want) < 1e-4, (objective, got, want)
    # two-tower: sampled softmax and BPR over the batch's items
    u = rng.standard_normal((5, 16)).astype(np.float32)
    v = rng.standard_normal((5, 16)).astype(np.float32)
    s = (u * v).sum(axis=1).astype(np.float32)
    scores = u @ v.T
    got = _loss_fn(tmp_path, "movie_recommender.yaml", "contrastive")(u, v)
    assert abs(got - _softmax_ce(scores, np.arange(5)).mean()) < 1e-4
    got = _loss_fn(tmp_path, "movie_recommender.yaml", "pairwise_ranking")(u, v, s)
    want = np.mean([np.log1p(np.exp(-(s[i] - scores[i, j]))) for i in range(5) for j in range(5) if i != j])
    assert abs(got - want) < 1e-4, (got, want)


def test_odd_batch_is_refused_for_pairs(tmp_path):
    _, tt, _ = _programs(tmp_path, example("retrieval", "faq_embedder.yaml"))
    with pytest.raises(ValueError, match="even --batch-size"):
        tt.DataSource(None, 0).batch(0, 5)


@pytest.mark.parametrize(
    "name, objective",
    [("passage_reranker.yaml", "ranking"), ("faq_embedder.yaml", "contrastive")],
)
def test_data_file_batches_leave_the_mask_to_its_default(tmp_path, name, objective):
    """A data file without attention_mask (an optional input): the data steps neither
    read nor write it, and the batch holds only what the file and the steps give."""
    comp, tt, _ = _programs(tmp_path, example("retrieval", name), [("training.objective", f"[{objective}]")], flax=False)
    optional = [i.name for i in comp.model.inputs if i.optional]
    assert "attention_mask" in optional
    fed = [i for i in comp.model.inputs if not i.optional]
    synthetic = tt.DataSource(None, 0).batch(0, 8)  # the shapes and token ranges the model takes
    rng = np.random.default_rng(0)
    arrays = {}
    for i in fed:
        x = synthetic[i.name]
        rows = [8, 4] if objective == "ranking" else [8]
        arrays[i.name] = rng.integers(0, int(x.max()) + 1, size=rows + list(x.shape[1:])).astype(x.dtype)
        if objective != "ranking":
            arrays[i.name + "_positive"] = arrays[i.name][::-1].copy()
    if objective == "ranking":
        arrays["relevant"] = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=8)]
    np.savez(tmp_path / "data.npz", **arrays)
    batch = tt.DataSource(str(tmp_path / "data.npz"), 0).batch(0, 8)
    assert "attention_mask" not in batch
    loss = tt.compute_loss(tt.M.init(0), tt.to_tensors(batch, "cpu"))
    assert np.isfinite(loss.item())
