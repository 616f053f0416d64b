"""`metagen synth`: every artifact of one compilation in DIR/<run-id>/."""

from __future__ import annotations

import os

from metagen.artifacts import (
    _json,
    _yaml,
    architecture_yaml,
    emit_target,
    graph_json,
    params_estimate,
    resolved_spec,
    run_id,
)
from metagen.outputs import write_tree
from metagen.pipeline import Compilation


def synth_files(comp: Compilation, seed: int) -> dict[str, bytes]:
    files = {
        "spec_resolved.yaml": _yaml(resolved_spec(comp)),
        "blueprint/architecture.yaml": _yaml(architecture_yaml(comp)),
        "blueprint/params_estimate.json": _json(params_estimate(comp), "blueprint/params_estimate.json", comp.spec.loc()),
        "blueprint/graph.json": _json(graph_json(comp.model), "blueprint/graph.json", comp.spec.loc()),
    }
    files["ir/model.mgir"] = emit_target(comp, "ir", seed)[""]
    files["code/torch/model.py"] = emit_target(comp, "torch", seed)[""]
    for target, main in (("flax", "code/flax/model.py"), ("onnx", "onnx/model.onnx")):
        for rel, data in emit_target(comp, target, seed, data_name="model.onnx.data").items():
            files[main if rel == "" else os.path.join(os.path.dirname(main), rel)] = data
    try:
        from metagen.training import training_files
    except ImportError:
        training_files = None
    if training_files is not None:
        files.update(training_files(comp, seed))
    return files


def synthesize(comp: Compilation, out_dir: str, seed: int, rid: str | None = None) -> str:
    rid = rid or run_id(comp, seed)
    files = synth_files(comp, seed)
    root = os.path.join(out_dir, rid)
    write_tree(root, files)
    return root
