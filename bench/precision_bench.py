"""ONNX precisions of GPT-2 small: file size, onnxruntime latency and the largest
logit difference to fp32 (prints a table; not a test).

    .venv/bin/python bench/precision_bench.py [--repeat 5] [--tokens 256]

Each graph is written from examples/reference/gpt2_small.yaml with init(0)'s weights
by `metagenc --precision P` (a whole process each, timed), run in one
onnxruntime CPU session each on the same 1 x N token ids; latencies are medians of
`--repeat` runs taken round-robin (so load swings hit every precision alike), after
2 warm-up runs. The logit difference is max|logits_P - logits_fp32| and that over
max|logits_fp32| (the figure metagen.precision.TOLERANCE bounds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
GPT2 = os.path.join(ROOT, "examples", "reference", "gpt2_small.yaml")
PRECISIONS = ("fp32", "fp16", "int8")


def rows(repeat: int, tokens: int, spec: str = GPT2) -> list[tuple[str, str, str]]:
    import subprocess
    import tempfile

    import onnxruntime as ort

    from metagen.generate import complete_inputs
    from metagen.pipeline import compile_spec
    from metagen.precision import drift

    model = compile_spec(spec).model
    ids = np.random.default_rng(0).integers(0, model.config["vocab_size"], size=(1, tokens)).astype(np.int64)
    sessions, sizes, emit = {}, {}, {}
    metagenc = os.path.join(os.path.dirname(sys.executable), "metagenc")
    with tempfile.TemporaryDirectory(prefix="mg_precision_bench_") as tmp:
        for p in PRECISIONS:  # each emitted by its own whole process, as a user would
            path = os.path.join(tmp, f"{p}.onnx")
            t0 = time.perf_counter()
            res = subprocess.run([metagenc, spec, "--target", "onnx", "--precision", p, "-o", path], capture_output=True, text=True)
            emit[p] = time.perf_counter() - t0
            if res.returncode:
                raise SystemExit(res.stderr)
            sizes[p] = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp) if f.startswith(f"{p}.onnx"))
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sessions[p] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = complete_inputs(model, {"input_ids": ids})  # a plain forward: empty caches, no padding
    logits = {p: s.run(["logits"], feed)[0] for p, s in sessions.items()}
    for _ in range(2):
        for s in sessions.values():
            s.run(["logits"], feed)
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(repeat):
        for p, s in sessions.items():
            t0 = time.perf_counter()
            s.run(["logits"], feed)
            times[p].append(time.perf_counter() - t0)
    out = []
    for p in PRECISIONS:
        d = float(np.max(np.abs(logits[p].astype(np.float64) - logits["fp32"])))
        out.append(
            (
                f"precision {p}",
                f"gpt2_small ONNX, 1x{tokens} tokens, onnxruntime CPU",
                f"{sizes[p] / 2**20:.0f} MiB, {statistics.median(times[p]) * 1e3:.0f} ms (median of {repeat}; min "
                f"{min(times[p]) * 1e3:.0f}), max|logit diff| to fp32 {d:.3g} ({drift(logits[p], logits['fp32']):.2e} of max|logit|), "
                f"emitted in {emit[p]:.1f} s (metagenc, whole process)",
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=256)
    args = ap.parse_args()
    for part, what, fig in rows(args.repeat, args.tokens):
        print(f"{part:<16} {what}  {fig}")


if __name__ == "__main__":
    main()
