"""Run specs written in the original MetaGen vocabulary through the compiler and
print docs/migrating.md's table: for each spec, whether `metagen validate` accepts
it, the family it compiles to, whether `metagen synth --tiny` writes every backend,
whether `metagen verify --tiny` passes, and its first warning.

    python bench/seed_examples.py DIR            # DIR: a folder of *.yaml specs
    METAGEN_SEED_EXAMPLES=DIR python bench/seed_examples.py

The specs are read where they are (never copied); each command runs in its own
process, as a user would run it, with a temporary output folder.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
import time

METAGEN = [sys.executable, "-c", "import sys; from metagen.cli import console_main; sys.argv[0] = \"metagen\"; sys.exit(console_main())"]


def run(args: list[str], timeout: int = 600) -> tuple[int, str]:
    try:
        p = subprocess.run(METAGEN + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return p.returncode, p.stdout + p.stderr


def first(pattern: str, text: str) -> str:
    m = re.search(pattern, text, re.M)
    return m.group(1).strip() if m else ""


def short(text: str, n: int = 110) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= n else text[: n - 3] + "..."


def main(argv: list[str]) -> int:
    folder = argv[1] if len(argv) > 1 else os.environ.get("METAGEN_SEED_EXAMPLES", "")
    if not folder or not os.path.isdir(folder):
        print(__doc__, file=sys.stderr)
        return 2
    specs = sorted(glob.glob(os.path.join(folder, "*.yaml")))
    rows = ["| spec | validate | family | synth --tiny (all backends) | verify --tiny | first warning |", "| --- | --- | --- | --- | --- | --- |"]
    passed = 0
    for spec in specs:
        t0 = time.time()
        code_v, out_v = run(["validate", spec])
        family = first(r"^\s*family:\s*(\S+)", out_v) if code_v == 0 else ""
        warning = first(r"warning: (.*)$", out_v)
        error = first(r"error: (.*)$", out_v)
        if code_v == 0:
            with tempfile.TemporaryDirectory() as tmp:
                code_s, out_s = run(["synth", "--tiny", spec, "--out", tmp])
            code_t, out_t = run(["verify", "--tiny", spec])
        else:
            code_s = code_t = None
            out_s = out_t = ""
        ok = code_v == 0 and code_s == 0 and code_t == 0
        passed += ok
        mark = {None: "-", 0: "pass"}
        rows.append(
            f"| {os.path.basename(spec)} | {'pass' if code_v == 0 else 'FAIL: ' + short(error)} | {family or '-'} "
            f"| {mark.get(code_s, 'FAIL: ' + short(first(r'error: (.*)$', out_s) or out_s.strip()[-100:]))} "
            f"| {mark.get(code_t, 'FAIL: ' + short(first(r'(?:error|FAIL)[: ](.*)$', out_t) or out_t.strip()[-100:]))} "
            f"| {short(warning) or '-'} |"
        )
        print(f"{os.path.basename(spec)}: validate {code_v}, synth {code_s}, verify {code_t} ({time.time() - t0:.0f}s)", file=sys.stderr)
    print("\n".join(rows))
    print(f"\n{passed} of {len(specs)} pass validate, synth --tiny and verify --tiny.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
