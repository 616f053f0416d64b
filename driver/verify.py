"""`metagen verify`: every backend on identical weights and inputs, each compared with
the reference backend.

The backends are the registry's runnable ones (`metagen.backends.registry`); the
reference is the one marked `reference` (NumPy, the plain reference semantics, once it
is registered), else the first. The reference module's `init(seed)` defines the
weights and its `example_inputs()` the inputs. Every Python backend then gets the
weights through `load_canonical` (and must give them back unchanged through
`to_canonical`, and draw the same ones from its own `init(seed)`); ONNX embeds them as
initializers; so the check also exercises every backend's weight interchange. Each
output of each backend is compared with the reference's under CONTRACT §5's tolerance
|a - b| <= ATOL + RTOL*|b| (b the reference); a mismatch, a backend that fails to run
or unequal parameter counts fail.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np

from metagen.backends import registry
from metagen.ir.graph import Model
from metagen.pipeline import Compilation

ATOL = 1e-5
RTOL = 1e-4


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


def load_generated(path: str):
    """Import the generated module at `path` under a fresh name (never a cached one)."""
    name = f"mg_generated_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _write(folder: str, main: str, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        path = os.path.join(folder, main if rel == "" else rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return os.path.join(folder, main)


@dataclass
class Ran:
    """What running one backend gave: its outputs and its own parameter count."""

    outputs: dict[str, np.ndarray]
    param_count: int


@dataclass
class Session:
    """One verification: the model, a scratch folder and the seed; generated Python
    modules are written and imported once each."""

    model: Model
    folder: str
    seed: int
    modules: dict[str, Any] = field(default_factory=dict)

    def module(self, backend: registry.Backend):
        if backend.name not in self.modules:
            files = backend.lower(self.model, seed=self.seed)
            self.modules[backend.name] = load_generated(_write(self.folder, f"model_{backend.name}.py", files))
        return self.modules[backend.name]


# ------------------------------------------------------------------ runners
# A registry entry's `runner`: (session, backend, weights, inputs) -> Ran.


def run_python_module(
    session: Session, backend: registry.Backend, weights, inputs, count: Callable[[Any], int] | None = None
) -> Ran:
    """A generated module through its API (CONTRACT §3). `count` is the framework's own
    parameter count of a state; without it, the elements `to_canonical` returns
    outside the buffers (batch norm's running statistics are weights, not parameters)."""
    mod = session.module(backend)
    state = mod.load_canonical(weights)
    back = mod.to_canonical(state)
    if list(back) != list(weights):
        raise AssertionError("to_canonical(load_canonical(w)) names differ from the canonical names")
    changed = [k for k in weights if not np.array_equal(back[k], weights[k])]
    if changed:
        raise AssertionError(f"to_canonical(load_canonical(w)) changes {len(changed)} weights, e.g. {changed[0]}")
    fresh = mod.to_canonical(mod.init(session.seed))
    if not all(np.array_equal(fresh[k], weights[k]) for k in weights):
        raise AssertionError(f"init({session.seed}) differs from the reference's init({session.seed})")
    buffers = session.model.buffer_names()
    n = count(state) if count is not None else sum(int(np.asarray(v).size) for k, v in back.items() if k not in buffers)
    return Ran(mod.run(state, inputs), n)


def run_torch(session: Session, backend: registry.Backend, weights, inputs) -> Ran:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return run_python_module(session, backend, weights, inputs, count=lambda m: sum(p.numel() for p in m.parameters()))


def run_flax(session: Session, backend: registry.Backend, weights, inputs) -> Ran:
    import jax
    from flax import nnx

    def count(state) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(nnx.state(state, nnx.Param)))

    return run_python_module(session, backend, weights, inputs, count=count)


