"""Loss IR + training config -> a standalone PyTorch training program (train.py).

The loss class is lowered from the objective's IR by the torch backend's module
emitter, so the loss is the same graph every backend lowers. The rest of the file
is a fixed runtime (data, optimizer, schedule, FSDP2, checkpoints) that reads its
choices from the TRAIN table; nothing model-specific is spliced into its code.
"""

from __future__ import annotations

from typing import Any

from metagen.backends.pyemit import Lines, format_python, py_literal, source_text
from metagen.backends.torch_backend import TorchEmitter
from metagen.compiler.objectives import LossProgram
from metagen.ir.graph import Model


def emit_loss_tables(out: Lines, loss: LossProgram, cfg: dict[str, Any]) -> None:
    out(f"TRAIN = {py_literal(cfg)}")
    out(f"LOSS_SOURCES = {py_literal([list(s) for s in loss.sources])}")
    out("")


# Shared by both programs: the data side (numpy only, so torch and flax draw the
# same batches) and the learning-rate schedule.
DATA_RUNTIME = '''
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


def _synthetic_tokens(rng, shape, high):
    """Learnable token streams: each row counts up from a random start by a random
    stride (mod vocabulary), so next-token loss can fall well below log(vocab)."""
    start = rng.integers(0, high, size=shape[:-1] + (1,))
    stride = rng.integers(1, 4, size=shape[:-1] + (1,))
    return (start + stride * np.arange(shape[-1])) % high


def _alphas_cumprod(schedule):
    """Diffusion noise schedule (scaled_linear: betas = linspace(sqrt(b0), sqrt(b1))^2)."""
    betas = np.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5, schedule["steps"]) ** 2
    return np.cumprod(1.0 - betas)


def _carry(out, keys, high):
    """Make synthetic inputs carry a per-row (or per-position) key, so a label or a
    pairing can be learned: the key becomes the first token of token inputs and a
    shift of float inputs."""
    for spec in M._INPUT_KINDS:
        x = out[spec["name"]]
        if keys.ndim == 1 and spec["kind"] == "tokens":
            x[(slice(None),) * (x.ndim - 1) + (0,)] = keys.reshape((-1,) + (1,) * (x.ndim - 2)) % int(spec["high"])
        elif spec["kind"] == "tokens" and x.shape == keys.shape:
            out[spec["name"]] = (keys % int(spec["high"])).astype(x.dtype)
        elif spec["kind"] != "tokens" and x.shape[: keys.ndim] == keys.shape:
            shift = (keys / high).reshape(keys.shape + (1,) * (x.ndim - keys.ndim))
            out[spec["name"]] = (x + shift).astype(x.dtype)


class DataSource:
    """Global batches as numpy arrays, a pure function of (seed, step): every rank
    and every backend draws the same batch and takes its own rows."""

    def __init__(self, path=None, seed=0):
        self.seed = seed
        self.tokens = None
        self.arrays = None
        if path is not None:
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
        out = {}
        if self.arrays is not None:
            n = len(next(iter(self.arrays.values())))
            rows = rng.integers(0, n, size=batch_size)
            out = {k: np.asarray(v[rows]) for k, v in self.arrays.items()}
        for spec in M._INPUT_KINDS:
            name = spec["name"]
            if name in out:
                continue
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
        for name, target in TRAIN["targets"].items():
            if name in out and target["kind"] != "diffusion_noise":
                continue
            if target["kind"] == "class":
                shape = tuple(batch_size if d == "batch" else d for d in target["shape"])
                labels = rng.integers(0, target["high"], size=shape)
                out[name] = labels.astype(np.int64)
                if self.arrays is None:
                    _carry(out, labels, target["high"])
            elif target["kind"] == "masked_tokens":
                tokens = out[target["input"]]
                hide = rng.random(tokens.shape) < target["rate"]
                rows = np.arange(tokens.shape[0])
                hide[rows, rng.integers(0, tokens.shape[-1], size=tokens.shape[0])] = True
                out[name] = tokens.astype(np.int64)
                out[target["input"]] = np.where(hide, target["mask_id"], tokens).astype(tokens.dtype)
                out["mask"] = hide.astype(np.float32)
            elif target["kind"] == "paired" and self.arrays is None:
                _carry(out, rng.integers(0, 16, size=batch_size), 16)
            elif target["kind"] == "diffusion_noise":
                sample = next(s["name"] for s in M._INPUT_KINDS if s["kind"] == "normal")
                steps = target["schedule"]["steps"]
                t = rng.integers(0, steps, size=batch_size)
                noise = rng.standard_normal(out[sample].shape).astype(np.float32)
                ab = _alphas_cumprod(target["schedule"])[t].reshape((-1,) + (1,) * (noise.ndim - 1))
                x0 = out[sample]
                out[sample] = (np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise).astype(np.float32)
                for spec in M._INPUT_KINDS:
                    if spec["name"] in ("timestep", "timesteps", "t"):
                        out[spec["name"]] = t.astype(spec["dtype"])
                out[name] = noise
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
    p.add_argument("--synthetic", action="store_true", help="generated data, no download (default without --data)")
    p.add_argument("--data", help=".npy token array, .npz of named arrays, or any file read as bytes")
    p.add_argument("--steps", type=int, default=TRAIN["steps"])
    p.add_argument("--batch-size", type=int, default=TRAIN["batch_size"], help="global batch size")
    p.add_argument("--learning-rate", type=float, default=None, help="peak; default TRAIN['learning_rate']")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--save-every", type=int, default=0, help="also save every N steps (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    p.add_argument("--stop-after", type=int, default=0, help="stop (and save) after this step; the schedule still spans --steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=TRAIN["seed"])
    if backend == "flax":
        p.add_argument("--devices", type=int, default=0, help="devices in the data mesh (0: all)")
    args = p.parse_args(argv)
    if args.synthetic and args.data:
        p.error("--synthetic and --data exclude each other")
    if args.learning_rate is not None:
        TRAIN["learning_rate"] = args.learning_rate
    return args
'''

