"""ONNX backend benchmarks: prints a table (not a test).

    .venv/bin/python bench/onnx_bench.py [--repeat N] [--skip-export]

(a) compile time, whole process: `metagenc --target onnx` on gpt2_small.yaml (weights
    embedded) against `torch.onnx.export(..., dynamo=True)` of the generated torch model;
(b) batch 1 x 256 tokens GPT-2 small latency: our graph in onnxruntime, the graph
    torch.onnx.export produces, our torch module, and the jitted flax module when
    backends/flax_backend.py exists;
(c) the opset choice: fused opset-23 Attention/RMSNormalization/RotaryEmbedding
    against the decomposed form, in onnxruntime, for GPT-2 small and a ~100M
    llama-style model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
GPT2 = os.path.join(ROOT, "examples", "reference", "gpt2_small.yaml")
LLAMA = os.path.join(ROOT, "examples", "reference", "llama2_7b.yaml")
# ~100M llama-style: llama2_7b's topology (RMSNorm, RoPE, SwiGLU) at GPT-2-small width.
LLAMA_100M = [
    ("architecture.hidden_size", "768"),
    ("architecture.layers", "12"),
    ("architecture.heads", "12"),
    ("architecture.kv_heads", "4"),
    ("architecture.ffn_size", "2048"),
    ("constraints.parameter_budget.max", "130M"),
]

EXPORT_SCRIPT = r"""
import sys, time, importlib.util, torch
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("m", sys.argv[1]); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
model = m.init(0)
ids = torch.from_numpy(m.example_inputs(batch_size=1)["input_ids"])
t1 = time.perf_counter()
torch.onnx.export(model, (), sys.argv[2], kwargs={"input_ids": ids}, dynamo=True, external_data=False,
                  dynamic_shapes={"input_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}},
                  input_names=["input_ids"], output_names=["logits"], verbose=False)
print(f"{time.perf_counter() - t1:.3f}")
"""


class Table(list):
    """Rows (part, what, figure); each is echoed to stderr as it is measured."""

    def append(self, row: tuple[str, str, str]) -> None:
        print("  ".join(row), file=sys.stderr, flush=True)
        super().append(row)


def _time_process(cmd: list[str], repeat: int) -> tuple[float, str]:
    times, last = [], ""
    for _ in range(repeat):
        t, _, last, _ = _one_process(cmd)
        times.append(t)
    return min(times), last


# Runs argv[1:] and prints its peak RSS (KiB) and CPU seconds. A child forked from a
# large benchmark process counts the parent's resident pages in its ru_maxrss until it
# execs; forked from this small launcher instead, the figure is the command's own.
LAUNCHER = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, ru = os.wait4(pid, 0)\n"
    "print(f'@@usage {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}', file=sys.stderr)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _one_process(cmd: list[str], env: dict | None = None) -> tuple[float, float, str, float]:
    """(wall seconds, peak RSS MiB, last stdout line, CPU seconds user+system) of one
    whole process (through LAUNCHER). CPU time barely depends on how many other jobs
    share the cores, so its ratio is the steadier figure on a loaded machine."""
    t0 = time.perf_counter()
    res = subprocess.run([PY, "-c", LAUNCHER, *cmd], cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    usage = [line for line in res.stderr.splitlines() if line.startswith("@@usage ")][-1].split()
    lines = res.stdout.strip().splitlines()
    return wall, int(usage[1]) / 1024, lines[-1] if lines else "", float(usage[2])


def bytecode_env(cmd: list[str], outputs: tuple[str, ...] = ()) -> dict:
    """An environment in which `cmd` starts the way an installed package does, from
    compiled bytecode: pip compiles a wheel's modules when it installs them, but this
    checkout is an editable install, and where PYTHONDONTWRITEBYTECODE is set (as on
    the development machine) every start compiles each of our modules it imports from
    source again (~0.1 s of CPU of ~0.3 s of imports, measured). The bytecode goes to a temporary PYTHONPYCACHEPREFIX,
    written by one untimed run of `cmd`; nothing is written into the checkout."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=tempfile.mkdtemp(prefix="mg_pyc_"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    _one_process(cmd, env)
    for path in outputs:
        if os.path.exists(path):
            os.unlink(path)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # read the cache, write nothing more
    return env


def compile_race(ours: list[str], theirs: list[str], repeat: int, outputs: tuple[str, ...] = (),
                 ours_env: dict | None = None) -> dict:
    """Whole processes, ours and theirs alternating (so load swings hit both), `repeat`
    rounds, `outputs` removed before each (a first compile, not a rewrite of an
    unchanged file). `ours_env`: our process's environment (see `bytecode_env`)."""
    t_ours, t_theirs, inner, cpu_ours, cpu_theirs = [], [], [], [], []
    rss_ours = rss_theirs = 0.0
    for i in range(repeat):
        for path in outputs:
            if os.path.exists(path):
                os.unlink(path)
        t, rss_ours, _, cpu = _one_process(ours, ours_env)
        t_ours.append(t)
        cpu_ours.append(cpu)
        t, rss_theirs, last, cpu = _one_process(theirs)
        t_theirs.append(t)
        cpu_theirs.append(cpu)
        inner.append(float(last))
    pairs = sorted(b / a for a, b in zip(t_ours, t_theirs))
    return {
        "ours": (min(t_ours), statistics.median(t_ours)),
        "theirs": (min(t_theirs), statistics.median(t_theirs)),
        "inner": min(inner),
        "ratio_min": min(t_theirs) / min(t_ours),
        "ratio_median": statistics.median(t_theirs) / statistics.median(t_ours),
        "ratio_pairwise": statistics.median(pairs),
        "rss": (rss_ours, rss_theirs),
        "cpu": (min(cpu_ours), min(cpu_theirs)),
        "ratio_cpu": min(cpu_theirs) / min(cpu_ours),
    }


def _latency(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _ort_session(data: bytes | str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _compile(path, overrides=()):
    from metagen.pipeline import compile_spec

    return compile_spec(path, overrides=list(overrides))


def emission_rows(ours_cmd, export_cmd, reps: int, outputs, rows, part: str, bytecode: bool = True) -> None:
    """The (a) rows: our whole process against torch.onnx.export's, interleaved. With
    `bytecode`, ours starts from compiled bytecode, as an installed package does (see
    `bytecode_env`; theirs does already: torch's site-packages hold their bytecode)."""
    env = bytecode_env(ours_cmd, outputs) if bytecode else None
    r = compile_race(ours_cmd, export_cmd, reps, outputs=outputs, ours_env=env)
    start = "from bytecode" if bytecode else "compiling our modules from source"
    rows.append((part, f"metagenc --target onnx gpt2_small, whole process ({start}), weights embedded (min / median)",
                 f"{r['ours'][0]:.2f} / {r['ours'][1]:.2f} s, CPU {r['cpu'][0]:.2f} s, peak RSS {r['rss'][0]:.0f} MiB"))
    rows.append((part, "torch.onnx.export(dynamo=True) of the generated module, whole process",
                 f"{r['theirs'][0]:.2f} / {r['theirs'][1]:.2f} s (the export call {r['inner']:.2f} s), CPU {r['cpu'][1]:.2f} s, "
                 f"peak RSS {r['rss'][1]:.0f} MiB"))
    rows.append((part, f"speed-up, whole process ({reps} interleaved rounds)",
                 f"{r['ratio_min']:.1f}x (min), {r['ratio_median']:.1f}x (median), {r['ratio_pairwise']:.1f}x (pairwise median); "
                 f"CPU time {r['ratio_cpu']:.1f}x; goal 10x"))


def emission_vs_export(reps: int, rows, part: str = "6 onnx emit", bytecode: bool = True) -> None:
    """`emission_rows` set up on its own (for bench/run.py)."""
    from metagen.artifacts import emit_target

    tmp = tempfile.mkdtemp(prefix="mg_onnx_bench_")
    torch_py = os.path.join(tmp, "gpt2_small.py")
    with open(torch_py, "wb") as f:
        f.write(emit_target(_compile(GPT2), "torch", 0)[""])
    script = os.path.join(tmp, "export.py")
    with open(script, "w") as f:
        f.write(EXPORT_SCRIPT)
    ours, exported = os.path.join(tmp, "ours.onnx"), os.path.join(tmp, "exported.onnx")
    metagenc = os.path.join(os.path.dirname(PY), "metagenc")
    emission_rows([metagenc, GPT2, "--target", "onnx", "-o", ours], [PY, script, torch_py, exported], reps, (ours, exported), rows, part,
                  bytecode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="latency repetitions (median reported)")
    ap.add_argument("--compile-repeat", type=int, default=3, help="compile-time repetitions (best reported)")
    ap.add_argument("--skip-export", action="store_true", help="skip torch.onnx.export (needs onnxscript)")
    ap.add_argument("--parts", default="abc", help="which parts to run (default abc)")
    ap.add_argument("--no-bytecode", action="store_true", help="(a): start metagenc compiling our modules from source")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    torch.backends.cuda.matmul.allow_tf32 = False
    from metagen.artifacts import emit_target
    from metagen.backends.onnx_backend import lower_to_onnx

    rows = Table()
    tmp = tempfile.mkdtemp(prefix="mg_onnx_bench_")
    comp = _compile(GPT2)
    torch_py = os.path.join(tmp, "gpt2_small.py")
    with open(torch_py, "wb") as f:
        f.write(emit_target(comp, "torch", 0)[""])
    ours_onnx = os.path.join(tmp, "ours.onnx")
    exported_onnx = os.path.join(tmp, "exported.onnx")

    # (a) compile time
    metagenc = os.path.join(os.path.dirname(PY), "metagenc")
    script = os.path.join(tmp, "export.py")
    with open(script, "w") as f:
        f.write(EXPORT_SCRIPT)
    reps = args.compile_repeat if "a" in args.parts else 1
    ours_cmd = [metagenc, GPT2, "--target", "onnx", "-o", ours_onnx]
    export_cmd = [PY, script, torch_py, exported_onnx]
    if "a" in args.parts and not args.skip_export:
        emission_rows(ours_cmd, export_cmd, reps, (ours_onnx, exported_onnx), rows, part="(a) compile",
                      bytecode=not args.no_bytecode)
    elif "a" in args.parts:
        t_ours, _ = _time_process(ours_cmd, reps)
        rows.append(("(a) compile", "metagenc --target onnx gpt2_small (whole process, weights embedded)", f"{t_ours:.2f} s"))
    if "b" in args.parts:
        _time_process(ours_cmd, 1)
        if not args.skip_export:
            _time_process(export_cmd, 1)

    # (b) latency, batch 1 x 256
    if "b" in args.parts:
        _latencies(args, rows, comp, torch_py, ours_onnx, exported_onnx, tmp)
    if "c" in args.parts:
        _opset_choice(args, rows, comp)
    _print(rows)


def _latencies(args, rows, comp, torch_py, ours_onnx, exported_onnx, tmp) -> None:
    import torch

    from metagen.artifacts import emit_target

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from conftest import load_module

    mod = load_module(torch_py)
    ids = np.random.default_rng(0).integers(0, comp.model.config["vocab_size"], size=(1, 256)).astype(np.int64)
    feed = {"input_ids": ids}
    from metagen.generate import complete_inputs

    ours_feed = complete_inputs(comp.model, feed)  # our graph's decode inputs: empty caches, no padding
    sess = _ort_session(ours_onnx)
    rows.append(
        ("(b) latency", "our ONNX graph, onnxruntime", f"{_latency(lambda: sess.run(['logits'], ours_feed), args.repeat):.1f} ms")
    )
    if not args.skip_export:
        sess_e = _ort_session(exported_onnx)
        rows.append(
            (
                "(b) latency",
                "torch.onnx.export graph, onnxruntime",
                f"{_latency(lambda: sess_e.run(None, feed), args.repeat):.1f} ms",
            )
        )
    state = mod.init(0)
    tids = torch.from_numpy(ids)

    def torch_fwd():
        with torch.no_grad():
            state(input_ids=tids)

    rows.append(("(b) latency", "our torch module (eager, no_grad)", f"{_latency(torch_fwd, args.repeat):.1f} ms"))
    if os.path.exists(os.path.join(ROOT, "backends", "flax_backend.py")):
        try:
            flax_py = os.path.join(tmp, "gpt2_small_flax.py")
            with open(flax_py, "wb") as f:
                f.write(emit_target(comp, "flax", 0)[""])
            fmod = load_module(flax_py)
            fstate = fmod.init(0)
            rows.append(
                (
                    "(b) latency",
                    "our flax module (jitted run)",
                    f"{_latency(lambda: fmod.run(fstate, feed), args.repeat):.1f} ms",
                )
            )
        except Exception as exc:  # another engineer's backend may be mid-change
            rows.append(("(b) latency", "our flax module", f"n/a ({type(exc).__name__})"))


def _opset_choice(args, rows, comp) -> None:
    """(c) fused (opset-23 ops) vs decomposed."""
    from metagen.backends.onnx_backend import lower_to_onnx

    for label, path, ov in (("gpt2_small", GPT2, ()), ("llama ~100M", LLAMA, LLAMA_100M)):
        c = comp if path == GPT2 else _compile(path, ov)
        vocab = c.model.config["vocab_size"]
        feed_c = {"input_ids": np.random.default_rng(0).integers(0, vocab, size=(1, 256)).astype(np.int64)}
        sessions = {fused: _ort_session(lower_to_onnx(c.model, fused=fused)[""]) for fused in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for fused in (False, True):  # warm-up
            sessions[fused].run(None, feed_c)
        for _ in range(args.repeat):  # interleaved, so load changes hit both alike
            for fused in (False, True):
                t0 = time.perf_counter()
                sessions[fused].run(None, feed_c)
                times[fused].append(time.perf_counter() - t0)
        for fused in (False, True):
            name = "fused (Attention/RMSNormalization/RotaryEmbedding)" if fused else "decomposed"
            ms = statistics.median(times[fused]) * 1e3
            rows.append(("(c) opset 23", f"{label} ({c.model.param_count() / 1e6:.0f}M), {name}", f"{ms:.1f} ms"))


def _print(rows) -> None:
    import onnxruntime
    import torch

    w = max(len(r[1]) for r in rows)
    print(f"{'part':<14} {'what':<{w}}  figure")
    print("-" * (w + 30))
    for part, what, fig in rows:
        print(f"{part:<14} {what:<{w}}  {fig}")
    print(f"\nmachine: {os.cpu_count()} CPUs, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


if __name__ == "__main__":
    main()
