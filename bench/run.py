"""MetaGen speed benchmarks (issue 7): prints every table in one run (not a test).

    .venv/bin/python bench/run.py [--repeat N] [--compile-repeat N] [--parts 1234] [--onnx]

1  generated torch vs transformers (GPT-2 small, ~100M Llama), 1x256 and 8x256, fp32 CPU
2  achieved GFLOP/s of the generated forward vs a 2048^2 matmul in the same loop
3  the jitted flax module vs the torch module
4  the compiler: every example to every target, the 70B spec, depth 12/96/768, the fitter
5  torch.compile: generated torch eager vs compiled vs transformers compiled (bench/torch_compile_bench.py)
6  ONNX emission: metagenc --target onnx vs torch.onnx.export(dynamo=True), GPT-2 small, whole processes
7  ONNX precisions: size, onnxruntime latency, logit drift of fp32/fp16/int8 GPT-2 small (bench/precision_bench.py)
8  weights to disk: metagen weights init of Llama-2-7B at --weights-layers layers, time and peak RSS
--onnx adds bench/onnx_bench.py's other tables (onnxruntime latency, opset choice).

Model timings are interleaved in one process and reported as min and median; the machine
line at the end gives the load average, since a shared machine moves every figure.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compile_bench  # noqa: E402
import model_bench  # noqa: E402
import onnx_bench  # noqa: E402
import precision_bench  # noqa: E402
import torch_compile_bench  # noqa: E402
import weights_bench  # noqa: E402
from onnx_bench import Table  # noqa: E402  (rows echoed to stderr as they are measured)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _print(rows) -> None:
    w = max((len(r[1]) for r in rows), default=4)
    print(f"{'part':<16} {'what':<{w}}  figure")
    print("-" * (w + 40))
    for part, what, fig in rows:
        print(f"{part:<16} {what:<{w}}  {fig}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="interleaved model repetitions (default 5)")
    ap.add_argument("--compile-repeat", type=int, default=2, help="processes per compile figure, best kept")
    ap.add_argument("--parts", default="12345678", help="which parts to run (default all; 1 and 2 run together)")
    ap.add_argument("--weights-layers", type=int, default=2,
                    help="part 8: Llama-2-7B's layers (default 2: the same largest tensors, so the same peak memory, as 32)")
    ap.add_argument("--onnx", action="store_true", help="also run bench/onnx_bench.py's tables")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="part 6: start metagenc compiling our modules from source (default: from bytecode, as installed)")
    args = ap.parse_args()

    import torch

    print(f"load average at start: {_load()}", file=sys.stderr)
    t0 = time.perf_counter()
    rows, peak_rows = Table(), Table()
    tmp = model_bench.new_tmp()
    has_hf = importlib.util.find_spec("transformers") is not None
    if ("1" in args.parts or "2" in args.parts) and not has_hf:
        rows.append(("1, 2", "skipped", "transformers is not installed (a test/bench-only extra)"))
    elif "1" in args.parts or "2" in args.parts:
        for kind in ("gpt2", "llama"):
            model_bench.torch_vs_hf(kind, args.repeat, tmp, rows, peak_rows)
        rows.extend(peak_rows)
    if "3" in args.parts:
        model_bench.flax_vs_torch(args.repeat, tmp, rows)
    if "4" in args.parts:
        compile_bench.large_all_targets(args.compile_repeat, rows)
        compile_bench.depth_scaling(args.compile_repeat, rows)
        compile_bench.fitter(rows)
        compile_bench.per_example(args.compile_repeat, rows)
    if "5" in args.parts and not has_hf:
        rows.append(("5", "skipped", "transformers is not installed (a test/bench-only extra)"))
    elif "5" in args.parts:
        for kind in ("gpt2", "llama"):
            torch_compile_bench.compiled_vs_eager(kind, args.repeat, tmp, rows)
    if "6" in args.parts:
        onnx_bench.emission_vs_export(args.compile_repeat, rows, bytecode=not args.no_bytecode)
    if "7" in args.parts:
        rows.extend(precision_bench.rows(args.repeat, 256))
    if "8" in args.parts:
        rows.extend(weights_bench.rows(args.weights_layers or None))
    _print(rows)
    hf_version = importlib.metadata.version("transformers") if has_hf else "absent"
    print(
        f"\nmachine: {os.cpu_count()} CPUs ({_cpu_model()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {hf_version}, python {platform.python_version()}; "
        f"load average at end {_load()}; bench took {time.perf_counter() - t0:.0f} s"
    )
    if args.onnx:
        import subprocess

        subprocess.run([sys.executable, os.path.join(HERE, "onnx_bench.py"), "--parts", "bc"], check=True)


if __name__ == "__main__":
    main()
