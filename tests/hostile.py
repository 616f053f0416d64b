"""Hostile input shared by the robustness tests, tests/test_fuzz.py and bench/fuzz.py:
the seed specs (examples, tests/invalid, the reproducers of issue 18), the mutation
operators, odd `-D` values and output paths, one fuzz case as a command line, and the
checks every outcome must pass. Mutation draws from a `random.Random`, so hypothesis
(with a fixed seed) and the long-running bench fuzzer generate cases the same way."""

from __future__ import annotations

import ast
import contextlib
import glob
import io
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIAG = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|note): (?P<msg>.+)$")


def run_cli(fn, argv) -> tuple[int, str, str]:
    """Run a CLI entry function in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = fn(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def diagnostic_lines(stderr: str) -> list[str]:
    """The `path:line:col: severity: message` lines, without the source echo."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    diags = [ln for ln in lines if DIAG.match(ln)]
    for ln in lines:
        assert DIAG.match(ln) or ln.startswith("    "), f"stderr line is neither a diagnostic nor a source echo: {ln!r}"
    return diags


# ------------------------------------------------------------------ seeds

YAML_ALPHABET = list("abcdemnortx:-[]{},&*!|>'\"#%@` \n\t0123456789.eE+_~?\x7f\x00") + ["\u2028", "é", "∞", "<<", "\ufeff"]
MG_ALPHABET = list('metagn1.0 model"{}[]()=;:,#\n\t-+*/<>x0123456789\\') + ["import ", "model ", "metagen 1.0\n", "∞"]
INTERESTING = [
    "-1", "0", "1e309", "-5M", "1e30", "999999999k", "null", "~", "[]", "{}", "true", "0x1F", "∞", "nan", ".inf",
    '"', "'", "&a", "*a", "!!binary aGk=", "!!python/name:os.system", "12345678901234567890", "[text]", "{a: 1}",
    "'8xA100'", "5 days", "2.5", "-", ":", "? x", "|", "\"\\u0000\"",
    # issue 18's reproducers
    "2001-02-30", "!!int abc", "!!float x", "!!bool maybe", "!!timestamp x", "2001-02-03 10:00:00 +25:00",
    '"\\U00110000"', '"\\ud800"', "9" * 310, "9" * 4301, "010", "1:30", '"1e300 days"', "nan", '"8xFOO"',
    '"8xA100x2"', '"0.1B"', '"0.1 tokens"', '"１２"', '"٣"', '"1G"', '"\\e[31mred\\a"',
    '\'"""; import os; os.system("touch PWNED"); """\'',
]
DEFINE_KEYS = [
    "name", "description", "architecture.layers", "architecture.hidden_size", "architecture.heads",
    "architecture.family", "constraints.parameter_budget.max", "constraints.context_window",
    "constraints.memory_budget", "modality.inputs", "training.compute.duration", "training.compute.hardware",
    "training.data.size", "reproducibility.seed", "architecture.nonsense", "x.y.z",
]


def _minimal(ext: str, **values: str) -> str:
    v = {"name": '"m"', "budget": '"5M"', "extra": ""} | values
    if ext == ".mg":
        return (f'metagen 1.0\n\nmodel {v["name"]} {{\n  modality {{\n    inputs [text]\n    outputs [text]\n  }}\n'
                f'  constraints {{\n    parameter_budget {{ max {v["budget"]} }}\n  }}\n{v["extra"]}}}\n')
    return (f'metagen_version: "1.0"\nname: {v["name"]}\nmodality:\n  inputs: ["text"]\n  outputs: ["text"]\n'
            f'constraints:\n  parameter_budget:\n    max: {v["budget"]}\n{v["extra"]}')


