"""The data side of the generated training programs: numpy only, so the torch and the
flax program draw the same batches; the objective's data transforms; the
learning-rate schedule; the command line. Copied into every train.py.

What an objective does to a batch before its loss (noise a sample, hide tokens, draw
labels, pair inputs) is declared by the objective (compiler/objectives.py,
`DataTransform`) and written to TRAIN["data"]; each entry names a function of
TRANSFORMS below and the inputs and batch fields it works on. Nothing here looks at
an input's name to decide what it is.
"""

import argparse
import importlib.util
import math
import os
import sys
import zlib

import numpy as np

from metagen.backends.runtime.program import M, TRAIN


def _load_sibling(filename, tag):
    """The sibling model file, imported under a name unique to its path."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), filename)
    name = "_metagen_%s_%08x" % (tag, zlib.crc32(path.encode("utf-8")))
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _input_shape(name, batch_size):
    sizes = dict(M._EXAMPLE_SIZES, batch=batch_size)
    if TRAIN["seq_len"]:
        sizes["seq"] = TRAIN["seq_len"]
    return tuple(d if isinstance(d, int) else sizes[d] for d in M.INPUTS[name]["shape"])


def _input_kinds():
    return {spec["name"]: spec for spec in M._INPUT_KINDS}


def _synthetic_tokens(rng, shape, high):
    """Learnable token streams: each row counts up from a random start by a random
    stride (mod vocabulary), so next-token loss can fall well below log(vocab)."""
    start = rng.integers(0, high, size=shape[:-1] + (1,))
    stride = rng.integers(1, 4, size=shape[:-1] + (1,))
    return (start + stride * np.arange(shape[-1])) % high


def _alphas_cumprod(schedule):
    """Diffusion noise schedule (scaled_linear: betas = linspace(sqrt(b0), sqrt(b1))^2)."""
    betas = (
        np.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5, schedule["steps"])
        ** 2
    )
    return np.cumprod(1.0 - betas)


def _carry(out, names, keys, high):
    """Make the synthetic inputs `names` carry a per-row (or per-position) key, so a
    label or a pairing can be learned: the key becomes the first token of token
    inputs and a shift of float inputs."""
    kinds = _input_kinds()
    for name in names:
        spec = kinds[name]
        x = out[name]
        if keys.ndim == 1 and spec["kind"] == "tokens" and x.ndim > 1:
            x[(slice(None),) * (x.ndim - 1) + (0,)] = keys.reshape(
                (-1,) + (1,) * (x.ndim - 2)
            ) % int(spec["high"])
        elif spec["kind"] == "tokens" and x.shape == keys.shape:
            out[name] = (keys % int(spec["high"])).astype(x.dtype)
        elif spec["kind"] != "tokens" and x.shape[: keys.ndim] == keys.shape:
            shift = (keys / high).reshape(keys.shape + (1,) * (x.ndim - keys.ndim))
            out[name] = (x + shift).astype(x.dtype)


# Data transforms: fn(batch, rng, transform, batch_size, synthetic) rewrites the batch
# in place. `transform` is the objective's declaration (kind, inputs, outputs,
# carry, params); `synthetic` is False when the batch came from an .npz file.


def class_labels(batch, rng, transform, batch_size, synthetic):
    """Integer labels in [0, classes) of the declared shape, unless the data file
    has them; synthetic inputs carry the label."""
    name = transform["outputs"]["labels"]
    if name in batch:
        return
    classes = transform["params"]["classes"]
    shape = tuple(batch_size if d == "batch" else d for d in transform["params"]["shape"])
    labels = rng.integers(0, classes, size=shape)
    batch[name] = labels.astype(np.int64)
    if synthetic:
        _carry(batch, transform["carry"], labels, classes)


def mask_tokens(batch, rng, transform, batch_size, synthetic):
    """Masked-LM: hide `rate` of the tokens (at least one per row) behind `mask_id`;
    the labels are the original tokens and the mask marks the hidden positions."""
    labels, mask = transform["outputs"]["labels"], transform["outputs"]["mask"]
    if labels in batch:
        return
    source = transform["inputs"]["tokens"]
    tokens = batch[source]
    hide = rng.random(tokens.shape) < transform["params"]["rate"]
    rows = np.arange(tokens.shape[0])
    hide[rows, rng.integers(0, tokens.shape[-1], size=tokens.shape[0])] = True
    batch[labels] = tokens.astype(np.int64)
    batch[source] = np.where(hide, transform["params"]["mask_id"], tokens).astype(tokens.dtype)
    batch[mask] = hide.astype(np.float32)


def pair_keys(batch, rng, transform, batch_size, synthetic):
    """Contrastive: row i of every input belongs to row i of the others; synthetic
    inputs carry a shared per-row key so the pairing is learnable."""
    if synthetic:
        keys = transform["params"]["keys"]
        _carry(batch, transform["carry"], rng.integers(0, keys, size=batch_size), keys)


def pair_rows(batch, rng, transform, batch_size, synthetic):
    """In-batch contrastive: rows 2i and 2i+1 are a pair (an anchor and its
    positive); `pair` (a float field) is the pair's number i.
    Synthetic positives are their anchor with a quarter of the tokens redrawn (a
    float input: with noise added), so the pairing is learnable; from a data file,
    each input X comes with X_positive (the positive of the same row), and the first
    half of the drawn rows is laid out as (X, X_positive) pairs."""
    if batch_size % 2:
        raise ValueError("in-batch contrastive training pairs rows: use an even --batch-size")
    half = batch_size // 2
    kinds = _input_kinds()
    for name in transform["inputs"].values():
        x = batch[name]
        if synthetic:
            positive = x[0::2].copy()
            if kinds[name]["kind"] == "tokens":
                redraw = rng.random(positive.shape) < transform["params"]["redraw"]
                fresh = rng.integers(0, int(kinds[name]["high"]), size=positive.shape)
                positive = np.where(redraw, fresh, positive)
            else:
                positive = positive + 0.1 * rng.standard_normal(positive.shape)
        else:
            positive = batch.pop(name + "_positive", None)
            if positive is None:
                raise ValueError(
                    f"in-batch contrastive training needs '{name}_positive' next to '{name}' in the data file"
                )
        pairs = np.stack([x[:half] if not synthetic else x[0::2], positive[:half]], axis=1)
        batch[name] = pairs.reshape((batch_size,) + pairs.shape[2:]).astype(x.dtype)
    batch[transform["outputs"]["pair"]] = (np.arange(batch_size) // 2).astype(np.float32)


def rank_groups(batch, rng, transform, batch_size, synthetic):
    """Ranking: rows come in groups of `group` candidates of one query, one of them
    relevant; `group` (the group's number) and `relevant` (1 or 0) are float batch
    fields. Synthetic inputs carry relevance so that it can be learned; a data file
    gives each input X as [N, group, ...] and `relevant` [N, group], and the first
    batch / group drawn rows are laid out group by group."""
    k = transform["params"]["group"]
    if batch_size % k:
        raise ValueError(
            f"ranking training takes groups of {k} candidates: use a --batch-size divisible by {k}"
        )
    n = batch_size // k
    if synthetic:
        relevant = np.zeros((n, k), dtype=np.int64)
        relevant[np.arange(n), rng.integers(0, k, size=n)] = 1
        relevant = relevant.reshape(-1)
        _carry(batch, transform["carry"], relevant, 2)
    else:
        if "relevant" not in batch:
            raise ValueError("ranking training needs 'relevant' [N, group] in the data file")
        for name in list(transform["inputs"].values()) + ["relevant"]:
            x = batch[name][:n]
            batch[name] = x.reshape((batch_size,) + x.shape[2:])
        relevant = batch["relevant"]
    batch[transform["outputs"]["group"]] = (np.arange(batch_size) // k).astype(np.float32)
    batch[transform["outputs"]["relevant"]] = relevant.astype(np.float32)


def interactions(batch, rng, transform, batch_size, synthetic):
    """Recommendation: one (user, item) interaction per row. Synthetic users each
    prefer one item (item = (7 user + 3) mod items), so the pairing can be learned;
    a data file's rows are interactions already."""
    if synthetic:
        user, item = transform["inputs"]["user"], transform["inputs"]["item"]
        items = transform["params"]["items"]
        batch[item] = ((7 * batch[user].astype(np.int64) + 3) % items).astype(batch[item].dtype)


def diffusion_noise(batch, rng, transform, batch_size, synthetic):
    """DDPM forward process: t ~ U{0..steps-1}, noise ~ N(0, 1), the sample becomes
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, the timestep input t;
    the noise is the loss's target."""
    sample = transform["inputs"]["sample"]
    schedule = transform["params"]["schedule"]
    t = rng.integers(0, schedule["steps"], size=batch_size)
    noise = rng.standard_normal(batch[sample].shape).astype(np.float32)
    ab = _alphas_cumprod(schedule)[t].reshape((-1,) + (1,) * (noise.ndim - 1))
    x0 = batch[sample]
    batch[sample] = (np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise).astype(np.float32)
    timestep = transform["inputs"].get("timestep")
    if timestep is not None:
        batch[timestep] = t.astype(_input_kinds()[timestep]["dtype"])
    batch[transform["outputs"]["noise"]] = noise


def regression_targets(batch, rng, transform, batch_size, synthetic):
    """Float targets of the declared shape, unless the data file has them: a fixed
    smooth function of the inputs (tanh of a projection drawn once from the
    transform's seed; integer inputs enter as cos(1.3 id)), so they can be learned."""
    name = transform["outputs"]["targets"]
    if name in batch:
        return
    cols = []
    for inp in transform["params"]["inputs"]:
        x = np.asarray(batch[inp]).reshape(batch_size, -1).astype(np.float64)
        cols.append(np.cos(1.3 * x) if np.issubdtype(batch[inp].dtype, np.integer) else x)
    feats = np.concatenate(cols, axis=1)
    shape = tuple(batch_size if d == "batch" else d for d in transform["params"]["shape"])
    width = int(np.prod(shape[1:]))
    proj = np.random.default_rng(transform["params"]["seed"]).standard_normal(
        (feats.shape[1], width)
    )
    targets = np.tanh(feats @ proj / np.sqrt(feats.shape[1]))
    batch[name] = targets.reshape(shape).astype(np.float32)


def _sines(rng, rows, channels, length):
    """Smooth series [rows, length, channels]: a level, and two sines (the second at
    twice the frequency) of random amplitude, frequency and phase, plus a little noise."""
    t = np.arange(length)[None, :, None]
    level = rng.normal(0.0, 2.0, size=(rows, 1, channels))
    amp = rng.uniform(0.5, 2.0, size=(rows, 1, channels))
    freq = rng.uniform(1 / 32, 1 / 8, size=(rows, 1, channels))
    phase = rng.uniform(0.0, 2 * np.pi, size=(rows, 2, channels))
    wave = np.sin(2 * np.pi * freq * t + phase[:, :1]) + 0.5 * np.sin(
        4 * np.pi * freq * t + phase[:, 1:]
    )
    return level + amp * wave + 0.05 * rng.standard_normal((rows, length, channels))


def series_windows(batch, rng, transform, batch_size, synthetic):
    """Time series: the input window [batch, lookback, channels] and, for a
    forecast, the `horizon` steps after it; from a data file both are given."""
    past = transform["inputs"]["past"]
    future = transform["outputs"].get("future")
    if not synthetic:
        return
    rows, lookback, channels = batch[past].shape
    horizon = transform["params"]["horizon"]
    series = _sines(rng, rows, channels, lookback + horizon).astype(np.float32)
    batch[past] = series[:, :lookback]
    if future is not None:
        batch[future] = series[:, lookback:]


# Models the data side runs (reinforcement learning acts with the current policy and
# bootstraps from a target network): name -> fn(inputs) -> outputs, numpy in and
# out. The backend's training loop sets them before each batch (`runners_wanted`).
RUNNERS = {}
DRAWING = {"step": 0}  # the step whose batch DataSource is drawing


def runners_wanted():
    """(runner names the objective's transforms use, steps between target refreshes)."""
    names, every = set(), 0
    for transform in TRAIN["data"]:
        names.update(transform["params"].get("runners", []))
        every = max(every, transform["params"].get("target_every", 0))
    return names, every


def reward_note(batch):
    """' reward X' (the mean reward the batch's actions earned) when an objective
    acts with the current policy; the loss alone does not say whether it improves."""
    return " reward %.4f" % float(np.mean(batch["rewards"])) if "rewards" in batch else ""


CORRIDOR = 8  # states of the corridor MDP


def _observe(states, spec_shape, seed):
    """What the agent sees of corridor states: a fixed random vector per state
    (vector observations) or, for frames [C, S, S], a bright vertical band at the
    state's position in every frame."""
    if len(spec_shape) == 1:
        table = np.random.default_rng([seed, 7]).standard_normal((CORRIDOR, spec_shape[0]))
        return table[states].astype(np.float32)
    channels, side = spec_shape[0], spec_shape[-1]
    frames = np.zeros((len(states), channels, side, side), dtype=np.float32)
    width = max(1, side // CORRIDOR)
    for row, s in enumerate(states):
        frames[row, :, :, s * width : (s + 1) * width] = 1.0
    return frames


def corridor_transitions(batch, rng, transform, batch_size, synthetic):
    """DQN on the corridor MDP: states 0..7 in a row; action 0 steps left, 1 right,
    any other stays; reaching state 7 pays +1 and ends the episode, every other step
    pays -0.05. Transitions (s, a, r, s') are drawn uniformly over non-terminal states
    and actions, as from a replay buffer filled by a uniformly random policy; the TD
    target r + gamma (1 - done) max_a' Q_target(s', a') comes from the target network."""
    p = transform["params"]
    obs = transform["inputs"]["observation"]
    shape = batch[obs].shape[1:]
    if synthetic:
        states = rng.integers(0, CORRIDOR - 1, size=batch_size)
        actions = rng.integers(0, p["num_actions"], size=batch_size)
        nxt = np.clip(states + (actions == 1) - (actions == 0), 0, CORRIDOR - 1)
        done = (nxt == CORRIDOR - 1).astype(np.float32)
        rewards = np.where(done > 0, 1.0, -0.05).astype(np.float32)
        batch[obs] = _observe(states, shape, 0)
        next_obs = _observe(nxt, shape, 0)
    else:
        actions, rewards = batch["actions"], batch["rewards"].astype(np.float32)
        next_obs, done = batch["next_" + obs], batch["dones"].astype(np.float32)
    next_q = RUNNERS["target"]({obs: next_obs})[p["q"]]
    targets = rewards + p["gamma"] * (1.0 - done) * next_q.max(axis=-1)
    batch[transform["outputs"]["actions"]] = actions.astype(np.int64)
    batch[transform["outputs"]["td_targets"]] = targets.astype(np.float32)


_ROLLOUTS = {}  # (step // epochs) -> the rollout batch, reused for `epochs` steps


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def bandit_rollouts(batch, rng, transform, batch_size, synthetic):
    """PPO on a contextual bandit (a one-step MDP): the observation s ~ N(0, I); a
    discrete agent earns 1 for the action argmax(U s), 0 otherwise; a continuous one
    earns -mean((a - W s)^2), U and W fixed. Actions are sampled from the current
    policy (the `online` runner) and reused for `epochs` optimizer steps, so the
    probability ratio moves away from 1 and the clip acts. Advantages are the rewards
    minus the critic's value, normalized over the batch; returns are the rewards."""
    p = transform["params"]
    out = transform["outputs"]
    obs = transform["inputs"]["observation"]
    if not synthetic:
        return
    key = (batch_size, batch[obs].shape, DRAWING["step"] // p["epochs"])
    if key in _ROLLOUTS:
        batch.update(_ROLLOUTS[key])
        return
    x = batch[obs].astype(np.float32)
    width = x.reshape(batch_size, -1).shape[1]
    fixed = np.random.default_rng([p["seed"], 11])
    result = RUNNERS["online"]({obs: x})
    if p["space"] == "discrete":
        best = (
            x.reshape(batch_size, -1) @ fixed.standard_normal((width, p["num_actions"]))
        ).argmax(axis=-1)
        probs = _softmax(result["logits"].astype(np.float64))
        actions = (
            (rng.random((batch_size, 1)) > np.cumsum(probs, axis=-1))
            .sum(axis=-1)
            .clip(0, p["num_actions"] - 1)
        )
        logp = np.log(probs[np.arange(batch_size), actions] + 1e-12)
        rewards = (actions == best).astype(np.float64)
        actions = actions.astype(np.int64)
    else:
        target = (
            x.reshape(batch_size, -1)
            @ fixed.standard_normal((width, p["action_dim"]))
            / np.sqrt(width)
        )
        mean, log_std = result["mean"].astype(np.float64), result["log_std"].astype(np.float64)
        actions = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
        logp = -(0.5 * ((actions - mean) / np.exp(log_std)) ** 2 + log_std).sum(axis=-1)
        rewards = -((actions - target) ** 2).mean(axis=-1)
        actions = actions.astype(np.float32)
    adv = rewards - result["value"].astype(np.float64)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    fields = {
        obs: x,
        out["actions"]: actions,
        out["old_log_probs"]: logp.astype(np.float32),
        out["advantages"]: adv.astype(np.float32),
        out["returns"]: rewards.astype(np.float32),
        out["rewards"]: rewards.astype(np.float32),
    }
    _ROLLOUTS.clear()
    _ROLLOUTS[key] = fields
    batch.update(fields)


def graph_batches(batch, rng, transform, batch_size, synthetic):
    """Synthetic graph batches: `batch_size` graphs of 8 nodes, each node linked to 2
    others of its graph, both directions listed. Graph classification: a graph's
    class shifts its nodes' features; graph regression: the targets are tanh of a
    fixed projection of each graph's mean node features. Node regression (graph ->
    graph): nodes as for node classification, each node's targets tanh of a fixed
    projection of its features plus the mean of its in-neighbours' (x_i + mean_{j -> i}
    x_j), so one round of message passing carries them. Node classification: each node has a class
    that shifts its features, and its links go to nodes of the same class where
    there are some. Link prediction: nodes fall in 2 communities (features shifted
    by community, links within a community); the queries are half the edges
    (label 1) and half random pairs of different communities (label 0)."""
    if not synthetic:
        return
    p, r = transform["params"], transform["inputs"]
    k, task = p["nodes_per_graph"], p["task"]
    classes = 2 if p.get("regression") else p["classes"]
    n = batch_size * k
    width = batch[r["node_features"]].shape[-1]
    centers = np.random.default_rng([p["seed"], 13]).standard_normal((classes, width))
    graph_of = np.repeat(np.arange(batch_size), k)
    graph_labels = rng.integers(0, classes, size=batch_size)
    if task == "graph_classification":
        node_labels = graph_labels[graph_of]
    else:
        node_labels = rng.integers(0, 2 if task == "link_prediction" else classes, size=n)
    x = rng.standard_normal((n, width)) * 0.5 + centers[node_labels]
    src, dst = [], []
    for node in range(n):
        lo = graph_of[node] * k
        peers = [j for j in range(lo, lo + k) if j != node]
        same = [j for j in peers if node_labels[j] == node_labels[node]] or peers
        for j in rng.choice(same, size=2):
            src += [node, j]
            dst += [j, node]
    batch[r["node_features"]] = x.astype(np.float32)
    batch[r["edge_index"]] = np.array([src, dst], dtype=np.int64)
    if "edge_features" in r:
        batch[r["edge_features"]] = rng.standard_normal(
            (len(src), batch[r["edge_features"]].shape[-1])
        ).astype(np.float32)
    if task == "graph_classification":
        batch[r["batch"]] = graph_of.astype(np.int64)
        batch[r["num_nodes"]] = np.full(batch_size, k, dtype=np.int64)
        labels = graph_labels
        if p.get("regression"):  # a smooth function of each graph's mean features
            means = np.stack([x[graph_of == g].mean(axis=0) for g in range(batch_size)])
            proj = np.random.default_rng([p["seed"], 17]).standard_normal((width, p["classes"]))
            batch[transform["outputs"]["targets"]] = np.tanh(means @ proj / np.sqrt(width)).astype(
                np.float32
            )
            return
    elif task == "node_regression":  # x_i + the mean of its in-neighbours' features
        agg, deg = np.zeros_like(x), np.zeros(n)
        np.add.at(agg, dst, x[src])
        np.add.at(deg, dst, 1.0)
        z = x + agg / np.maximum(deg, 1.0)[:, None]
        proj = np.random.default_rng([p["seed"], 19]).standard_normal((width, p["classes"]))
        targets = np.tanh(z @ proj / np.sqrt(2 * width))
        batch[transform["outputs"]["targets"]] = targets.astype(np.float32)
        return
    elif task == "node_classification":
        labels = node_labels
    else:
        half = n // 2
        pick = rng.integers(0, len(src), size=half)
        pos = np.array([np.array(src)[pick], np.array(dst)[pick]])
        neg_u = rng.integers(0, n, size=n - half)
        neg_v = np.array([rng.choice(np.flatnonzero(node_labels != node_labels[u])) for u in neg_u])
        batch[r["pairs"]] = np.concatenate([pos, np.array([neg_u, neg_v])], axis=1).astype(np.int64)
        labels = np.concatenate([np.ones(half), np.zeros(n - half)])
    batch[transform["outputs"]["labels"]] = labels.astype(np.int64)


def segmentation_labels(batch, rng, transform, batch_size, synthetic):
    """A label map [batch, H, W] of integers in [0, classes), unless the data file has
    one. Synthetic maps are 4 x 4-pixel blocks of random classes, and every image
    carries its map: each pixel's channels shift by its class (nearest-upsampled to
    the image's side), so the segmentation can be learned."""
    name = transform["outputs"]["labels"]
    if name in batch:
        return
    classes = transform["params"]["classes"]
    _, h, w = transform["params"]["shape"]
    block = 4 if h % 4 == 0 and w % 4 == 0 else 1
    coarse = rng.integers(0, classes, size=(batch_size, h // block, w // block))
    labels = coarse.repeat(block, axis=1).repeat(block, axis=2)
    batch[name] = labels.astype(np.int64)
    if synthetic:
        for image in transform["carry"]:
            x = batch[image]
            f = x.shape[-1] // w
            shift = labels.repeat(f, axis=1).repeat(f, axis=2)[:, None] * (2.0 / classes)
            batch[image] = (x + shift).astype(x.dtype)


def detection_targets(batch, rng, transform, batch_size, synthetic):
    """Object targets per image, unless the data file has them: `boxes` [batch, T, 4]
    (cx, cy, w, h in [0, 1]), `classes` [batch, T] and `object_mask` [batch, T] (1 for
    a real object; T = max_objects, padding rows 0). Synthetic images carry their
    objects: each box's pixels shift by (class + 1) / classes on every channel. With a
    `mask_resolution` R (instance segmentation) also `masks` [batch, T, R, R], 1 on the
    pixels of each object: the data file's, or (synthetic, or a file without masks)
    the pixels whose centers lie inside its box."""
    if transform["outputs"]["boxes"] in batch:
        _box_masks(batch, transform)
        return
    classes, t = transform["params"]["classes"], transform["params"]["max_objects"]
    count = rng.integers(1, t + 1, size=batch_size)
    mask = (np.arange(t)[None, :] < count[:, None]).astype(np.float32)
    centers = rng.uniform(0.25, 0.75, size=(batch_size, t, 2))
    sizes = rng.uniform(0.2, 0.5, size=(batch_size, t, 2))
    boxes = np.concatenate([centers, sizes], axis=-1) * mask[..., None]
    labels = rng.integers(0, classes, size=(batch_size, t)) * mask.astype(np.int64)
    batch[transform["outputs"]["boxes"]] = boxes.astype(np.float32)
    batch[transform["outputs"]["classes"]] = labels.astype(np.int64)
    batch[transform["outputs"]["object_mask"]] = mask
    _box_masks(batch, transform)
    if synthetic:
        for image in transform["carry"]:
            x = batch[image]
            side_h, side_w = x.shape[-2], x.shape[-1]
            ys = (np.arange(side_h) + 0.5) / side_h
            xs = (np.arange(side_w) + 0.5) / side_w
            for b in range(batch_size):
                for j in range(int(count[b])):
                    cx, cy, w, h = boxes[b, j]
                    rows, cols = np.abs(ys - cy) <= h / 2, np.abs(xs - cx) <= w / 2
                    inside = rows[:, None] & cols[None, :]
                    x[b, :, inside] += (labels[b, j] + 1) / classes
            batch[image] = x


def _box_masks(batch, transform):
    """`masks` [batch, T, R, R] from the boxes (padding rows 0), unless present."""
    out, r = transform["outputs"], transform["params"].get("mask_resolution")
    if not r or out.get("masks", "masks") in batch:
        return
    boxes, mask = np.asarray(batch[out["boxes"]]), np.asarray(batch[out["object_mask"]])
    centers = (np.arange(r) + 0.5) / r
    lo = boxes[..., :2] - boxes[..., 2:] / 2  # [B, T, 2] as (x, y)
    hi = boxes[..., :2] + boxes[..., 2:] / 2
    cols = (centers >= lo[..., 0:1]) & (centers <= hi[..., 0:1])  # [B, T, R]
    rows = (centers >= lo[..., 1:2]) & (centers <= hi[..., 1:2])
    inside = rows[..., :, None] & cols[..., None, :] & (mask[..., None, None] > 0)
    batch[out["masks"]] = inside.astype(np.float32)


def dense_assign(batch, rng, transform, batch_size, synthetic):
    """The dense detector's targets (FCOS's rule): cell (i, j) of a grid x grid map,
    centered at ((j + 0.5) / grid, (i + 0.5) / grid), belongs to the smallest target
    box containing its center; it then gets the box's class, distances (l, t, r, b)
    from its center to the box's sides, FCOS's centerness sqrt(min(l, r) / max(l, r) *
    min(t, b) / max(t, b)) and a box weight of cells / assigned cells; the others are
    background (class `classes`, cross-entropy weight `background`)."""
    p, src, out = transform["params"], transform["inputs"], transform["outputs"]
    g, classes = p["grid"], p["classes"]
    boxes, labels, mask = (
        batch[src["boxes"]],
        batch[src["classes"]],
        np.asarray(batch[src["object_mask"]]) > 0,
    )
    centers = (np.arange(g) + 0.5) / g
    cy, cx = np.meshgrid(centers, centers, indexing="ij")
    cx, cy = cx.reshape(-1), cy.reshape(-1)
    n = g * g
    target_classes = np.full((batch_size, n), classes, dtype=np.int64)
    class_weight = np.full((batch_size, n), p["background"], dtype=np.float32)
    distances = np.zeros((batch_size, n, 4), dtype=np.float32)
    centerness = np.zeros((batch_size, n), dtype=np.float32)
    assigned = np.zeros((batch_size, n), dtype=bool)
    for b in range(batch_size):
        best = np.full(n, np.inf)
        for j in np.flatnonzero(mask[b]):
            x, y, w, h = boxes[b, j]
            ltrb = np.stack(
                [cx - (x - w / 2), cy - (y - h / 2), (x + w / 2) - cx, (y + h / 2) - cy], axis=-1
            )
            take = (ltrb.min(-1) > 0) & (w * h < best)
            best[take] = w * h
            target_classes[b, take] = labels[b, j]
            distances[b, take] = ltrb[take]
            lr, tb = ltrb[take][:, [0, 2]], ltrb[take][:, [1, 3]]
            centerness[b, take] = np.sqrt(lr.min(-1) / lr.max(-1) * tb.min(-1) / tb.max(-1))
            assigned[b, take] = True
    class_weight[assigned] = 1.0
    batch[out["target_classes"]] = target_classes
    batch[out["class_weight"]] = class_weight
    batch[out["target_distances"]] = distances
    batch[out["target_centerness"]] = centerness
    batch[out["box_weight"]] = (assigned * (batch_size * n / max(int(assigned.sum()), 1))).astype(
        np.float32
    )


def _assign(cost):
    """Minimum-cost assignment of every row to a distinct column (rows <= columns):
    the Hungarian algorithm with potentials (Kuhn-Munkres, O(n^2 m)); returns the
    column of each row."""
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: the row (1-based) holding column j; 0 free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    col = np.zeros(n, dtype=np.int64)
    for j in range(1, m + 1):
        if owner[j]:
            col[owner[j] - 1] = j - 1
    return col


def _giou_matrix(a, b):
    """Pairwise GIoU of boxes a [n, 4] and b [m, 4] (cx, cy, w, h) -> [n, m]."""
    alo, ahi = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    blo, bhi = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = np.prod(np.clip(np.minimum(ahi, bhi) - np.maximum(alo, blo), 0, None), axis=-1)
    union = np.prod(ahi - alo, axis=-1) + np.prod(bhi - blo, axis=-1) - inter
    enclosing = np.prod(np.maximum(ahi, bhi) - np.minimum(alo, blo), axis=-1)
    return inter / union - (enclosing - union) / enclosing


def hungarian_match(batch, outputs, transform):
    """DETR's matching, after the forward pass: per image, the cost of query q for
    target t is cost_bbox * L1(box_q, box_t) - cost_class * p_q(class_t) - cost_giou *
    GIoU(box_q, box_t); the minimum-cost assignment gives each target one query. Writes
    per-query targets: classes (the no-object class `classes` where unmatched) with
    their cross-entropy weights (1, or `no_object`), boxes (a dummy unit box where
    unmatched) and box weights (B * Q / number of targets where matched, else 0), so
    the loss's means are DETR's sums over matched boxes divided by that number."""
    p = transform["params"]
    logits_name, boxes_name = transform["reads"]
    logits = np.asarray(outputs[logits_name], dtype=np.float64)
    pred = np.asarray(outputs[boxes_name], dtype=np.float64)
    src = transform["inputs"]
    boxes, labels = batch[src["boxes"]], batch[src["classes"]]
    mask = np.asarray(batch[src["object_mask"]]) > 0
    b, q = logits.shape[:2]
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    target_classes = np.full((b, q), p["classes"], dtype=np.int64)
    class_weight = np.full((b, q), p["no_object"], dtype=np.float32)
    target_boxes = np.tile(np.array([0.5, 0.5, 1.0, 1.0], np.float32), (b, q, 1))
    matched = np.zeros((b, q), dtype=bool)
    masks = np.asarray(batch[src["masks"]]) if "masks" in src else None
    if masks is not None:  # instance segmentation: matched queries' target masks, else 0
        target_masks = np.zeros((b, q) + masks.shape[2:], np.float32)
    for i in range(b):
        tb, tl = np.asarray(boxes[i], np.float64)[mask[i]], np.asarray(labels[i])[mask[i]]
        if len(tl) == 0:
            continue
        cost = (
            p["cost_bbox"] * np.abs(tb[:, None, :] - pred[i][None, :, :]).sum(-1)
            - p["cost_class"] * prob[i][:, tl].T
            - p["cost_giou"] * _giou_matrix(tb, pred[i])
        )
        cols = _assign(cost)
        target_classes[i, cols] = tl
        class_weight[i, cols] = 1.0
        target_boxes[i, cols] = tb
        matched[i, cols] = True
        if masks is not None:
            target_masks[i, cols] = masks[i][mask[i]]
    num = max(int(mask.sum()), 1)
    out = transform["outputs"]
    batch[out["target_classes"]] = target_classes
    batch[out["class_weight"]] = class_weight
    batch[out["target_boxes"]] = target_boxes
    batch[out["box_weight"]] = (matched * (b * q / num)).astype(np.float32)
    if masks is not None:
        batch[out["target_masks"]] = target_masks


def after_forward(batch, outputs):
    """The steps that read the model's outputs (numpy arrays), run on a numpy batch
    between the forward pass and the loss; returns the fields they added."""
    before = set(batch)
    for transform in TRAIN["data"]:
        if transform.get("reads"):
            OUTPUT_TRANSFORMS[transform["kind"]](batch, outputs, transform)
    return {k: v for k, v in batch.items() if k not in before}


def reads_outputs():
    """Whether a step runs after the forward pass (then the programs match first)."""
    return any(t.get("reads") for t in TRAIN.get("data", ()))


OUTPUT_TRANSFORMS = {"hungarian_match": hungarian_match}

TRANSFORMS = {
    "class_labels": class_labels,
    "mask_tokens": mask_tokens,
    "pair_keys": pair_keys,
    "pair_rows": pair_rows,
    "rank_groups": rank_groups,
    "interactions": interactions,
    "diffusion_noise": diffusion_noise,
    "regression_targets": regression_targets,
    "series_windows": series_windows,
    "corridor_transitions": corridor_transitions,
    "bandit_rollouts": bandit_rollouts,
    "graph_batches": graph_batches,
    "segmentation_labels": segmentation_labels,
    "detection_targets": detection_targets,
    "dense_assign": dense_assign,
}


def _tokenize(path, tokenizer):
    """The UTF-8 text in `path` as the ids of `tokenizer` (a tokenizer.json), line by
    line with the line ends kept. A tokenizer with ids past a token input's range is
    refused: its ids would otherwise wrap around the vocabulary."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    size = tok.get_vocab_size(with_added_tokens=True)
    for spec in M._INPUT_KINDS:
        if spec["kind"] == "tokens" and size > int(spec["high"]):
            sys.exit(
                "error: %s has %d tokens; input '%s' takes ids below %d"
                % (tokenizer, size, spec["name"], int(spec["high"]))
            )
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    ids = [i for e in tok.encode_batch(lines, add_special_tokens=False) for i in e.ids]
    return np.asarray(ids, dtype=np.int64)


class DataSource:
    """Global batches as numpy arrays, a pure function of (seed, step): every rank
    and every backend draws the same batch and takes its own rows."""

    def __init__(self, path=None, seed=0, tokenizer=None):
        self.seed = seed
        self.tokens = None
        self.arrays = None
        if tokenizer is not None:
            self.tokens = _tokenize(path, tokenizer)
        elif path is not None:
            if path.endswith(".npy"):
                self.tokens = np.load(path).reshape(-1).astype(np.int64)
            elif path.endswith(".npz"):
                with np.load(path) as f:
                    self.arrays = {k: f[k] for k in f.files}
            else:
                with open(path, "rb") as f:
                    self.tokens = np.frombuffer(f.read(), dtype=np.uint8).astype(np.int64)

    def batch(self, step, batch_size):
        rng = np.random.default_rng([self.seed, 1000003, step])
        DRAWING["step"] = step
        out = {}
        if self.arrays is not None:
            n = len(next(iter(self.arrays.values())))
            rows = rng.integers(0, n, size=batch_size)
            out = {k: np.asarray(v[rows]) for k, v in self.arrays.items()}
        for spec in M._INPUT_KINDS:
            name = spec["name"]
            if name in out or spec.get("optional"):
                continue  # the model's default: no padding, no cache
            shape = _input_shape(name, batch_size)
            if spec["kind"] == "tokens" and self.tokens is not None:
                length = shape[-1]
                starts = rng.integers(0, len(self.tokens) - length, size=batch_size)
                x = np.stack([self.tokens[s : s + length] for s in starts]) % int(spec["high"])
            elif spec["kind"] == "tokens":
                x = _synthetic_tokens(rng, shape, int(spec["high"]))
            elif spec["kind"] == "uniform":
                x = rng.uniform(spec["low"], spec["high"], size=shape)
            else:
                x = rng.standard_normal(shape)
            out[name] = x.astype(spec["dtype"])
        for transform in TRAIN["data"]:
            if not transform.get("reads"):  # those run after the forward pass (after_forward)
                TRANSFORMS[transform["kind"]](out, rng, transform, batch_size, self.arrays is None)
        return out


def learning_rate(step, total_steps):
    """Linear warmup to the peak, then the spec's schedule down to min_lr_ratio x peak
    (cosine), to 0 (linear) or flat (constant)."""
    peak = TRAIN["learning_rate"]
    warmup = TRAIN["warmup"]
    if warmup is None:
        warmup = int(math.ceil(TRAIN["warmup_fraction"] * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    if TRAIN["schedule"] == "constant":
        return peak
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if TRAIN["schedule"] == "linear":
        return peak * (1.0 - progress)
    floor = peak * TRAIN["min_lr_ratio"]
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def parse_args(argv=None, backend="torch"):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="generated data, no download (default without --data)",
    )
    p.add_argument(
        "--data", help=".npy token array, .npz of named arrays, or any file read as bytes"
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer.json (metagen tokenizer train): --data is UTF-8 text, read as its tokens",
    )
    p.add_argument("--steps", type=int, default=TRAIN["steps"])
    p.add_argument("--batch-size", type=int, default=TRAIN["batch_size"], help="global batch size")
    p.add_argument(
        "--learning-rate", type=float, default=None, help="peak; default TRAIN['learning_rate']"
    )
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument(
        "--save-every", type=int, default=0, help="also save every N steps (0: only at the end)"
    )
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    p.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="stop (and save) after this step; the schedule still spans --steps",
    )
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=TRAIN["seed"])
    if backend == "flax":
        p.add_argument("--devices", type=int, default=0, help="devices in the data mesh (0: all)")
    args = p.parse_args(argv)
    if args.synthetic and args.data:
        p.error("--synthetic and --data exclude each other")
    if args.tokenizer and (not args.data or args.data.endswith((".npy", ".npz"))):
        p.error("--tokenizer reads a text --data file")
    if args.learning_rate is not None:
        TRAIN["learning_rate"] = args.learning_rate
    return args
