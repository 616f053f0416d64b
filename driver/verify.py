"""`metagen verify`: the three backends on identical weights and inputs.

The torch module's `init(seed)` defines the weights; they reach flax through
`to_canonical` -> `load_canonical` and ONNX as embedded initializers, so the check
also exercises every backend's weight interchange. Inputs are the torch module's
`example_inputs()`. Outputs are compared pairwise with CONTRACT §5's tolerance
|a - b| <= ATOL + RTOL*|b| (b the pair's reference, the earlier backend in
`BACKENDS`); a mismatch, a failing backend or unequal parameter counts fail.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import numpy as np

from metagen.pipeline import Compilation

ATOL = 1e-5
RTOL = 1e-4
BACKENDS = ("torch", "flax", "onnx")


@dataclass(frozen=True)
class Comparison:
    output: str
    pair: str
    max_abs: float
    max_rel: float
    tol_used: float  # max |a-b| / (ATOL + RTOL|b|); <= 1 passes
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.note and self.tol_used <= 1.0


def compare(output: str, pair: str, a: np.ndarray, b: np.ndarray) -> Comparison:
    """`a` against the reference `b` under CONTRACT §5's tolerance."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return Comparison(output, pair, float("inf"), float("inf"), float("inf"), f"shape {a.shape} vs {b.shape}")
    if a.size == 0:
        return Comparison(output, pair, 0.0, 0.0, 0.0)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        same = np.array_equal(a64, b64, equal_nan=True)
        return Comparison(output, pair, 0.0 if same else float("inf"), 0.0, 0.0, "" if same else "non-finite values")
    diff = np.abs(a64 - b64)
    rel = diff / np.maximum(np.abs(b64), 1e-12)
    used = diff / (ATOL + RTOL * np.abs(b64))
    return Comparison(output, pair, float(diff.max()), float(rel.max()), float(used.max()))


def _load_module(path: str):
    name = f"mg_verify_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _write(folder: str, main: str, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        with open(os.path.join(folder, main if rel == "" else rel), "wb") as f:
            f.write(data)
    return os.path.join(folder, main)


def _torch_outputs(path: str, seed: int):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    mod = _load_module(path)
    state = mod.init(seed)
    weights = mod.to_canonical(state)
    inputs = mod.example_inputs()
    count = sum(p.numel() for p in state.parameters())
    return mod.run(state, inputs), weights, inputs, count


def _flax_outputs(path: str, weights: dict[str, np.ndarray], inputs, seed: int):
    import jax
    from flax import nnx

    mod = _load_module(path)
    state = mod.load_canonical(weights)
    back = mod.to_canonical(state)
    if list(back) != list(weights):
        raise AssertionError("to_canonical(load_canonical(w)) names differ from the canonical names")
    changed = [k for k in weights if not np.array_equal(back[k], weights[k])]
    if changed:
        raise AssertionError(f"to_canonical(load_canonical(w)) changes {len(changed)} weights, e.g. {changed[0]}")
    fresh = mod.to_canonical(mod.init(seed))
    if not all(np.array_equal(fresh[k], weights[k]) for k in weights):
        raise AssertionError(f"init({seed}) differs from the torch module's init({seed})")
    count = sum(int(x.size) for x in jax.tree.leaves(nnx.state(state, nnx.Param)))
    return mod.run(state, inputs), count


def _onnx_outputs(comp: Compilation, folder: str, weights, inputs, seed: int, names: list[str]):
    import onnx
    import onnxruntime as ort

    from metagen.artifacts import emit_target

    files = emit_target(comp, "onnx", seed=seed, weights=weights, data_name="model.onnx.data")
    path = _write(folder, "model.onnx", files)
    proto = onnx.load(path, load_external_data=False)
    canonical = set(weights)
    count = sum(int(np.prod(t.dims, dtype=np.int64)) for t in proto.graph.initializer if t.name in canonical)
    missing = canonical - {t.name for t in proto.graph.initializer}
    if missing:
        raise AssertionError(f"ONNX initializers lack {len(missing)} canonical names, e.g. {sorted(missing)[0]}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: np.asarray(inputs[i.name]) for i in sess.get_inputs()}
    results = sess.run(names, feed)
    return dict(zip(names, results)), count


def verify_spec(comp: Compilation, seed: int = 0, stream: TextIO = sys.stdout) -> bool:
    """Run torch, flax and onnxruntime on the same canonical weights and inputs,
    print the errors per output and backend pair; True when all agree."""
    from metagen.artifacts import emit_target

    model = comp.model
    names = list(model.output_names)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, int] = {"ir": model.param_count()}
    failures: list[str] = []

    def attempt(backend: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # a backend that cannot run is a verification failure, reported
            failures.append(f"{backend}: {type(exc).__name__}: {exc}")
            return None

    with tempfile.TemporaryDirectory(prefix="metagen-verify-") as folder:
        torch_path = _write(folder, "model_torch.py", emit_target(comp, "torch", seed=seed))
        got = attempt("torch", lambda: _torch_outputs(torch_path, seed))
        if got is None:
            return _report(stream, model.name, [], counts, failures)
        outputs["torch"], weights, inputs, counts["torch"] = got

        def flax():
            path = _write(folder, "model_flax.py", emit_target(comp, "flax", seed=seed))
            return _flax_outputs(path, weights, inputs, seed)

        got = attempt("flax", flax)
        if got is not None:
            outputs["flax"], counts["flax"] = got
        got = attempt("onnx", lambda: _onnx_outputs(comp, folder, weights, inputs, seed, names))
        if got is not None:
            outputs["onnx"], counts["onnx"] = got

    rows = []
    ran = [b for b in BACKENDS if b in outputs]
    for out in names:
        for i, ref in enumerate(ran):
            for other in ran[i + 1 :]:
                if out not in outputs[other]:
                    failures.append(f"{other}: no output '{out}'")
                    continue
                rows.append(compare(out, f"{other} vs {ref}", outputs[other][out], outputs[ref][out]))
    return _report(stream, model.name, rows, counts, failures)


def _report(stream: TextIO, name: str, rows: list[Comparison], counts: dict[str, int], failures: list[str]) -> bool:
    print(f"verify {name}: tolerance |a-b| <= {ATOL:g} + {RTOL:g}*|b|", file=stream)
    if rows:
        w_out = max(len("output"), *(len(r.output) for r in rows))
        w_pair = max(len("pair"), *(len(r.pair) for r in rows))
        print(f"  {'output':<{w_out}}  {'pair':<{w_pair}}  {'max abs':>10}  {'max rel':>10}  {'tol used':>9}  result", file=stream)
        for r in rows:
            verdict = "ok" if r.ok else ("FAIL " + r.note).strip()
            print(
                f"  {r.output:<{w_out}}  {r.pair:<{w_pair}}  {r.max_abs:>10.3e}  {r.max_rel:>10.3e}  {r.tol_used:>9.3f}  {verdict}",
                file=stream,
            )
    counts_ok = len(set(counts.values())) == 1
    shown = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    print(f"  parameters: {shown}  {'ok' if counts_ok else 'FAIL (counts differ)'}", file=stream)
    for f in failures:
        print(f"  FAIL {f}", file=stream)
    ok = counts_ok and not failures and all(r.ok for r in rows) and len(counts) == len(BACKENDS) + 1
    print("OK" if ok else "MISMATCH", file=stream)
    return ok
