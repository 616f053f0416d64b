"""Long-running fuzzer for the whole command line (issue 18); not a test.

    .venv/bin/python bench/fuzz.py --minutes 10 [--seed 0] [--jobs 1] [--timeout 60] [--memory-mb 2048]
    .venv/bin/python bench/fuzz.py --long            # 30 minutes
    .venv/bin/python bench/fuzz.py --seed 0 --case 137 [--keep]   # rerun one case, print its command

Cases come from tests/hostile.py, the generator tests/test_fuzz.py uses: the examples,
tests/invalid and issue 18's reproducers, mutated (both frontends), with odd `-D`
values and odd output paths, run as `metagen validate|synth|convert|fmt` or
`metagenc --target torch|flax|ir|onnx`. Case N of seed S is always the same case, as
long as the seed specs (examples, tests/invalid) are the same.

Each case runs the installed console script in a subprocess, in its own folder under a
temporary folder this program creates and removes (every output path is relative to
it), with limits: address space (2 x --memory-mb), CPU time, file size. A case fails
when `hostile.check_outcome` finds a problem (traceback, exit code outside {0, 1, 2},
stderr that is not diagnostics, generated Python that does not parse, JSON that is
not strict), or when it runs past --timeout seconds or its peak RSS exceeds
--memory-mb. Failures are grouped by signature (exception and innermost frame) and
one reproducer per group is kept in the failures folder given at the end.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from hostile import Case, check_outcome, make_case, prepare_workdir, seed_specs, write_spec  # noqa: E402

BIN = os.path.dirname(sys.executable)


def case_for(seed: int, index: int, seeds) -> Case:
    return make_case(random.Random(f"{seed}:{index}"), seeds)


def _limits(memory_mb: int, timeout: float):
    def apply():
        soft = memory_mb * 2 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
        cpu = int(timeout) + 5
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, 1 << 30))

    return apply


class Running:
    def __init__(self, index: int, case: Case, work: str, args):
        self.index, self.case, self.work = index, case, work
        prepare_workdir(work)
        write_spec(case, work)
        env = dict(os.environ)
        for k in ("LC_ALL", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"):
            env.pop(k, None)
        env.update(case.env)
        self.out = open(os.path.join(work, ".stdout"), "w+b")
        self.err = open(os.path.join(work, ".stderr"), "w+b")
        import subprocess

        self.proc = subprocess.Popen(
            [os.path.join(BIN, case.program), *case.argv], cwd=work, env=env, stdin=subprocess.DEVNULL,
            stdout=self.out, stderr=self.err, preexec_fn=_limits(args.memory_mb, args.timeout), start_new_session=True,
        )
        self.start = time.perf_counter()
        self.timed_out = False

    def poll(self, timeout: float):
        """(exit code, rusage) once finished, else None; kills the case past `timeout`."""
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            if time.perf_counter() - self.start > timeout and not self.timed_out:
                self.timed_out = True
                os.killpg(self.proc.pid, signal.SIGKILL)
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.elapsed = time.perf_counter() - self.start
        return self.proc.returncode, usage

    def outputs(self) -> tuple[bytes, bytes]:
        data = []
        for fh in (self.out, self.err):
            fh.seek(0)
            data.append(fh.read())
            fh.close()
        os.unlink(os.path.join(self.work, ".stdout"))
        os.unlink(os.path.join(self.work, ".stderr"))
        return data[0], data[1]


def signature(problem: str, stderr: bytes) -> str:
    """Failures with one cause share a signature: the exception and its innermost frame."""
    if problem.startswith("traceback"):
        frames = re.findall(r'File "([^"]+)", line (\d+)', stderr.decode("utf-8", "replace"))
        where = f"{os.path.relpath(frames[-1][0], ROOT)}:{frames[-1][1]}" if frames else "?"
        exc = problem.split(":", 2)[1].strip() if problem.count(":") >= 2 else problem
        return f"{exc} at {where}"
    return re.sub(r"\d+", "N", problem)[:160]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--long", action="store_true", help="run 30 minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    p.add_argument("--memory-mb", type=int, default=2048, help="peak RSS allowed per case")
    p.add_argument("--case", type=int, help="run only case N (and print its command)")
    p.add_argument("--keep", action="store_true", help="keep every case's folder")
    p.add_argument("--report", help="write the figures as JSON here")
    args = p.parse_args(argv)
    minutes = 30.0 if args.long else args.minutes
    seeds = seed_specs()
    root = tempfile.mkdtemp(prefix="metagen-fuzz-")
    failures_dir = os.path.join(root, "failures")
    deadline = time.perf_counter() + minutes * 60
    indices = iter([args.case] if args.case is not None else range(10**12))
    running: list[Running] = []
    stats = collections.Counter()
    groups: dict[str, list] = {}
    peak_rss_mb = max_elapsed = 0.0
    t0 = time.perf_counter()
    print(f"fuzzing for {minutes:g} min, seed {args.seed}, {args.jobs} job(s), {len(seeds)} seed specs; work in {root}", flush=True)
    try:
        while True:
            while len(running) < args.jobs and (args.case is not None or time.perf_counter() < deadline):
                i = next(indices, None)
                if i is None:
                    break
                case = case_for(args.seed, i, seeds)
                if args.case is not None:
                    print(case.describe())
                running.append(Running(i, case, os.path.join(root, f"case-{i}"), args))
            if not running:
                break
            time.sleep(0.01)
            for r in list(running):
                done = r.poll(args.timeout)
                if done is None:
                    continue
                running.remove(r)
                code, usage = done
                stdout, stderr = r.outputs()
                rss_mb = usage.ru_maxrss / 1024
                peak_rss_mb, max_elapsed = max(peak_rss_mb, rss_mb), max(max_elapsed, r.elapsed)
                try:
                    problems = check_outcome(r.case, r.work, code, stdout, stderr)
                except Exception as exc:  # a bug of the checker is reported, not fatal
                    problems = [f"checker failed: {exc!r}"]
                if r.timed_out:
                    problems.append(f"ran past {args.timeout:g} s")
                if rss_mb > args.memory_mb:
                    problems.append(f"peak RSS {rss_mb:.0f} MB > {args.memory_mb} MB")
                stats["cases"] += 1
                stats[f"exit {code}"] += 1
                stats[r.case.argv[0] if r.case.program == "metagen" else "metagenc " + r.case.argv[2]] += 1
                if problems:
                    stats["failed"] += 1
                    sig = signature(problems[0], stderr)
                    if sig not in groups:
                        keep = os.path.join(failures_dir, f"case-{r.index}")
                        os.makedirs(failures_dir, exist_ok=True)
                        shutil.move(r.work, keep)
                        with open(os.path.join(keep, "command.txt"), "w", encoding="utf-8") as fh:
                            fh.write(f"{r.case.describe()}\n\n{'; '.join(problems)}\n\n{stderr.decode('utf-8', 'replace')[-4000:]}")
                        groups[sig] = [r.index, r.case.describe(), problems, 0]
                        print(f"FAIL case {r.index}: {r.case.describe()[:300]}\n    {problems[0][:300]}", flush=True)
                    groups[sig][3] += 1
                if not args.keep and os.path.exists(r.work):
                    shutil.rmtree(r.work, ignore_errors=True)
                if stats["cases"] % 100 == 0:
                    print(f"  {stats['cases']} cases, {stats['failed']} failed, {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        for r in running:
            os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
    wall = time.perf_counter() - t0
    report = {
        "seed": args.seed, "minutes": minutes, "jobs": args.jobs, "wall_s": round(wall, 1), "cases": stats["cases"],
        "failed": stats["failed"], "distinct_failures": len(groups), "peak_rss_mb": round(peak_rss_mb),
        "slowest_case_s": round(max_elapsed, 2),
        "by_exit_code": {k: v for k, v in sorted(stats.items()) if k.startswith("exit")},
        "by_command": {k: v for k, v in sorted(stats.items()) if not k.startswith(("exit", "cases", "failed"))},
        "failures": [{"signature": s, "case": g[0], "command": g[1], "problems": g[2], "count": g[3]} for s, g in groups.items()],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}, indent=1))
    for s, g in groups.items():
        print(f"{g[3]:5d} x {s}\n        e.g. case {g[0]}: {g[1][:200]}")
    if groups:
        print(f"reproducers kept in {failures_dir}")
    elif not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
