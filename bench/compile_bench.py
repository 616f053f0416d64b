"""Speed of the compiler itself (issue 7, part 4): helpers used by bench/run.py.

Every figure is a whole process (`metagenc ... -o FILE`, interpreter start and imports
included), the best of `repeat` runs, since that is what a build system pays.
"""

from __future__ import annotations

import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METAGENC = os.path.join(os.path.dirname(sys.executable), "metagenc")
TARGETS = ("ir", "torch", "flax", "onnx")
LARGE = os.path.join(ROOT, "examples", "tutorial", "pattern_large_lm.yaml")
GPT2 = os.path.join(ROOT, "examples", "reference", "gpt2_small.yaml")
FIT_LINE = re.compile(r"fit-dimensions: (\d+) builds in ([0-9.]+) s")


def run_metagenc(spec: str, target: str, out_dir: str, extra=(), env=None) -> tuple[float, str]:
    """(wall seconds, stderr) of one whole `metagenc` process."""
    out = os.path.join(out_dir, f"{os.path.basename(spec)}.{target}")
    cmd = [METAGENC, spec, "--target", target, "-o", out, *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    dt = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return dt, res.stderr


def best(spec: str, target: str, repeat: int, extra=()) -> tuple[float, float]:
    """(min, median) wall seconds over `repeat` processes."""
    tmp = tempfile.mkdtemp(prefix="mg_compile_bench_")
    ts = [run_metagenc(spec, target, tmp, extra)[0] for _ in range(repeat)]
    return min(ts), statistics.median(ts)


def examples() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "examples", "*", "*.yaml")))


def per_example(repeat: int, rows) -> None:
    """A row per example: whole-process seconds to each target."""
    for spec in examples():
        figs = []
        for t in TARGETS:
            lo, _ = best(spec, t, repeat)
            figs.append(f"{t} {lo:.2f}")
        rows.append(("4 compile", os.path.relpath(spec, ROOT), "  ".join(figs) + " s"))


def large_all_targets(repeat: int, rows) -> None:
    """The 70B spec to every target; the goal is the sum under 5 s."""
    total, figs = 0.0, []
    for t in TARGETS:
        lo, med = best(LARGE, t, repeat)
        total += lo
        figs.append(f"{t} {lo:.2f}")
    rows.append((
        "4 compile 70B", "pattern_large_lm.yaml, every target (best of each)",
        "  ".join(figs) + f"  total {total:.2f} s (goal < 5 s: {'met' if total < 5 else 'NOT met'})",
    ))


def depth_scaling(repeat: int, rows) -> None:
    """GPT-2 small at 12, 96 and 768 layers: seconds per target and per added layer."""
    budget = ("-D", "constraints.parameter_budget.max=100B")
    for t in ("ir", "torch", "flax", "onnx"):
        secs = {}
        for layers in (12, 96, 768):
            secs[layers], _ = best(GPT2, t, repeat, ("-D", f"architecture.layers={layers}", *budget))
        slope_lo = (secs[96] - secs[12]) / 84 * 1e3
        slope_hi = (secs[768] - secs[96]) / 672 * 1e3
        rows.append((
            "4 compile depth", f"gpt2_small --target {t}" + (" (graph only from 96 layers: no weights embedded)" if t == "onnx" else ""),
            f"12: {secs[12]:.2f}  96: {secs[96]:.2f}  768: {secs[768]:.2f} s;  "
            f"ms per layer 12->96 {slope_lo:.1f}, 96->768 {slope_hi:.1f}",
        ))


def fitter(rows) -> None:
    """The budget fitter's own time, from its METAGEN_FIT_TIME line, for every example it runs on."""
    env = dict(os.environ, METAGEN_FIT_TIME="1")
    tmp = tempfile.mkdtemp(prefix="mg_fit_bench_")
    for spec in examples():
        _, err = run_metagenc(spec, "ir", tmp, env=env)
        m = FIT_LINE.search(err)
        if m:
            rows.append(("4 fitter", os.path.relpath(spec, ROOT), f"{m.group(1)} candidate builds in {m.group(2)} s"))