def reproducers() -> list[tuple[str, str]]:
    """(extension, text) for each spec-file reproducer of issue 18."""
    training = 'training:\n  objective: ["autoregressive"]\n  data:\n    size: {size}\n  compute:\n    hardware: {hw}\n    duration: {dur}\n'
    out = []
    for ext in (".yaml", ".mg"):
        out.append((ext, _minimal(ext, name='\'"""; import os; os.system("touch PWNED"); """\'')))
        out.append((ext, _minimal(ext, name='"a\\x1b[31mred\\x07"' if ext == ".yaml" else '"a\x1b[31mred\x07"')))
        out.append((ext, _minimal(ext, budget="9" * 310)))
        out.append((ext, _minimal(ext, budget="9" * 4301)))
        out.append((ext, _minimal(ext, budget="010")))
    for value in ("2001-02-30", "!!int abc", "!!float x", "!!bool maybe", "!!timestamp x", '"\\U00110000"', '"\\ud800"'):
        out.append((".yaml", _minimal(".yaml", extra=f"description: {value}\n")))
    for size, hw, dur in (('"100B tokens"', '"8xA100"', '"1e300 days"'), ('"0.1 tokens"', "nan", '"5 days"'),
                          ('"1M tokens"', '"8xFOO"', '"5 days"'), ('"1M tokens"', '"8xA100x2"', '"１２ days"')):
        out.append((".yaml", _minimal(".yaml", extra=training.format(size=size, hw=hw, dur=dur))))
    out.append((".yaml", _minimal(".yaml", budget='"1G"', extra='  memory_budget: "0.1B"\n')))
    out.append((".json", '{"metagen_version": "1.0", "name": "\\ud83d", "modality": {"inputs": ["text"], "outputs": ["text"]}}'))
    return out


def _read_all(patterns: list[str]) -> list[tuple[str, str]]:
    out = []
    for pattern in patterns:
        for p in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            with open(p, "rb") as fh:
                out.append((os.path.splitext(p)[1], fh.read().decode("utf-8", "surrogateescape")))
    return out


def example_specs() -> list[tuple[str, str]]:
    """(extension, text) of every example spec."""
    return _read_all(["examples/**/*.yaml", "examples/**/*.mg"])


def seed_specs() -> list[tuple[str, str]]:
    """(extension, text): every example (twice: most accepted specs, whose generated
    code is checked, come from them), every tests/invalid case, the reproducers."""
    return example_specs() * 2 + _read_all(["tests/invalid/*.yaml", "tests/invalid/*.mg"]) + reproducers()


# ------------------------------------------------------------------ mutation


def random_text(rng: random.Random, alphabet: list[str], max_size: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_size)))


def mutate(rng: random.Random, text: str, ext: str = ".yaml", rounds: int | None = None) -> str:
    """`text` after 1-4 random edits: a span deleted, tokens inserted, a value replaced
    by an interesting one, a number made huge, a line duplicated or swapped, a cut."""
    alphabet = MG_ALPHABET if ext == ".mg" else YAML_ALPHABET
    for _ in range(rng.randint(1, 4) if rounds is None else rounds):
        kind = rng.choice(["delete", "insert", "value", "value", "number", "dupline", "swaplines", "truncate"])
        i = rng.randint(0, max(len(text) - 1, 0))
        lines = text.splitlines(keepends=True)
        if kind == "delete":
            text = text[:i] + text[i + rng.randint(1, 12):]
        elif kind == "insert":
            text = text[:i] + random_text(rng, alphabet, 12) + text[i:]
        elif kind == "value" and lines:
            j = rng.randrange(len(lines))
            value = rng.choice(INTERESTING)
            if ext == ".mg":
                m = re.match(r"(\s*[A-Za-z_]+\s+)\S.*", lines[j])
                lines[j] = (m.group(1) if m else "") + value + "\n"
            else:
                m = re.match(r"(\s*-?\s*[A-Za-z_]+:\s*)", lines[j])
                lines[j] = (m.group(1) if m else "") + value + "\n"
            text = "".join(lines)
        elif kind == "number":
            nums = list(re.finditer(r"\d+", text))
            if nums:
                m = rng.choice(nums)
                text = text[:m.start()] + rng.choice(["0", "-1", "9" * 310, "9" * 4301, "1" + "0" * 19, "010"]) + text[m.end():]
        elif kind == "dupline" and lines:
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])
            text = "".join(lines)
        elif kind == "swaplines" and len(lines) > 1:
            j = rng.randrange(len(lines) - 1)
            lines[j], lines[j + 1] = lines[j + 1], lines[j]
            text = "".join(lines)
        elif kind == "truncate":
            text = text[:i]
    return text


