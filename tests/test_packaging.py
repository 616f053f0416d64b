"""The package as a user gets it: `pip wheel .` and the sdist hold every module of the
source tree, and the wheel, installed into a fresh virtualenv with only the core
dependencies (no torch, jax or onnx), validates a spec and compiles it to every
Python/IR target, and asked for ONNX says which extra to install. The editable install the other tests use hides a missing subpackage
or package-data file; this test does not.

Needs a package index (the core dependencies and the build backend come from it, or
from pip's cache); it writes only under tmp_path (the source tree is copied there, so
the build's egg-info and build/ folders land in the copy)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

from conftest import ROOT, example

PYPROJECT = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
TOP_FILES = ("pyproject.toml", "setup.py", "README.md")
FRAMEWORKS = ("torch", "jax", "flax", "onnx", "onnxruntime")
# Every target whose compiler is pure Python; onnx needs the onnx package.
PURE_TARGETS = ("ir", "torch", "flax", "numpy")
SPEC = example("reference", "llama2_7b.yaml")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _module_files() -> set[str]:
    """Each file the wheel should hold from the source tree, as 'metagen/frontend/dsl.py':
    the .py and .lark files of every folder that is a package (has an __init__.py all
    the way up to its mapped folder)."""
    out = set()
    for package, folder in PACKAGE_DIR.items():
        base = Path(ROOT, folder)
        for path in base.rglob("*"):
            rel = path.relative_to(base)
            if path.suffix in (".py", ".lark") and all((base / d / "__init__.py").exists() for d in rel.parents):
                out.add("/".join([*package.split("."), *rel.parts]))
    return out


def _copy_source(dst: Path) -> None:
    for name in TOP_FILES:
        shutil.copy2(Path(ROOT, name), dst / name)
    for folder in PACKAGE_DIR.values():
        shutil.copytree(Path(ROOT, folder), dst / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def test_wheel_installs_and_compiles_without_frameworks(tmp_path):
    src, dist, out = tmp_path / "src", tmp_path / "dist", tmp_path / "out"
    for d in (src, dist, out):
        d.mkdir()
    _copy_source(src)
    expected = _module_files()
    assert {"metagen/frontend/dsl.py", "metagen/compiler/families/base.py", "metagen/grammar/metagen.lark"} <= expected

    # The wheel, built as `pip wheel .` builds it (isolated build environment).
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)])
    (wheel,) = dist.glob("*.whl")
    missing = expected - set(zipfile.ZipFile(wheel).namelist())
    assert not missing, f"not in the wheel: {sorted(missing)}"

    # The sdist: the same files under their source folders, plus what builds it.
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"], cwd=src)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    by_source = {p.replace(pkg.replace(".", "/"), PACKAGE_DIR[pkg], 1) for p in expected for pkg in [_package_of(p)]}
    missing = (by_source | set(TOP_FILES)) - in_sdist
    assert not missing, f"not in the sdist: {sorted(missing)}"

    # A fresh virtualenv with the core dependencies only.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)])
    for name in FRAMEWORKS:
        found = _run([str(python), "-c", f"import importlib.util as u; print(u.find_spec({name!r}) is not None)"])
        assert found.stdout.strip() == "False", f"{name} is installed in the fresh venv"

    bin_dir = env_dir / "bin"
    validated = _run([str(bin_dir / "metagen"), "validate", SPEC], cwd=out)
    assert validated.stdout.startswith("OK llama2_7b"), validated.stdout

    help_text = _run([str(bin_dir / "metagenc"), "--help"], cwd=out).stdout
    choices = re.search(r"--target \{([^}]*)\}", help_text)
    assert choices, help_text
    targets = [t for t in PURE_TARGETS if t in choices.group(1).split(",")]
    assert {"ir", "torch", "flax"} <= set(targets), help_text
    for target in targets:
        path = out / f"model_{target}.{'mgir' if target == 'ir' else 'py'}"
        _run([str(bin_dir / "metagenc"), "--target", target, "--tiny", SPEC, "-o", str(path)], cwd=out)
        text = path.read_text()
        if target == "ir":
            assert text.startswith("mgir 1\nmodel Llama27b {"), text[:80]
        else:
            # Valid Python with the module API; running it needs its framework.
            names = {t.id for node in ast.parse(text).body if isinstance(node, ast.Assign) for t in node.targets}
            assert {"Model", "CONFIG", "INPUTS"} <= names, (target, sorted(names))

    # ONNX needs the onnx package: without it, one line naming the extra, no traceback.
    cmd = [str(bin_dir / "metagenc"), "--target", "onnx", "--tiny", SPEC, "-o", str(out / "m.onnx")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=out)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "pip install 'metagen[onnx]'" in res.stderr, res.stderr
    assert not (out / "m.onnx").exists()


def _package_of(installed: str) -> str:
    """The longest package in PACKAGE_DIR that `installed` (a wheel path) lies in."""
    parts = installed.split("/")
    for n in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:n])
        if name in PACKAGE_DIR:
            return name
    raise AssertionError(installed)