TORCH_RUNTIME = '''
def decay_mask(name, shape):
    """Weight decay applies to matrices and kernels, not to norms and biases."""
    return len(shape) >= 2


def make_optimizer(model):
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if decay_mask(n, p.shape)], "weight_decay": TRAIN["weight_decay"]},
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
    out = model(**{name: batch[name] for name in M.INPUTS})
    args = [out[name] if kind == "output" else batch[name] for kind, name in LOSS_SOURCES]
    return LOSS(*args)["loss"]


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
        arrays = {k: np.ascontiguousarray(v.detach().cpu().float().numpy()) for k, v in weights.items()}
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
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world} processes")
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
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))
    data = DataSource(args.data, args.seed)
    local = args.batch_size // world
    history = []
    end = min(args.steps, args.stop_after or args.steps)
    for step in range(start, end):
        lr = learning_rate(step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = data.batch(step, args.batch_size)
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
                print(f"step {step + 1} loss {value:.6f} lr {lr:.3e}", flush=True)
        if args.save_every and (step + 1) % args.save_every == 0:
            save_checkpoint(args.checkpoint_dir, model, optimizer, step + 1, rank)
    save_checkpoint(args.checkpoint_dir, model, optimizer, end, rank)
    if rank == 0:
        print(f"saved {os.path.join(args.checkpoint_dir, 'model.safetensors')}", flush=True)
    if world > 1:
        dist.destroy_process_group()
    return history


if __name__ == "__main__":
    train()
'''


def _program_doc(model: Model, loss: LossProgram, cfg: dict[str, Any], backend: str, usage: list[str]) -> list[str]:
    lines = [
        f'"""{backend} training program for \'{source_text(model.spec_name)}\' ({loss.objective} objective).',
        "",
        "Generated by MetaGen from the spec; edit the spec, not this file. Usage:",
        "",
    ]
    lines += ["    " + u for u in usage]
    lines += [
        "",
        "Checkpoints: DIR/model.safetensors (canonical names, loads into every backend),",
        "DIR/trainer_state.json (step) and the optimizer state. --data takes a .npy token",
        "array, an .npz of arrays named like the inputs/targets, or any file read as bytes.",
        '"""',
    ]
    return lines


def lower_training_torch(model: Model, loss: LossProgram, cfg: dict[str, Any]) -> str:
    out = Lines()
    nproc = cfg["nproc_per_node"]
    usage = [
        "python train.py --synthetic --steps 100 --log-every 10",
        "python train.py --data tokens.npy --checkpoint-dir ckpt [--resume]",
        f"torchrun --nnodes {cfg['nodes']} --nproc_per_node {nproc} train.py --synthetic"
        + (f"  # plan for {source_text(str(cfg['hardware']))}" if cfg.get("hardware") else ""),
    ]
    for line in _program_doc(model, loss, cfg, "PyTorch", usage):
        out(line)
    out("")
    for line in (
        "import argparse",
        "import importlib.util",
        "import json",
        "import math",
        "import os",
        "import sys",
        "import zlib",
        "",
        "import numpy as np",
        "import torch",
        "import torch.distributed as dist",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
    ):
        out(line)
    emitter = TorchEmitter(loss.loss)
    body = emitter.emit_classes()
    emitter.emit_helpers(out)
    emit_loss_tables(out, loss, cfg)
    out(DATA_RUNTIME)
    out('M = _load_sibling("model.py", "torch_model")')
    out("")
    out.lines.extend(body.lines)
    out(f"LOSS = {emitter.class_names[loss.loss.top]}()")
    out(TORCH_RUNTIME)
    return format_python(out.text())
