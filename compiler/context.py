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
    # Resolved architecture: the family's typed config (families/base.py ArchConfig),
    # towers nested. Values are concrete after FitDimensions; None before means "to fit".
    arch: Any = field(default_factory=dict)
    pinned: set[str] = field(default_factory=set)  # dotted keys the user wrote
    model: Model | None = None
    report: dict[str, Any] = field(default_factory=dict)  # params_estimate.json
    context_window: int = 0
    task: dict[str, Any] = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        # The fitter tries sizes on plain copies (`dict(ctx.arch, **width)`); the
        # family still sees its own config type.
        if name == "arch" and not hasattr(value, "from_mapping"):
            current = self.__dict__.get("arch")
            if hasattr(current, "from_mapping"):
                value = type(current).from_mapping(value)
        object.__setattr__(self, name, value)
