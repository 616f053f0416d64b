"""What one compilation carries from pass to pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metagen.diagnostics import DiagnosticSink
from metagen.frontend.spec_builder import Spec
from metagen.ir.graph import Model


@dataclass
class Options:
    tiny: bool = False


@dataclass
class CompileContext:
    spec: Spec
    sink: DiagnosticSink
    options: Options = field(default_factory=Options)
    family: str = ""  # chosen by SelectFamily
    # Resolved architecture: top-level keys plus one dict per tower ("text_encoder",
    # ...). Values are concrete after FitDimensions; None before means "to fit".
    arch: dict[str, Any] = field(default_factory=dict)
    pinned: set[str] = field(default_factory=set)  # dotted keys the user wrote
    model: Model | None = None
    report: dict[str, Any] = field(default_factory=dict)  # params_estimate.json
    context_window: int = 0
    task: dict[str, Any] = field(default_factory=dict)
