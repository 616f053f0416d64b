"""How fast bad or extreme input is dealt with: the timings that were wall-clock asserts
in tests/test_robustness.py and tests/test_onnx.py (they flapped on a loaded machine;
the tests keep the behaviour, this script the time). Not a test.

    .venv/bin/python bench/robustness_bench.py [--repeat N]

Each row: the best of N in-process (or, for metagenc, whole-process) runs, and the
target it should stay under on an idle machine. Exit status 0 either way; the load
average is printed, since a shared machine moves every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METAGENC = os.path.join(os.path.dirname(sys.executable), "metagenc")


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return fn(*args)
        except SystemExit as exc:
            return exc.code


def invalid_specs(repeat: int):
    """`metagen validate` rejecting each tests/invalid spec (target: 5 s each)."""
    from metagen.cli import main

    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "invalid", "*.yaml")) + glob.glob(os.path.join(ROOT, "tests", "invalid", "*.mg"))):
        rel = os.path.relpath(path, ROOT)
        yield f"reject {rel}", _best(lambda: _quiet(main, ["validate", path]), repeat), 5.0


def alias_bomb(repeat: int):
    """A 9^12-leaf YAML alias bomb refused (target: 2 s)."""
    from metagen.diagnostics import CompileError
    from metagen.frontend.yaml_frontend import parse_yaml

    levels = ["a0: &a0 [" + ",".join(['"lol"'] * 9) + "]"]
    levels += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    text = "\n".join(levels) + "\n"

    def once():
        try:
            parse_yaml(text, "bomb.yaml")
        except CompileError:
            return
        raise SystemExit("the alias bomb was accepted")

    yield "alias bomb refused", _best(once, repeat), 2.0


def absurd_budget(repeat: int, tmp: str):
    """The largest budget allowed (10T, 1M context) fitted (target: 10 s)."""
    from metagen.cli import main

    spec = os.path.join(tmp, "big.yaml")
    with open(spec, "w") as fh:
        fh.write(
            'metagen_version: "1.0"\nname: "big"\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
            'constraints:\n  parameter_budget:\n    max: "10T"\n  context_window: "1M"\n'
        )
    yield "fit a 10T budget", _best(lambda: _quiet(main, ["validate", spec]), repeat), 10.0


def large_onnx_graphs(repeat: int, tmp: str):
    """Whole `metagenc --target onnx` processes for the 7B and 70B specs, graph only
    (no weights allocated) (target: 10 s)."""
    for rel in ("examples/reference/llama2_7b.yaml", "examples/tutorial/pattern_large_lm.yaml"):
        out = os.path.join(tmp, "big.onnx")

        def once():
            subprocess.run([METAGENC, os.path.join(ROOT, rel), "--target", "onnx", "-o", out], check=True, capture_output=True)

        yield f"onnx graph of {rel}", _best(once, repeat), 10.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mg_robustness_bench_") as tmp:
        rows = [
            *invalid_specs(args.repeat),
            *alias_bomb(args.repeat),
            *absurd_budget(args.repeat, tmp),
            *large_onnx_graphs(args.repeat, tmp),
        ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'case':<{width}}  {'best s':>7}  {'target s':>8}")
    for name, seconds, target in rows:
        flag = "" if seconds < target else "  OVER"
        print(f"{name:<{width}}  {seconds:7.2f}  {target:8.1f}{flag}")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; best of {args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
