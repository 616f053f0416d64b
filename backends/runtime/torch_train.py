"""The PyTorch side of the generated training program: optimizer, loss on a batch,
process group and FSDP2 sharding, checkpoints, the training loop. Copied into the
torch train.py after the data runtime and the lowered loss class.
"""

import copy
import json
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

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


def decay_mask(name, shape):
    """Weight decay applies to matrices and kernels, not to norms and biases."""
    return len(shape) >= 2


def make_optimizer(model):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in params if decay_mask(n, p.shape)],
            "weight_decay": TRAIN["weight_decay"],
        },
        {"params": [p for n, p in params if not decay_mask(n, p.shape)], "weight_decay": 0.0},
    ]
    lr = TRAIN["learning_rate"]
    if TRAIN["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if TRAIN["optimizer"] == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(TRAIN["betas"]), eps=TRAIN["eps"])


def compute_loss(model, batch):
    """The objective's loss (lowered from the IR) on one batch of tensors."""
    out = model(**{name: batch[name] for name in M.INPUTS if name in batch})
    if reads_outputs():  # data-side steps on this forward's detached predictions (DETR's matching)
        host = {k: v.detach().cpu().numpy() for k, v in batch.items()}
        added = after_forward(host, {k: v.detach().float().cpu().numpy() for k, v in out.items()})
        device = next(iter(out.values())).device
        batch = dict(batch, **{k: torch.from_numpy(v).to(device) for k, v in added.items()})
    args = [out[name] if kind == "output" else batch[name] for kind, name in LOSS_SOURCES]
    return LOSS(*args)["loss"]


def refresh_runners(model, step, device="cpu"):
    """The models the data side runs (RL): the online weights, and a target network
    copied from them every `target_every` steps (single process)."""
    names, every = runners_wanted()
    if not names:
        return

    def runner(m):
        def run(inputs):
            with torch.no_grad():
                out = m(**to_tensors(inputs, device))
            return {k: v.detach().cpu().numpy() for k, v in out.items()}

        return run

    RUNNERS["online"] = runner(model)
    if "target" in names and (every == 0 or step % every == 0 or "target" not in RUNNERS):
        RUNNERS["target"] = runner(copy.deepcopy(model))


def to_tensors(batch, device):
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def _distributed():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup():
    """Single process, or one rank of a torchrun job (gloo on CPU, nccl on GPU)."""
    if _distributed():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return rank, world, device


def shard(model):
    """FSDP2: each repeated block is its own shard unit, then the root."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block)
    fully_shard(model)
    return model


def full_state(model, optimizer):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    return weights, optim


def save_checkpoint(directory, model, optimizer, step, rank):
    from safetensors.numpy import save_file

    weights, optim = full_state(model, optimizer)
    if rank == 0:
        os.makedirs(directory, exist_ok=True)
        arrays = {
            k: np.ascontiguousarray(v.detach().cpu().float().numpy()) for k, v in weights.items()
        }
        save_file(arrays, os.path.join(directory, "model.safetensors"))
        torch.save(optim, os.path.join(directory, "optimizer.pt"))
        with open(os.path.join(directory, "trainer_state.json"), "w") as f:
            json.dump({"step": step, "objective": TRAIN["objective"]}, f)
    if _distributed():
        dist.barrier()


def load_checkpoint(directory):
    from safetensors.numpy import load_file

    weights = load_file(os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "trainer_state.json")) as f:
        step = json.load(f)["step"]
    optim = torch.load(os.path.join(directory, "optimizer.pt"), weights_only=False)
    return weights, optim, step


def train(argv=None):
    """Run training; returns the list of (step, loss) logged."""
    args = parse_args(argv)
    rank, world, device = setup()
    if args.batch_size % world:
        raise SystemExit(
            f"--batch-size {args.batch_size} must be divisible by the {world} processes"
        )
    torch.manual_seed(args.seed)
    if TRAIN["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    start, optim_state = 0, None
    if args.resume:
        weights, optim_state, start = load_checkpoint(args.checkpoint_dir)
    else:
        weights = M.init_arrays(args.seed)
    model = M.load_canonical(weights).to(device).train()
    if world > 1:
        shard(model)
    optimizer = make_optimizer(model)
    if optim_state is not None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(
            model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True)
        )
    data = DataSource(args.data, args.seed, args.tokenizer)
    local = args.batch_size // world
    history = []
    end = min(args.steps, args.stop_after or args.steps)
    for step in range(start, end):
        lr = learning_rate(step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        refresh_runners(model, step, device)
        batch = data.batch(step, args.batch_size)
        if world > 1:  # one process keeps the whole batch (a graph batch's rows are nodes)
            batch = {k: v[rank * local : (rank + 1) * local] for k, v in batch.items()}
        loss = compute_loss(model, to_tensors(batch, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if TRAIN["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), TRAIN["grad_clip"])
        optimizer.step()
        value = loss.detach()
        if world > 1:
            dist.all_reduce(value)
            value = value / world
        value = float(value)
        if (step + 1) % args.log_every == 0 or step == start or step + 1 == end:
            history.append((step + 1, value))
            if rank == 0:
                print(
                    f"step {step + 1} loss {value:.6f} lr {lr:.3e}{reward_note(batch)}", flush=True
                )
        if args.save_every and (step + 1) % args.save_every == 0:
            save_checkpoint(args.checkpoint_dir, model, optimizer, step + 1, rank)
    save_checkpoint(args.checkpoint_dir, model, optimizer, end, rank)
    if rank == 0:
        print(f"saved {os.path.join(args.checkpoint_dir, 'model.safetensors')}", flush=True)
    if world > 1:
        dist.destroy_process_group()
    return history
