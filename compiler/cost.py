"""The cost model: FLOPs from the IR, a roofline per unit of work, and the spec's
latency and throughput turned into bounds on it (docs/cost_model.md).

A unit of work is what a family produces one of at a time: a token for language
and audio decoders, an image (one forward) for classifiers and encoders, a
denoising step for diffusion. The roofline is a lower bound on the time a device
needs for one unit at batch 1:

    t_unit = max(FLOPs / (peak * utilization), bytes moved / bandwidth)

Bytes moved per unit: every weight read once, the whole cache read once, the
unit's share of the activation working set written once. Throughput is what the
device sustains serving as many concurrent streams as the memory budget holds
(weights shared, each stream with its own cache and activations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from metagen.compiler.devices import Device
from metagen.frontend import units
from metagen.ir import ops
from metagen.ir.graph import Layer, Model, Repeat, Sub

MAX_BATCH = 1024  # concurrent streams considered for throughput

# Seconds per unit for each latency word; None: no bound. Keyed by unit of work.
LATENCY_BOUNDS: dict[str, dict[str, float | None]] = {
    # Streaming text: 20 tok/s reads faster than people do; 10 and 5 tok/s still stream.
    "token": {"real-time": 0.050, "near-real-time": 0.100, "interactive": 0.200, "batch": None, "offline": None},
    # Neural-codec frames: EnCodec 24 kHz runs at 75 frames/s, so real-time is 1/75 s.
    "frame": {"real-time": 1 / 75, "near-real-time": 2 / 75, "interactive": 4 / 75, "batch": None, "offline": None},
    # One forward on an image or a sample: 30 fps video, 10 fps, 5 fps.
    "image": {"real-time": 1 / 30, "near-real-time": 0.100, "interactive": 0.200, "batch": None, "offline": None},
    "sample": {"real-time": 1 / 30, "near-real-time": 0.100, "interactive": 0.200, "batch": None, "offline": None},
    # One denoising step: a 25-step image in 1 s, 2.5 s, 5 s.
    "step": {"real-time": 0.040, "near-real-time": 0.100, "interactive": 0.200, "batch": None, "offline": None},
}
DEFAULT_STEPS_PER_IMAGE = 25



@dataclass(frozen=True)
class UnitOfWork:
    """What a family produces one of at a time: `word` names it in reports and
    diagnostics ("a text-image pair"), `kind` says which latency and rate words
    apply to it (a key of LATENCY_BOUNDS). Each family declares one."""

    word: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in LATENCY_BOUNDS:
            raise ValueError(f"unit of work '{self.word}': kind '{self.kind}' is not one of {sorted(LATENCY_BOUNDS)}")

    def __str__(self) -> str:
        return self.word

    @classmethod
    def of(cls, unit: "UnitOfWork | str") -> "UnitOfWork":
        """A unit, or a kind named by itself ("token")."""
        return unit if isinstance(unit, UnitOfWork) else cls(unit, unit)


# Which units of work a rate unit counts.
RATE_UNITS: dict[str, tuple[str, ...]] = {
    "tok/s": ("token", "frame"),
    "img/s": ("image", "step"),
    "samples/s": ("image", "step", "sample"),
}

RATE_NOUNS = {"tok/s": "tokens", "img/s": "images", "samples/s": "samples"}

# ---------------------------------------------------------------- FLOPs


def model_flops(model: Model, bindings: Mapping[str, int]) -> int:
    """FLOPs of one forward of `model` with its symbols bound, from each op's rule.
    Repeats count their module `count` times; a call to a Layer child uses the layer
    op's rule; reading a parameter costs nothing."""
    memo: dict[str, int] = {}
    return _module_flops(model, model.top, bindings, memo)


def _module_flops(model: Model, name: str, b: Mapping[str, int], memo: dict[str, int]) -> int:
    if name in memo:
        return memo[name]
    m = model.modules[name]
    total = 0
    for node in m.nodes:
        if node.kind == "param":
            continue
        ins = [v.type for v in node.operands]
        outs = [v.type for v in node.results]
        if node.kind == "op":
            d = ops.get(node.op)
            total += d.flops(_full_attrs(d, node.attrs), ins, outs, b)
            continue
        child = m.children[node.target]
        if isinstance(child, Layer):
            d = ops.get(child.op)
            total += d.flops(_full_attrs(d, child.attr_dict()), ins, outs, b)
        elif isinstance(child, Repeat):
            total += child.count * _module_flops(model, child.module, b, memo)
        elif isinstance(child, Sub):
            total += _module_flops(model, child.module, b, memo)
    memo[name] = total
    return total


