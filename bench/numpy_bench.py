"""The numpy reference backend on every example spec at --tiny: how much of CONTRACT
§5's tolerance torch uses against it (model outputs and the loss program), and how long
the numpy and torch modules take per `run`, interleaved in one process (min of
`--repeat` calls after warm-up).

    .venv/bin/python bench/numpy_bench.py [--repeat N] [SPEC...]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile

import numpy as np

from model_bench import ROOT, interleaved, stats_ms


def tolerance_used(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / (1e-5 + 1e-4 * np.abs(b)))) if a.size else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    specs = args.specs or sorted(glob.glob(os.path.join(ROOT, "examples", "*", "*.yaml")))
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch
    from conftest import load_module

    from metagen.backends.numpy_backend import lower_to_numpy
    from metagen.backends.torch_backend import lower_to_torch
    from metagen.compiler.objectives import ObjectiveError, build_loss
    from metagen.pipeline import compile_spec

    torch.set_grad_enabled(False)
    print(f"{'spec':36} {'tol used':>9} {'output':>12} {'loss tol':>9} {'numpy ms':>9} {'torch ms':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(specs):
            comp = compile_spec(spec, tiny=True)
            mods = []
            for model, tag in [(comp.model, "m")] + _loss(comp, build_loss, ObjectiveError):
                for lower, side in ((lower_to_torch, "t"), (lower_to_numpy, "n")):
                    path = os.path.join(tmp, f"{i}_{tag}_{side}.py")
                    with open(path, "w") as f:
                        f.write(lower(model))
                    mods.append(load_module(path))
            t, n = mods[0], mods[1]
            weights, inputs = t.to_canonical(t.init(0)), t.example_inputs(batch_size=2, seed=1)
            ts, ns = t.load_canonical(weights), n.load_canonical(weights)
            want, got = t.run(ts, inputs), n.run(ns, inputs)
            used, worst = max((tolerance_used(want[k], got[k]), k) for k in want)
            loss = "-"
            if len(mods) == 4:
                lt, ln = mods[2], mods[3]
                feed = lt.example_inputs(seed=2)
                loss = f"{max(tolerance_used(lt.run(lt.init(0), feed)[k], v) for k, v in ln.run(ln.init(0), feed).items()):.2e}"
            times = interleaved({"numpy": lambda: n.run(ns, inputs), "torch": lambda: t.run(ts, inputs)}, args.repeat)
            rel = os.path.relpath(spec, os.path.join(ROOT, "examples"))
            print(
                f"{rel:36} {used:9.4f} {worst:>12} {loss:>9} "
                f"{stats_ms(times['numpy'])[0]:9.1f} {stats_ms(times['torch'])[0]:9.1f}",
                flush=True,
            )
    print(f"\nnumpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")


def _loss(comp, build_loss, error):
    try:
        return [(build_loss(comp.ctx).loss, "loss")]
    except error:
        return []


if __name__ == "__main__":
    main()
