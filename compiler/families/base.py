"""The family interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from metagen.compiler.context import CompileContext
from metagen.ir.graph import Model


@dataclass
class Knobs:
    """How a family grows: a list of width settings (each a dict of arch updates,
    smallest first) and the depth keys set together to one integer. Parameter
    count is affine in depth for a fixed width (repeats are identical), so the
    fitter needs two builds per width."""

    widths: list[dict[str, Any]]
    depth_keys: list[str]
    max_depth: int = 256
    ideal_depth: Callable[[dict[str, Any]], float] = lambda w: 12.0


@dataclass
class Family(ABC):
    name: str
    doc: str
    inputs_doc: str = ""
    outputs_doc: str = ""

    def msl_family(self, ctx: CompileContext) -> str:
        """The spec language's `architecture.family` for this model: what the user
        wrote, or what `auto` resolved to."""
        written = ctx.spec.architecture.family
        if written != "auto":
            return written
        return "diffusion" if self.name == "diffusion_unet" else "transformer"

    @abstractmethod
    def resolve(self, ctx: CompileContext) -> None:
        """Fill ctx.arch with conventions; free dimensions stay None."""

    @abstractmethod
    def knobs(self, ctx: CompileContext) -> Knobs | None:
        """The free size dimensions, or None when the user pinned every one."""

    @abstractmethod
    def tiny(self, ctx: CompileContext) -> None:
        """Shrink every size to test scale, keeping every op kind and branch."""

    @abstractmethod
    def finalize(self, ctx: CompileContext) -> str | None:
        """Derive the dimensions that follow from the fitted ones; a reason when
        the combination is impossible."""

    @abstractmethod
    def build(self, ctx: CompileContext) -> Model:
        """The IR model of the resolved architecture."""

    @abstractmethod
    def memory(self, ctx: CompileContext, params: int) -> dict[str, int]:
        """Inference memory in bytes: weights, caches, activations (and total)."""

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        """What one unit of work is (a token, an image, a denoising step) for the
        cost model: {'unit': str, 'bindings': {symbol: int}, 'per_unit': int}."""
        return {"unit": "sample", "bindings": {"batch": 1}, "per_unit": 1}


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    return FAMILIES[name]
