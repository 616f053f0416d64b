"""The JAX/Flax side of the generated training program: the optax optimizer
(composed to match torch's AdamW step for step), loss and gradients, the jitted step
on a data mesh, checkpoints, the training loop. Copied into the flax train.py after
the data runtime and the lowered loss class.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from metagen.backends.runtime.data import (
    RUNNERS,
    DataSource,
    after_forward,
    learning_rate,
    parse_args,
    reads_outputs,
    reward_note,
    runners_wanted,
)
from metagen.backends.runtime.program import LOSS, LOSS_SOURCES, TRAIN, M


def decay_mask(params):
    """Weight decay applies to matrices and kernels, not to norms and biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer():
    """Gradient transformation without the learning rate; the step multiplies by -lr
    so the schedule is the same Python function the torch program uses."""
    parts = [optax.clip_by_global_norm(TRAIN["grad_clip"])] if TRAIN["grad_clip"] else []
    if TRAIN["optimizer"] == "sgd":
        parts += [
            optax.add_decayed_weights(TRAIN["weight_decay"], decay_mask),
            optax.trace(decay=0.9),
        ]
    elif TRAIN["optimizer"] == "adafactor":
        parts += [
            optax.scale_by_factored_rms(),
            optax.add_decayed_weights(TRAIN["weight_decay"], decay_mask),
        ]
    else:
        b1, b2 = TRAIN["betas"]
        parts += [
            optax.scale_by_adam(b1=b1, b2=b2, eps=TRAIN["eps"]),
            optax.add_decayed_weights(TRAIN["weight_decay"], decay_mask),
        ]
    return optax.chain(*parts)


def split(model):
    """(graphdef, trained parameters, the rest). The model is put in training mode
    first, so batch norm uses batch statistics and updates its running ones (`rest`
    holds them, as `nnx.BatchStat`s)."""
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def compute_loss(graphdef, params, rest, batch):
    """(the objective's loss (lowered from the IR) on one batch of jax arrays, the
    non-parameter state after the forward: moved batch-norm statistics)."""
    # Fresh variables of this trace, so batch norm may update its statistics.
    model = nnx.merge(graphdef, params, rest, copy=True)
    out = model(**{name: batch[name] for name in M.INPUTS})
    args = [out[name] if kind == "output" else batch[name] for kind, name in LOSS_SOURCES]
    return LOSS(*args)["loss"], nnx.split(model, nnx.Param, ...)[2]


def _outputs(graphdef, params, rest, batch):
    model = nnx.merge(graphdef, params, rest, copy=True)
    return model(**{name: batch[name] for name in M.INPUTS})


_predict = jax.jit(_outputs, static_argnums=0)


def match(graphdef, params, rest, batch, host, sharding=None):
    """The batch with the fields of the data-side steps that read the model's outputs
    (DETR's matching), from a forward pass outside the gradient; `host` is the numpy
    batch. Unchanged when no step reads outputs."""
    if not reads_outputs():
        return batch
    out = _predict(graphdef, params, rest, batch)
    added = after_forward(dict(host), {k: np.asarray(v, dtype=np.float32) for k, v in out.items()})
    return dict(batch, **to_arrays(added, sharding))


def loss_and_grads(model, batch):
    """(loss, gradients as canonical name -> numpy array in PyTorch layout)."""
    graphdef, params, rest = split(model)
    arrays = match(graphdef, params, rest, to_arrays(batch), batch)
    grad_fn = jax.jit(jax.value_and_grad(compute_loss, argnums=1, has_aux=True), static_argnums=0)
    (loss, _), grads = grad_fn(graphdef, params, rest, arrays)
    return float(loss), M.to_canonical(nnx.merge(graphdef, grads, rest))


def to_arrays(batch, sharding=None):
    out = {}
    for k, v in batch.items():
        if v.dtype == np.int64 and not jax.config.read("jax_enable_x64"):
            v = v.astype(np.int32)
        out[k] = jnp.asarray(v) if sharding is None else jax.device_put(v, sharding)
    return out


