"""spec_resolved.yaml says everything: compiling it gives the very same model."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

from conftest import EXAMPLES
from metagen.artifacts import _yaml, resolved_spec
from metagen.ir.printer import print_model
from metagen.pipeline import compile_spec

SPECS = sorted(glob.glob(os.path.join(EXAMPLES, "*", "*.yaml")))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: os.path.relpath(p, EXAMPLES))
def test_resolved_spec_compiles_to_the_same_model(spec, tmp_path):
    comp = compile_spec(spec)
    path = tmp_path / "spec_resolved.yaml"
    path.write_bytes(_yaml(resolved_spec(comp)))
    again = compile_spec(str(path))
    assert print_model(again.model) == print_model(comp.model)
    resolved = yaml.safe_load(path.read_text())
    # every default is written out
    assert resolved["constraints"]["parameter_budget"]["min"] is not None
    assert "memory_budget" in resolved["constraints"] and "device" in resolved["constraints"]
    assert resolved["architecture"]["family"]


@pytest.mark.parametrize("tiny", [False, True])
def test_resolved_spec_states_the_classes_the_model_has(tiny):
    """step5_image writes no class count (the default, 1000, is used) and --tiny
    shrinks it to 10: spec_resolved.yaml says what was built."""
    comp = compile_spec(os.path.join(EXAMPLES, "tutorial", "step5_image.yaml"), tiny=tiny)
    assert comp.ctx.arch["num_classes"] == (10 if tiny else 1000)
    assert resolved_spec(comp)["task"]["num_classes"] == (10 if tiny else 1000)
