"""`metagen synth`: every artifact of one compilation in DIR/<run-id>/."""

from __future__ import annotations

import os

from metagen.artifacts import (
    _json,
    _yaml,
    architecture_yaml,
    graph_json,
    params_estimate,
    resolved_spec,
    run_id,
)
from metagen.outputs import write_tree
from metagen.pipeline import Compilation


def synth_files(comp: Compilation, seed: int, stream: bool = False) -> dict:
    """The run folder's files: the blueprint, then each of the spec's `outputs.targets`
    at its registry path (with its training program where the backend has one).
    Bytes, or with `stream` `outputs.Streamed` for the ONNX weights: they are drawn
    and written one tensor at a time when the folder is written."""
    from metagen.backends import registry
    from metagen.training import training_files

    files = {
        "spec_resolved.yaml": _yaml(resolved_spec(comp)),
        "blueprint/architecture.yaml": _yaml(architecture_yaml(comp)),
        "blueprint/params_estimate.json": _json(params_estimate(comp), "blueprint/params_estimate.json", comp.spec.loc()),
        "blueprint/graph.json": _json(graph_json(comp.model), "blueprint/graph.json", comp.spec.loc()),
    }
    targets = [registry.get(name) for name in dict.fromkeys(comp.spec.outputs.targets)]
    from metagen.precision import onnx_precision

    for backend in targets:
        folder, main = os.path.split(backend.synth_path)
        precision = onnx_precision(comp, comp.ctx.sink) if backend.binary else "fp32"
        for rel, data in backend.lower(comp.model, seed=seed, data_name=main + ".data", stream=stream, precision=precision).items():
            files[os.path.join(folder, rel or main)] = data
    files.update(training_files(comp, seed, [b for b in targets if b.training]))
    from metagen.model_card import model_card

    files["README.md"] = model_card(comp, seed).encode("utf-8")
    return files


def synthesize(comp: Compilation, out_dir: str, seed: int, rid: str | None = None) -> str:
    rid = rid or run_id(comp, seed)
    files = synth_files(comp, seed, stream=True)
    root = os.path.join(out_dir, rid)
    write_tree(root, files)
    return root