def run_onnx(session: Session, backend: registry.Backend, weights, inputs) -> Ran:
    """onnxruntime on the model with `weights` embedded; the parameter count is the
    canonical initializers' elements, buffers aside."""
    import onnx
    import onnxruntime as ort

    files = backend.lower(session.model, seed=session.seed, weights=weights, data_name="model.onnx.data")
    path = _write(session.folder, "model.onnx", files)
    proto = onnx.load(path, load_external_data=False)
    canonical = set(weights)
    counted = canonical - session.model.buffer_names()
    count = sum(int(np.prod(t.dims, dtype=np.int64)) for t in proto.graph.initializer if t.name in counted)
    missing = canonical - {t.name for t in proto.graph.initializer}
    if missing:
        raise AssertionError(f"ONNX initializers lack {len(missing)} canonical names, e.g. {sorted(missing)[0]}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: np.asarray(inputs[i.name]) for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return Ran(dict(zip(names, sess.run(names, feed))), count)


# ------------------------------------------------------------------ the check


def verify_spec(comp: Compilation, seed: int = 0, stream: TextIO = sys.stdout) -> bool:
    """Run every backend on the reference's canonical weights and inputs, print each
    output's error per backend against the reference; True when all agree."""
    model = comp.model
    names = list(model.output_names)
    backends = [b for b in registry.BACKENDS.values() if b.runner]
    ref = registry.reference()
    ran: dict[str, Ran] = {}
    failures: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory(prefix="metagen-verify-") as folder:
        session = Session(model, folder, seed)
        try:
            mod = session.module(ref)
            weights = mod.to_canonical(mod.init(seed))
            inputs = mod.example_inputs()
        except Exception as exc:  # the reference cannot even start: nothing to compare with
            failures.append((ref.name, f"{type(exc).__name__}: {exc}"))
            return _report(stream, model, ref, backends, {}, [], failures)
        for b in backends:
            try:
                ran[b.name] = registry.resolve(b.runner)(session, b, weights, inputs)
            except Exception as exc:  # a backend that cannot run is a verification failure, reported
                failures.append((b.name, f"{type(exc).__name__}: {exc}"))

    rows = []
    if ref.name in ran:
        want = ran[ref.name].outputs
        for out in names:
            for b in backends:
                if b.name == ref.name or b.name not in ran:
                    continue
                got = ran[b.name].outputs
                if out not in got:
                    failures.append((b.name, f"no output '{out}'"))
                    continue
                rows.append(compare(out, b.name, got[out], want[out]))
    return _report(stream, model, ref, backends, ran, rows, failures)


def _report(
    stream: TextIO,
    model: Model,
    ref: registry.Backend,
    backends: list[registry.Backend],
    ran: dict[str, Ran],
    rows: list[Comparison],
    failures: list[tuple[str, str]],
) -> bool:
    """One column per backend: per output the largest |a - b| against the reference
    and the share of the tolerance it uses (<= 1 passes), the parameter counts, and a
    verdict per backend."""
    cols = [b.name for b in backends]
    cell = {(r.output, r.pair): r for r in rows}
    failed = {name for name, _ in failures} | {r.pair for r in rows if not r.ok}
    counts = {"ir": model.param_count(), **{name: r.param_count for name, r in ran.items()}}
    counts_ok = len(counts) == len(cols) + 1 and len(set(counts.values())) == 1
    label_w = max(len("parameters"), *(len(n) + len("  tol used") for n in model.output_names))
    w = max(12, *(len(c) + 2 for c in cols))

    def line(label: str, values: list[str], tail: str = "") -> None:
        print((f"  {label:<{label_w}}" + "".join(f"{v:>{w}}" for v in values) + tail).rstrip(), file=stream)

    print(
        f"verify {model.name}: each backend against {ref.name} (the reference); "
        f"tolerance |a-b| <= {ATOL:g} + {RTOL:g}*|b|",
        file=stream,
    )
    line("", cols)
    for out in model.output_names:
        def show(name: str, fmt: Callable[[Comparison], str], at_ref: str) -> str:
            if name == ref.name:
                return at_ref if name in ran else "-"
            r = cell.get((out, name))
            return fmt(r) if r is not None else "-"

        line(f"{out} max abs", [show(c, lambda r: r.note or f"{r.max_abs:.3e}", "reference") for c in cols])
        line(f"{out} tol used", [show(c, lambda r: "" if r.note else f"{r.tol_used:.3f}", "") for c in cols])
    line("parameters", [f"{counts[c]:,}" if c in counts else "-" for c in cols], f"  (ir {counts['ir']:,})")
    line("result", ["FAIL" if c in failed or c not in ran else "ok" for c in cols])
    if not counts_ok:
        print("  FAIL parameter counts differ", file=stream)
    for name, why in failures:
        print(f"  FAIL {name}: {why}", file=stream)
    for r in rows:
        if not r.ok:
            print(f"  FAIL {r.pair}: '{r.output}' " + (r.note or f"uses {r.tol_used:.3f} of the tolerance"), file=stream)
    ok = counts_ok and not failures and all(r.ok for r in rows)
    print("OK" if ok else "MISMATCH", file=stream)
    return ok
