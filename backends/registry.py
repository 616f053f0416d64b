"""Every backend, one record each: the one list the CLI, synth, the spec schema,
golden files, `metagen verify` and the tests read.

A record names its code by "module:function" (as packaging entry points do) and
imports it on first use, so reading the registry imports no framework and no code
generator: the schema lists the targets without loading black, torch or onnx.

Adding a backend is its module under `backends/` plus one `register(Backend(...))`
below (see docs/backends.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class GoldenVariant:
    """A file kept under `golden/<spec stem>/` for every golden spec."""

    filename: str
    tiny: bool = True
    only_full_ir: bool = False  # only for specs that keep their full-size IR
    render: str | None = None  # "module:function", files -> bytes; None: the main file as is


@dataclass(frozen=True)
class Backend:
    name: str  # the `--target` and `outputs.targets` value
    doc: str
    suffix: str  # metagenc's default output: <spec stem><suffix>
    lowering: str  # "module:function"; text backends: Model -> str, binary: see `lower`
    synth_path: str  # the main file's path in a `metagen synth` run folder
    binary: bool = False
    takes_weights: bool = False  # embeds given weights (`metagenc --weights`)
    runner: str | None = None  # "module:function" that `metagen verify` runs its output with
    training: str | None = None  # "module:function" emitting the training program, if any
    goldens: tuple[GoldenVariant, ...] = ()
    reference: bool = False  # the semantics every other backend is compared with

    @property
    def module(self) -> str:
        """The module that implements the lowering."""
        return self.lowering.partition(":")[0]

    def lower(
        self,
        model,
        seed: int = 0,
        weights: dict | None = None,
        data_name: str = "model.onnx.data",
        stream: bool = False,
        precision: str = "fp32",
    ) -> dict:
        """Files keyed by a name relative to the output's folder ('' = the main file; a
        binary backend may add side files, e.g. ONNX external data named `data_name`).
        A binary backend's function takes `(model, weights=, seed=, data_name=, stream=,
        precision=)` (see metagen.precision);
        with `stream` a large file may come as an `outputs.Streamed` instead of bytes
        (for callers that write it: `outputs.write_files`/`write_tree` take both)."""
        fn = resolve(self.lowering)
        if self.binary:
            return fn(model, weights=weights, seed=seed, data_name=data_name, stream=stream, precision=precision)
        return {"": fn(model).encode("utf-8")}


def resolve(ref: str) -> Callable[..., Any]:
    """The object a "module:attribute" reference names (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in BACKENDS:
        raise ValueError(f"backend '{backend.name}' registered twice")
    BACKENDS[backend.name] = backend
    return backend


def get(name: str) -> Backend:
    return BACKENDS[name]


def names() -> tuple[str, ...]:
    """Every target, in registration order (the order of columns, files and lists)."""
    return tuple(BACKENDS)


def reference() -> Backend:
    """The backend `metagen verify` compares the others with: the one marked
    `reference`, else the first that can be run."""
    runnable = [b for b in BACKENDS.values() if b.runner]
    return next((b for b in runnable if b.reference), runnable[0])


register(
    Backend(
        "ir",
        "The typed graph IR as text (parses back with metagen.ir.parser).",
        suffix=".mgir",
        lowering="metagen.ir.printer:print_model",
        synth_path="ir/model.mgir",
        goldens=(GoldenVariant("model.mgir"), GoldenVariant("model_full.mgir", tiny=False, only_full_ir=True)),
    )
)
register(
    Backend(
        "torch",
        "A standalone PyTorch module.",
        suffix=".py",
        lowering="metagen.backends.torch_backend:lower_to_torch",
        synth_path="code/torch/model.py",
        runner="metagen.verify:run_torch",
        training="metagen.backends.train_torch:lower_training_torch",
        goldens=(GoldenVariant("torch_model.py"),),
    )
)
register(
    Backend(
        "flax",
        "A standalone JAX/Flax (nnx) module.",
        suffix="_flax.py",
        lowering="metagen.backends.flax_backend:lower_to_flax",
        synth_path="code/flax/model.py",
        runner="metagen.verify:run_flax",
        training="metagen.backends.train_flax:lower_training_flax",
        goldens=(GoldenVariant("flax_model.py"),),
    )
)
register(
    Backend(
        "onnx",
        "An ONNX model (opset 23) with the canonical weights as initializers.",
        suffix=".onnx",
        lowering="metagen.backends.onnx_backend:lower_to_onnx_folder",
        synth_path="onnx/model.onnx",
        binary=True,
        takes_weights=True,
        runner="metagen.verify:run_onnx",
        goldens=(GoldenVariant("model.onnx.txt", render="metagen.backends.onnx_backend:golden_text"),),
    )
)
register(
    Backend(
        "numpy",
        "A plain NumPy module: the reference semantics of every op (float64 while running).",
        suffix="_np.py",
        lowering="metagen.backends.numpy_backend:lower_to_numpy",
        synth_path="code/numpy/model.py",
        runner="metagen.verify:run_python_module",
        goldens=(GoldenVariant("numpy_model.py"),),
        reference=True,
    )
)
