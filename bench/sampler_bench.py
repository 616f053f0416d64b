"""Seconds per DDIM step of the diffusion model's `sample()` in each backend (issue 12).

One step is one U-Net call at twice the batch (classifier-free guidance) plus the
scheduler's update. It is measured as (T(steps=k+1) - T(steps=1)) / k of the whole
`sample()` call, so the autoencoder's encode/decode and the setup cancel; the
median of `--repeat` interleaved rounds is reported. The ONNX figure is
`metagen.onnx_pipeline` over the pipeline folder (prompt encoded once per call).

    python bench/sampler_bench.py                         # tiny sd15_pipeline, 64x64 images
    python bench/sampler_bench.py --full --spec examples/reference/sd15_unet.yaml \
        --backends torch --size 64 --steps 1 --repeat 1          # SD 1.5 size, one backend

At SD 1.5 size run one backend per process (peak RSS measured: torch 4.6 GiB, onnx
6.5 GiB, flax 9.8 GiB; numpy's float64 weights alone are 7.9 GB). sd15_unet has no
autoencoder, so `sample` returns latents, `--size` is the latent's side (64: a
512 x 512 image) and no 512 x 512 decode runs in every call. Weights are drawn once,
only for the backends measured; the ONNX folder holds the pipeline's parts with
their weights (external data, streamed to disk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "examples", "reference", "sd15_pipeline.yaml")


def _load(path: str):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import load_module

    return load_module(path)


def samplers(tiny: bool, backends: list[str], folder: str, spec: str = SPEC):
    """backend -> sample(ids, steps, size) on one set of weights."""
    from metagen.backends import registry
    from metagen.backends.onnx_pipeline import pipeline_files
    from metagen.outputs import write_tree
    from metagen.onnx_pipeline import OnnxDiffusionPipeline
    from metagen.pipeline import compile_spec

    comp = compile_spec(spec, tiny=tiny)
    out = {}
    weights = None
    for i, name in enumerate(backends):
        sub = os.path.join(folder, name)
        if name == "onnx":  # the parts only, with their weights however large (streamed to disk)
            write_tree(sub, pipeline_files(comp.model, weights, 0, stream=True, materialize_limit=float("inf")))
        else:
            os.makedirs(sub)
            with open(os.path.join(sub, "model.py"), "wb") as f:
                f.write(registry.get(name).lower(comp.model)[""])
        if name == "onnx":
            pipe = OnnxDiffusionPipeline(sub)
            out[name] = lambda ids, steps, size, pipe=pipe: pipe.sample(ids, steps=steps, height=size, width=size)
        else:
            mod = _load(os.path.join(sub, "model.py"))
            state = mod.init(0) if weights is None else mod.load_canonical(weights)
            if weights is None and backends[i + 1 :]:
                weights = mod.to_canonical(state)  # the next backends load these (not drawn again)
            out[name] = lambda ids, steps, size, mod=mod, state=state: mod.sample(state, ids, steps=steps, height=size, width=size)
    ids = np.full((1, comp.model.config["context_window"]), 1, dtype=np.int64)
    return out, ids


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="SD 1.5 size (default: --tiny)")
    p.add_argument("--backends", default="torch,onnx,flax,numpy")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (the latent's side when the spec has no autoencoder)")
    p.add_argument("--steps", type=int, default=4, help="k extra steps per measurement")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--spec", default=SPEC, help="the diffusion spec (default examples/reference/sd15_pipeline.yaml)")
    p.add_argument("--warmup", type=int, default=1, help="sample(steps=1) calls before timing (jit traces, session start)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="metagen-sampler-bench-") as folder:
        t0 = time.perf_counter()
        fns, ids = samplers(not args.full, [b.strip() for b in args.backends.split(",")], folder, args.spec)
        print(f"built and loaded {', '.join(fns)} in {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()}", flush=True)
        per_step: dict[str, list[float]] = {k: [] for k in fns}
        for k, fn in fns.items():  # warm-up: jit traces, session start
            for _ in range(args.warmup):
                t0 = time.perf_counter()
                fn(ids, 1, args.size)
                print(f"warm-up {k}: sample(steps=1) {time.perf_counter() - t0:.1f} s", flush=True)
        for _ in range(args.repeat):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(ids, 1, args.size)
                t1 = time.perf_counter()
                fn(ids, 1 + args.steps, args.size)
                t2 = time.perf_counter()
                per_step[k].append(((t2 - t1) - (t1 - t0)) / args.steps)
    scale = ("SD 1.5 " if args.full else "tiny ") + os.path.splitext(os.path.basename(args.spec))[0]
    for k, ts in per_step.items():
        print(f"{scale} {args.size}x{args.size} batch 1 (CFG: U-Net batch 2)  {k:6s} {statistics.median(ts):8.4f} s/DDIM step"
              f"  (min {min(ts):.4f}, {len(ts)} rounds; load average at end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
