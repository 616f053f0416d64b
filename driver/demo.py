"""`make demo`: the tutorial, step by step, on its own example specs.

Each spec in examples/tutorial/ is validated and synthesized at full size into
demo_output/<stem>/run-*/; then the minimal spec's blueprint is shown, as the
tutorial's step 2 does, and one tiny model is run in PyTorch.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args: list[str]) -> int:
    print("$ " + " ".join(args), flush=True)
    return subprocess.call(args, cwd=ROOT)


def main() -> int:
    bindir = os.path.dirname(sys.executable)
    metagen = os.path.join(bindir, "metagen")
    failures = 0
    specs = sorted(glob.glob(os.path.join(ROOT, "examples", "tutorial", "*.yaml")))
    for spec in specs:
        rel = os.path.relpath(spec, ROOT)
        stem = os.path.splitext(os.path.basename(spec))[0]
        failures += _run([metagen, "validate", rel]) != 0
        failures += _run([metagen, "synth", rel, "--out", os.path.join("demo_output", stem)]) != 0
    minimal = sorted(glob.glob(os.path.join(ROOT, "demo_output", "step1_minimal", "run-*", "blueprint", "architecture.yaml")))
    if minimal:
        print(f"$ cat {os.path.relpath(minimal[0], ROOT)}")
        with open(minimal[0], encoding="utf-8") as fh:
            print(fh.read())
    print(f"demo: {len(specs)} tutorial specs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