def refresh_runners(graphdef, params, rest, step):
    """The models the data side runs (RL): the online weights, and a target network
    (the weights as they were) refreshed every `target_every` steps."""
    names, every = runners_wanted()
    if not names:
        return

    def runner(p):
        def run(inputs):
            out = nnx.merge(graphdef, p, rest)(**to_arrays(inputs))
            return {k: np.asarray(v) for k, v in out.items()}

        return run

    RUNNERS["online"] = runner(params)
    if "target" in names and (every == 0 or step % every == 0 or "target" not in RUNNERS):
        RUNNERS["target"] = runner(params)


def make_step(graphdef, tx):
    @jax.jit
    def step(params, rest, opt_state, batch, lr):
        grad_fn = jax.value_and_grad(compute_loss, argnums=1, has_aux=True)
        (loss, rest), grads = grad_fn(graphdef, params, rest, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: -lr * u, updates)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    return step


def save_checkpoint(directory, graphdef, params, rest, opt_state, step):
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    weights = M.to_canonical(nnx.merge(graphdef, params, rest))
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
        os.path.join(directory, "model.safetensors"),
    )
    leaves = jax.tree.leaves(opt_state)
    np.savez(os.path.join(directory, "optimizer_flax.npz"), *[np.asarray(x) for x in leaves])
    with open(os.path.join(directory, "trainer_state.json"), "w") as f:
        json.dump({"step": step, "objective": TRAIN["objective"]}, f)


def load_checkpoint(directory, opt_state):
    """Weights, optimizer state (the flax program's own, else a fresh one) and step."""
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "trainer_state.json")) as f:
        step = json.load(f)["step"]
    path = os.path.join(directory, "optimizer_flax.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            leaves = [jnp.asarray(f["arr_%d" % i]) for i in range(len(f.files))]
        opt_state = jax.tree.unflatten(jax.tree.structure(opt_state), leaves)
    return weights, opt_state, step


def train(argv=None):
    """Run training; returns the list of (step, loss) logged."""
    args = parse_args(argv, backend="flax")
    devices = jax.devices()[: args.devices] if args.devices else jax.devices()
    if args.batch_size % len(devices):
        devices = devices[:1]
    mesh = Mesh(np.array(devices), ("data",))
    data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    weights = M.init_arrays(args.seed)
    tx = make_optimizer()
    start = 0
    if args.resume:
        graphdef, params, rest = split(M.init(args.seed))
        weights, opt_state, start = load_checkpoint(args.checkpoint_dir, tx.init(params))
    graphdef, params, rest = split(M.load_canonical(weights))
    if not args.resume:
        opt_state = tx.init(params)
    params = jax.device_put(params, replicated)
    rest = jax.device_put(rest, replicated)
    opt_state = jax.device_put(opt_state, replicated)
    step_fn = make_step(graphdef, tx)
    data = DataSource(args.data, args.seed, args.tokenizer)
    history = []
    end = min(args.steps, args.stop_after or args.steps)
    for step in range(start, end):
        lr = learning_rate(step, args.steps)
        refresh_runners(graphdef, params, rest, step)
        host = data.batch(step, args.batch_size)
        batch = match(graphdef, params, rest, to_arrays(host, data_sharding), host, data_sharding)
        params, rest, opt_state, loss = step_fn(params, rest, opt_state, batch, jnp.float32(lr))
        if (step + 1) % args.log_every == 0 or step == start or step + 1 == end:
            value = float(loss)
            history.append((step + 1, value))
            print(f"step {step + 1} loss {value:.6f} lr {lr:.3e}{reward_note(host)}", flush=True)
        if args.save_every and (step + 1) % args.save_every == 0:
            save_checkpoint(args.checkpoint_dir, graphdef, params, rest, opt_state, step + 1)
    save_checkpoint(args.checkpoint_dir, graphdef, params, rest, opt_state, end)
    print(
        f"saved {os.path.join(args.checkpoint_dir, 'model.safetensors')} ({len(devices)} devices)",
        flush=True,
    )
    return history
