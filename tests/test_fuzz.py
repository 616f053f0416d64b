"""Whole-command fuzzing, the CI-sized slice of bench/fuzz.py: mutated examples and
issue 18's reproducers, through both frontends, with odd `-D` values and odd output
paths, run by every command that writes something. Every outcome passes
`hostile.check_outcome`: no traceback, exit 0/1/2, diagnostics only on stderr, and
for accepted specs generated Python that parses and strict JSON.

Derandomized (fixed examples, no database) so a CI failure reproduces; each case runs
in its own folder under tmp_path. `python bench/fuzz.py --minutes 30` runs the same
generator for as long as asked, each case in a subprocess with limits."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import traceback

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hostile import INTERESTING, Case, check_outcome, example_specs, make_case, prepare_workdir, reproducers, run_cli, seed_specs, write_spec
from metagen.cli import main, metagenc_main

SEEDS = seed_specs()
EXAMPLES = example_specs()
CASE_SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def run_case(case: Case, tmp_path) -> list[str]:
    work = tempfile.mkdtemp(dir=tmp_path)
    prepare_workdir(work)
    write_spec(case, work)
    with contextlib.chdir(work):
        try:
            code, out, err = run_cli(main if case.program == "metagen" else metagenc_main, case.argv)
        except Exception:  # reported like the traceback a user would see
            code, out, err = 70, "", traceback.format_exc()
    return check_outcome(case, work, code, out.encode("utf-8"), err.encode("utf-8"))


@CASE_SETTINGS
@given(st.integers(0, 2**32 - 1))
def test_fuzz_commands_never_crash(tmp_path, seed):
    case = make_case(random.Random(seed), SEEDS)
    assert run_case(case, tmp_path) == [], case.describe()


@settings(CASE_SETTINGS, max_examples=8)
@given(st.integers(0, 2**32 - 1))
def test_fuzz_example_with_hostile_text_compiles_to_python_that_parses(tmp_path, seed):
    """Unmutated examples with hostile `-D name=` / `-D description=` values (most are
    accepted: both fields are free text), through `metagen synth --tiny`: every
    model.py and train.py must parse and every JSON file be strict."""
    rng = random.Random(seed)
    ext, text = rng.choice(EXAMPLES)
    defines = [w for _ in range(rng.randint(1, 2)) for w in ("-D", f"{rng.choice(['name', 'description'])}={rng.choice(INTERESTING)}")]
    case = Case("metagen", ["synth", "spec" + ext, "--tiny", "--out", "runs", *defines], "spec" + ext, text.encode("utf-8"))
    assert run_case(case, tmp_path) == [], case.describe()


@pytest.mark.parametrize("index", range(len(reproducers())))
def test_reproducers_of_issue_18_never_crash(tmp_path, index):
    """`synth` validates first, so a rejected reproducer costs a validate."""
    ext, text = reproducers()[index]
    case = Case("metagen", ["synth", "spec" + ext, "--tiny", "--out", "runs"], "spec" + ext, text.encode("utf-8", "surrogatepass"))
    assert run_case(case, tmp_path) == [], case.describe()
