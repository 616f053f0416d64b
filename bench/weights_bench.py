"""Writing a large model's initial weights to disk: time, throughput and peak RSS of
`metagen weights init` (prints a table; not a test).

    .venv/bin/python bench/weights_bench.py                 # Llama-2-7B, all 32 layers (27 GB)
    .venv/bin/python bench/weights_bench.py --layers 2      # same tensors, 2 layers (2.7 GB)

`metagen synth` of examples/reference/llama2_7b.yaml writes the ONNX graph alone (its
27 GB of float32 weights are above the size synth draws); then `metagen weights init`
draws init(seed) into onnx/model.onnx.data one tensor at a time. Peak memory is set
by the largest tensors (the 32000 x 4096 embedding and head, 0.5 GB each) and the
threads drawing ahead, not by the number of layers, so `--layers N` measures the same
peak at a fraction of the disk and time; the full model needs 27 GB free in --dir.
Both commands are whole processes, measured from outside (wall time, and
`ru_maxrss` of the child, in MiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SPEC = os.path.join(ROOT, "examples", "reference", "llama2_7b.yaml")


def _run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one whole process."""
    from onnx_bench import _one_process

    wall, rss, _, _ = _one_process(cmd)
    return wall, rss


def rows(layers: int | None = None, where: str | None = None, keep: bool = False) -> list[tuple[str, str, str]]:
    over = ["-D", f"architecture.layers={layers}"] if layers else []
    tmp = tempfile.mkdtemp(prefix="mg_weights_bench_", dir=where)
    try:
        t_synth, rss_synth = _run([os.path.join(BIN, "metagen"), "synth", SPEC, "--out", tmp, "--run-id", "run", *over])
        data = os.path.join(tmp, "run", "onnx", "model.onnx.data")
        assert not os.path.exists(data), "synth was expected to leave the weights out"
        t_init, rss_init = _run([os.path.join(BIN, "metagen"), "weights", "init", os.path.join(tmp, "run")])
        size = os.path.getsize(data)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    from metagen.backends.onnx_backend import _workers
    from metagen.pipeline import compile_spec

    model = compile_spec(SPEC, overrides=[("architecture.layers", str(layers))] if layers else []).model
    largest = max(p.numel * 4 for _, p in model.walk_params())
    label = f"llama2_7b{f' at {layers} layers' if layers else ''} ({model.param_count() / 1e9:.2f}B parameters)"
    return [
        ("8 weights", f"metagen synth {label}: graph only", f"{t_synth:.2f} s, peak RSS {rss_synth:.0f} MiB"),
        ("8 weights", f"metagen weights init: {size / 2**30:.2f} GiB written",
         f"{t_init:.1f} s ({size / 2**20 / t_init:.0f} MiB/s), peak RSS {rss_init:.0f} MiB; largest tensor "
         f"{largest / 2**20:.0f} MiB, {_workers()} threads drawing"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=None, help="override architecture.layers (default: the spec's 32)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    args = ap.parse_args()
    out = rows(args.layers, args.dir, args.keep)
    w = max(len(r[1]) for r in out)
    for part, what, fig in out:
        print(f"{part:<10} {what:<{w}}  {fig}")
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
