"""`metagen weights init RUN_DIR [--seed N]`: the run's ONNX weights, written later.

`metagen synth` draws the canonical initial weights into `onnx/` only up to
`onnx_backend.MATERIALIZE_LIMIT`; above it the graph is written alone, its
initializers pointing into `onnx/model.onnx.data`, and this command writes that file,
one tensor at a time (memory stays near the largest tensor, not the model). It works
for a run of any size: a small run's `onnx/model.onnx` is rewritten with the seed's
weights inline."""

from __future__ import annotations

import json
import os

from metagen.diagnostics import CompileError, Diagnostic, DiagnosticSink, Loc

SPEC_FILE = "spec_resolved.yaml"
TRAINING_REPORT = os.path.join("blueprint", "training_report.json")


def _refuse(path: str, message: str) -> CompileError:
    return CompileError([Diagnostic("error", Loc(path, 1, 1), message)])


def run_spec(run_dir: str) -> str:
    """The spec a run folder was synthesised from (its resolved form)."""
    spec = os.path.join(run_dir, SPEC_FILE)
    if not os.path.isdir(run_dir):
        raise _refuse(run_dir, "not a folder: give the run folder `metagen synth` wrote")
    if not os.path.isfile(spec):
        raise _refuse(run_dir, f"not a run folder of `metagen synth`: it has no {SPEC_FILE}")
    return spec


def recorded_seed(run_dir: str, onnx_props: dict[str, str] | None = None) -> int | None:
    """The seed the run was synthesised with, where the run records it: a graph-only
    ONNX file's metadata, else the training report's config."""
    from metagen.backends.onnx_backend import INIT_SEED_PROP

    if onnx_props and INIT_SEED_PROP in onnx_props:
        try:
            return int(onnx_props[INIT_SEED_PROP])
        except ValueError:
            pass
    try:
        with open(os.path.join(run_dir, TRAINING_REPORT), encoding="utf-8") as f:
            seed = json.load(f)["config"]["seed"]
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _signature(proto) -> tuple:
    """What must agree between the graph on disk and the one the spec compiles to:
    nodes, inputs, outputs, initializer names and shapes."""
    g = proto.graph
    return (
        [n.SerializeToString(deterministic=True) for n in g.node],
        [v.SerializeToString(deterministic=True) for v in g.input],
        [v.SerializeToString(deterministic=True) for v in g.output],
        [(t.name, tuple(t.dims)) for t in g.initializer],
    )


def init_run_weights(run_dir: str, seed: int | None, sink: DiagnosticSink) -> tuple[str, int, int]:
    """Write the run's ONNX weights as `init(seed)` (default: the run's seed).
    Returns (the file holding the weights, its weight bytes, the seed)."""
    import onnx

    from metagen.backends import onnx_backend, registry
    from metagen.outputs import write_files
    from metagen.pipeline import compile_spec
    from metagen.precision import onnx_precision

    spec = run_spec(run_dir)
    comp = compile_spec(spec, sink)
    backend = registry.get("onnx")
    path = os.path.join(run_dir, backend.synth_path)
    if backend.name not in comp.spec.outputs.targets or not os.path.isfile(path):
        raise _refuse(run_dir, f"this run has no ONNX model ({backend.synth_path}): its outputs.targets leave out onnx; "
                      "the Python modules draw init(seed) themselves")
    try:
        on_disk = onnx.load(path, load_external_data=False)
    except Exception as exc:  # a damaged or foreign file: protobuf's DecodeError and friends
        raise _refuse(path, f"cannot read the ONNX model: {exc}") from None
    props = {p.key: p.value for p in on_disk.metadata_props}
    if seed is None:
        seed = recorded_seed(run_dir, props)
    if seed is None:
        seed = comp.spec.reproducibility.seed or 0
    data_name = os.path.basename(path) + ".data"
    precision = onnx_precision(comp)
    # int8 graphs are onnxruntime's rewrite of the weights: there is no graph-only form to compare
    expected = None if precision == "int8" else onnx.load_from_string(
        onnx_backend.lower_to_onnx(comp.model, seed=seed, data_name=data_name, precision=precision, form="graph_only")[""]
    )
    if expected is not None and _signature(expected) != _signature(on_disk):
        raise _refuse(path, f"this ONNX graph is not the one {SPEC_FILE} compiles to (edited, or written by another "
                      "compiler version): synthesise the run again")
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in on_disk.graph.initializer)
    form = "external" if external else "inline"  # the graph keeps pointing where it did
    files = onnx_backend.lower_to_onnx(comp.model, seed=seed, data_name=data_name, stream=True, form=form, precision=precision)
    folder = os.path.dirname(path)
    # the data before the graph that points into it
    writes = {os.path.join(folder, rel or os.path.basename(path)): data for rel, data in sorted(files.items(), key=lambda kv: kv[0] == "")}
    write_files(writes)
    stale = os.path.join(folder, data_name)
    if data_name not in files and os.path.isfile(stale):  # inline now: a data file of an earlier form would mislead
        os.unlink(stale)
    where = os.path.join(folder, data_name) if data_name in files else path
    return where, onnx_backend.weights_bytes(comp.model), seed