def _full_attrs(d: ops.OpDef, attrs: dict[str, Any]) -> dict[str, Any]:
    """The builder stores attributes with defaults filled in; resolve only if not."""
    return attrs if len(attrs) == len(d.attrs) else d.resolve_attrs(attrs)


@dataclass(frozen=True)
class Workload:
    """One unit of work in integers, so the fitter's interpolation is exact."""

    unit: UnitOfWork
    flops: int  # per forward at `bindings`, i.e. `per_unit` units
    per_unit: int
    weights: int  # bytes
    cache: int  # bytes (KV cache), read once per unit
    activations: int  # bytes of the working set of one forward
    steps_per_image: int = DEFAULT_STEPS_PER_IMAGE

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", UnitOfWork.of(self.unit))

    @property
    def stream_bytes(self) -> int:
        """Memory one more concurrent stream needs."""
        return self.cache + self.activations


def workload(family, ctx, model: Model, mem: Mapping[str, int]) -> Workload:
    w = family.workload(ctx, model)
    bindings = {**model.examples, "batch": 1, **w.get("bindings", {})}
    return Workload(
        unit=family.unit,
        flops=model_flops(model, bindings),
        per_unit=max(1, int(w.get("per_unit", 1))),
        weights=int(mem.get("weights", 0)),
        cache=int(mem.get("kv_cache", 0)),
        activations=int(mem.get("activations", 0)),
        steps_per_image=int(w.get("steps_per_image", DEFAULT_STEPS_PER_IMAGE)),
    )


# ---------------------------------------------------------------- roofline


@dataclass(frozen=True)
class Estimate:
    flops_per_unit: float
    bytes_per_unit: float
    compute_s: float
    memory_s: float
    latency_s: float  # per unit, batch 1
    batch: int  # concurrent streams in the memory budget
    throughput: float  # units/s at that batch

    @property
    def bound_by(self) -> str:
        return "compute" if self.compute_s >= self.memory_s else "memory bandwidth"