def random_defines(rng: random.Random) -> list[str]:
    out = []
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
        value = rng.choice(INTERESTING + ["4", "2", "64", "text", "[text, image]", "transformer", "1e300 days"])
        out += ["-D", f"{rng.choice(DEFINE_KEYS)}={value.strip(chr(39))}"]
    return out


# ------------------------------------------------------------------ one case


# output paths (relative to the case's folder): ones a build may well use, and ones
# that must be refused (a folder, under a file, a FIFO, too long, a newline, ...)
GOOD_OUTPUTS = ["out.py", "sub/out.py", "a b/o u t.py", "ü∞/☃.py", "link.py", "$x=1#.py", "-"]
BAD_OUTPUTS = [
    "semi;colon.py", "pct%.py", "dir", "file/x.py", "fifo", "x" * 300 + ".py", "new\nline.py",
    "deep/" + "d/" * 40 + "x.py", "out/", "./", "-x.py",
]


def prepare_workdir(work: str) -> None:
    """The fixtures odd outputs point at, all inside `work`: a folder, a file, a symlink
    to a file, a FIFO, and the .mg files the examples import."""
    os.makedirs(os.path.join(work, "dir"), exist_ok=True)
    with open(os.path.join(work, "file"), "w") as fh:
        fh.write("a file\n")
    with open(os.path.join(work, "target.py"), "w") as fh:
        fh.write("# the symlink's target\n")
    if not os.path.lexists(os.path.join(work, "link.py")):
        os.symlink("target.py", os.path.join(work, "link.py"))
    if not os.path.lexists(os.path.join(work, "fifo")) and hasattr(os, "mkfifo"):
        os.mkfifo(os.path.join(work, "fifo"))
    for p in glob.glob(os.path.join(ROOT, "examples", "presets", "*.mg")):
        shutil.copy(p, work)


@dataclass
class Case:
    """One command line, run with `work` as the current folder. `program` is
    "metagen" or "metagenc"; every path in `argv` is relative to `work`."""

    program: str
    argv: list[str]
    spec_name: str
    spec_bytes: bytes
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        words = [a if re.fullmatch(r"[-\w./=]+", a) else repr(a) for a in self.argv]
        env = "".join(f"{k}={v} " for k, v in self.env.items())
        return f"{env}{self.program} {' '.join(words)}"


COMMANDS = ["validate", "synth", "synth", "torch", "flax", "ir", "onnx", "convert", "fmt"]


def make_case(rng: random.Random, seeds: list[tuple[str, str]], commands: list[str] = COMMANDS, mutation_rate: float = 0.6) -> Case:
    """A random command line over a seed spec, mutated with probability `mutation_rate`."""
    ext, text = rng.choice(seeds)
    if rng.random() < mutation_rate:
        text = mutate(rng, text, ext)
    spec = "spec" + ext
    data = text.encode("utf-8", "surrogatepass")
    defs = random_defines(rng)
    out = rng.choice(GOOD_OUTPUTS if rng.random() < 0.6 else BAD_OUTPUTS)
    command = rng.choice(commands)
    if command == "validate":
        case = Case("metagen", ["validate", spec, *defs] + (["--tiny"] if rng.random() < 0.5 else []), spec, data)
    elif command == "synth":
        run_id = rng.choice([[], [], ["--run-id", "r"], ["--run-id", "file"], ["--run-id", "../up"], ["--run-id", "dir"]])
        out_dir = rng.choice(["runs", "runs", "runs", "a b", "ü", "file", "fifo", "dir"])
        case = Case("metagen", ["synth", spec, "--tiny", "--out", out_dir, *run_id, *defs], spec, data)
    elif command in ("torch", "flax", "ir", "onnx"):
        extra = rng.choice([[], ["-MD"], ["-MF", rng.choice(["deps.d", "dir", "fifo", "a b.d"])]])
        case = Case("metagenc", [spec, "--target", command, "--tiny", "-o", out, *extra, *defs], spec, data)
    elif command == "convert":
        case = Case("metagen", ["convert", spec, "--to", rng.choice(["mg", "yaml"]), "-o", out], spec, data)
    else:
        case = Case("metagen", ["fmt", spec] + (["--check"] if rng.random() < 0.3 else []), spec, data)
    if rng.random() < 0.2:
        case.env = {"LC_ALL": "C", "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"}
    return case


