"""What every lowering rule sees, whatever the backend (cf. JAX's
`LoweringRuleContext`), and the diagnostic for an op no rule covers.

A backend is a table from op name to rule; a rule is called as `rule(ctx, *operands)`
where the operands are the backend's handles for the node's inputs (Python expressions
for the Python emitters, ONNX value names for ONNX) and `ctx` carries the rest: the
op's attributes, its operand and result types, and the source location the node came
from. Backends subclass the context to add what only they need (the ONNX graph
builder, the Python emitter's helper functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from metagen.diagnostics import CompileError, Diagnostic, Loc
from metagen.ir.types import TensorType


class EmitError(CompileError):
    """A backend cannot lower the model (an op without a rule, weights that do not fit)."""


@dataclass
class LoweringContext:
    op_name: str  # the op (or layer op) being lowered
    a: Mapping[str, Any]  # the op's attributes ("a" because every rule reads it)
    operands: tuple[str, ...] = ()  # the backend's handles of the operands (also the rule's arguments)
    in_types: tuple[TensorType, ...] = ()
    out_types: tuple[TensorType, ...] = ()
    loc: Loc | None = None


def first_loc(*candidates: Loc | None) -> Loc:
    """The most precise location known: the node's, else its module's, else the model's."""
    for loc in candidates:
        if loc is not None:
            return loc
    return Loc("<ir>")


def missing_rule(backend: str, kind: str, op: str, loc: Loc) -> EmitError:
    """The error for an op (`kind` 'op') or layer (`kind` 'layer op') the backend cannot lower."""
    return EmitError([Diagnostic("error", loc, f"the {backend} backend has no emitter for {kind} '{op}'")])