def estimate(device: Device, w: Workload, memory_budget: int) -> Estimate:
    flops = w.flops / w.per_unit
    nbytes = w.weights + w.cache + w.activations / w.per_unit
    peak = device.flops * device.utilization
    compute_s, memory_s = flops / peak, nbytes / device.bandwidth
    latency = max(compute_s, memory_s)
    if w.stream_bytes > 0:
        batch = max(1, min(MAX_BATCH, (memory_budget - w.weights) // w.stream_bytes))
    else:
        batch = MAX_BATCH
    step = max(batch * flops / peak, (w.weights + batch * (nbytes - w.weights)) / device.bandwidth)
    throughput = batch / step if step > 0 else math.inf
    return Estimate(flops, nbytes, compute_s, memory_s, latency, int(batch), throughput)


# ---------------------------------------------------------------- bounds from the spec


@dataclass(frozen=True)
class LatencyBound:
    """The spec's latency as seconds per unit of work; None when it sets no bound
    (a word such as "batch")."""

    seconds: float | None
    text: str  # as the spec wrote it, lower-cased ("real-time", "80ms")
    unit: UnitOfWork


@dataclass(frozen=True)
class ThroughputBound:
    """The spec's throughput as units of work per second."""

    per_s: float
    text: str  # as the spec wrote it ("1000 tok/s")
    unit: UnitOfWork
    rate_unit: str  # the spec's rate unit
    factor: float  # units of work per counted thing (steps per image)


class BoundError(ValueError):
    """A latency or throughput whose unit does not count this model's unit of work."""


def _per_unit(rate: float, rate_unit: str, unit: UnitOfWork, steps_per_image: int, what: str, text: str) -> float:
    """A rate in the spec's unit as units of work per second."""
    kind = unit.kind
    if kind not in RATE_UNITS[rate_unit]:
        article = "an" if unit.word[:1] in "aeiou" else "a"
        raise BoundError(
            f"{what} '{text}' counts {RATE_NOUNS[rate_unit]}, but this model's unit of work is {article} {unit}; "
            f"write {_rate_hint(kind)} or a time per {unit}"
        )
    if kind == "step":
        return rate * steps_per_image
    return rate


def _rate_hint(kind: str) -> str:
    return {"token": "tok/s", "frame": "tok/s", "step": "img/s", "image": "img/s"}.get(kind, "samples/s")


def latency_bound(latency: str | None, w: Workload) -> LatencyBound:
    """A latency word, a time per unit or a rate ("20 tok/s"); raises BoundError."""
    text = (latency or "batch").strip().lower()
    words = LATENCY_BOUNDS[w.unit.kind]
    if text in words:
        return LatencyBound(words[text], text, w.unit)
    try:
        return LatencyBound(units.parse_time(text), text, w.unit)
    except units.UnitError:
        rate, rate_unit = units.parse_rate(text)
        return LatencyBound(1.0 / _per_unit(rate, rate_unit, w.unit, w.steps_per_image, "latency", text), text, w.unit)


def throughput_bound(throughput: str, w: Workload) -> ThroughputBound:
    """A rate in the spec's unit; raises BoundError."""
    rate, rate_unit = units.parse_rate(throughput)
    per_s = _per_unit(rate, rate_unit, w.unit, w.steps_per_image, "throughput", throughput)
    return ThroughputBound(per_s, throughput, w.unit, rate_unit, per_s / rate)


# ---------------------------------------------------------------- words for reports and diagnostics


def format_time(seconds: float) -> str:
    """Three significant digits in the largest unit that keeps the number >= 1."""
    for suffix, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{_sig(seconds / scale)} {suffix}"
    return f"{_sig(seconds / 1e-9)} ns"


def time_at_least(seconds: float) -> str:
    """A spec-ready time ("80ms") no smaller than `seconds`, two significant digits."""
    for suffix, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or suffix == "us":
            return f"{_round_sig(seconds / scale, up=True)}{suffix}"
    raise AssertionError


def format_rate(per_s: float, unit: str) -> str:
    """Units of work per second in words ("42.3 tokens/s")."""
    return f"{_sig(per_s)} {unit}s/s"


def spec_rate_at_most(per_s: float, tb: ThroughputBound) -> str:
    """A spec-ready rate in the spec's own unit ("42 tok/s") no larger than `per_s`
    units of work per second, two significant digits."""
    return f"{_round_sig(per_s / tb.factor, up=False)} {tb.rate_unit}"


def _sig(x: float) -> str:
    v = float(f"{x:.3g}")
    return str(int(v)) if v >= 1000 else f"{v:g}"


def _round_sig(x: float, up: bool) -> str:
    if x <= 0:
        return "0"
    exp = math.floor(math.log10(x)) - 1
    scale = 10.0**exp
    q = x / scale
    n = math.ceil(q - 1e-9) if up else math.floor(q + 1e-9)
    v = n * scale
    if exp >= 0:
        return str(int(round(v)))
    return f"{v:.{-exp}f}".rstrip("0").rstrip(".")


def report(device: Device, w: Workload, e: Estimate, memory_budget: int) -> dict[str, Any]:
    """ctx.report["cost"]: device figures and per-unit estimates (the latency and
    throughput constraints add their bounds)."""
    return {
        "device": {
            "class": device.name,
            "example": device.example,
            "peak_flops": device.flops,
            "utilization": device.utilization,
            "bandwidth_bytes_per_s": device.bandwidth,
            "capacity_bytes": device.capacity,
        },
        "unit": w.unit.word,
        "flops_per_unit": round(e.flops_per_unit),
        "bytes_per_unit": round(e.bytes_per_unit),
        "latency_per_unit_s": round_float(e.latency_s),
        "latency_per_unit": f"{format_time(e.latency_s)}/{w.unit}",
        "bound_by": e.bound_by,
        "throughput_per_s": round_float(e.throughput),
        "throughput_batch": e.batch,
        "memory_budget_bytes": memory_budget,
    }


def round_float(x: float) -> float:
    return float(f"{x:.6g}")