def write_spec(case: Case, work: str) -> None:
    with open(os.path.join(work, case.spec_name), "wb") as fh:
        fh.write(case.spec_bytes)


# ------------------------------------------------------------------ checks


def _strict_json(data: bytes) -> None:
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    json.loads(data, parse_constant=refuse)


def check_outcome(case: Case, work: str, code, stdout: bytes, stderr: bytes) -> list[str]:
    """What is wrong with one run's outcome (empty: nothing). No traceback, exit code
    0, 1 or 2, stderr made of diagnostics, an error behind every exit 1, and when the
    command succeeded: generated Python parses, JSON is strict, stdout is UTF-8."""
    problems = []
    err = stderr.decode("utf-8", "replace")
    if "Traceback (most recent call last)" in err or "Exception ignored" in err:
        problems.append("traceback: " + err.strip().splitlines()[-1][:300])
    if code not in (0, 1, 2):
        problems.append(f"exit code {code}")
    if code in (0, 1) and not problems:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        bad = [ln for ln in lines if not (DIAG.match(ln) or ln.startswith("    ") or ln.endswith(": would reformat"))]
        if bad:
            problems.append(f"stderr line is not a diagnostic: {bad[0][:200]!r}")
        if code == 1 and not any(DIAG.match(ln) and DIAG.match(ln)["sev"] == "error" for ln in lines) and "would reformat" not in err:
            problems.append("exit 1 without an error diagnostic")
    try:
        stdout.decode("utf-8")
    except UnicodeDecodeError:
        problems.append("stdout is not UTF-8")
    if code == 0:
        try:
            problems += _check_outputs(case, work, stdout)
        except OSError as exc:  # an output the command said it wrote cannot be read
            problems.append(f"output unreadable after exit 0: {exc}")
    if os.path.exists(os.path.join(work, "PWNED")):
        problems.append("generated code ran: PWNED exists")
    return problems


def _check_outputs(case: Case, work: str, stdout: bytes) -> list[str]:
    problems = []
    argv = case.argv
    paths = []
    if case.program == "metagenc" and argv[argv.index("--target") + 1] in ("torch", "flax"):
        out = argv[argv.index("-o") + 1]
        if out == "-":
            try:
                ast.parse(stdout.decode("utf-8"))
            except SyntaxError as exc:
                problems.append(f"generated Python on stdout does not parse: {exc}")
        else:
            paths.append(os.path.join(work, out))
    if argv[0] == "synth":
        for dirpath, _, names in os.walk(work):
            paths += [os.path.join(dirpath, n) for n in names if n.endswith((".py", ".json"))]
    for p in paths:
        if os.path.islink(p) and not os.path.exists(p):
            continue
        with open(p, "rb") as fh:
            data = fh.read()
        try:
            if p.endswith(".json"):
                _strict_json(data)
            elif os.path.basename(p) != "target.py":
                ast.parse(data.decode("utf-8"), filename=p)
        except (SyntaxError, ValueError) as exc:
            problems.append(f"{os.path.relpath(p, work)}: {type(exc).__name__}: {exc}")
    return problems
