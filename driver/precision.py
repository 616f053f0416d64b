"""Precision of the emitted model, and how far each precision may drift from float32.

One concept: the spec's `constraints.precision` (fp32, bf16, fp16, int8; or the older
`constraints.dtype`), which also drives the memory and latency estimates, and which
`--precision P` sets as `-D constraints.precision=P` would (driver/cli.py). The ONNX backend
emits at that precision when the spec states it, and at float32 otherwise: the
device's default (bf16 on GPUs) only sizes the estimates, it never changes an output
file silently. The generated Python modules stay float32 by default and take a
`dtype` in `init`/`load_canonical` (float32, bfloat16, float16).
"""

from __future__ import annotations

import numpy as np

from metagen.compiler.devices import DTYPE_PRECISION, precision_of

# numpy / torch / jax dtype name of each precision the Python modules load weights in
PRECISION_DTYPE = {p: d for d, p in DTYPE_PRECISION.items()}

# |a - b| <= TOLERANCE[p] * max|b|, elementwise, against the float32 outputs on the
# same weights and inputs (fp32 is CONTRACT §5's 1e-5 + 1e-4 |b| instead). Chosen at
# about 3x the worst drift measured on every example spec at --tiny (docs/backends.md,
# "Precision"): bf16 1.9e-2, fp16 2.7e-3, int8 8.1e-2 of max|b|.
TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2, "int8": 0.25}


def within(got: np.ndarray, want: np.ndarray, precision: str) -> bool:
    """Whether `got` (at `precision`) agrees with the float32 `want`."""
    a, b = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if a.shape != b.shape:
        return False
    if precision == "fp32":
        return bool(np.all(np.abs(a - b) <= 1e-5 + 1e-4 * np.abs(b)))
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return bool(np.all(np.abs(a - b) <= TOLERANCE[precision] * scale))


def drift(got: np.ndarray, want: np.ndarray) -> float:
    """max|a - b| / max|b|: the figure TOLERANCE bounds."""
    a, b = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def onnx_precision(comp, sink=None) -> str:
    """The precision the ONNX backend emits this compilation at: the spec's stated
    `constraints.precision`, else fp32. bf16 has no onnxruntime CPU kernels to run
    and check it with, so it is emitted as fp32 with a warning at the spec's field."""
    precision, is_default = precision_of(comp.spec.constraints)
    if is_default:
        return "fp32"
    if precision == "bf16":
        if sink is not None:
            cons = comp.spec.constraints
            field = "precision" if getattr(cons, "precision", None) else "dtype"
            sink.warning(cons.loc(field), "onnx: bf16 graphs are not emitted (onnxruntime's CPU provider has no "
                         "bfloat16 kernels to run or verify them); the ONNX file is fp32. Use fp16 for a half-size graph")
        return "fp32"
    return precision
