"""Shared test helpers: compile a spec and import the generated module."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def example(*parts: str) -> str:
    return os.path.join(EXAMPLES, *parts)


def load_module(path: str):
    """Import a generated file as a fresh module."""
    name = f"mg_generated_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def compile_to(tmp_path, spec: str, target: str, tiny: bool = True, **kw):
    """Compile `spec` to `target` in tmp_path; the written file's path."""
    from metagen.artifacts import emit_target
    from metagen.backends import registry
    from metagen.pipeline import compile_spec

    comp = compile_spec(spec, tiny=tiny, **kw)
    files = emit_target(comp, target, seed=0)
    out = tmp_path / (os.path.splitext(os.path.basename(spec))[0] + registry.get(target).suffix)
    for rel, data in files.items():
        (out if rel == "" else tmp_path / rel).write_bytes(data)
    return out, comp


@pytest.fixture
def compiled(tmp_path):
    def _compiled(spec: str, target: str, tiny: bool = True, **kw):
        return compile_to(tmp_path, spec, target, tiny=tiny, **kw)

    return _compiled
