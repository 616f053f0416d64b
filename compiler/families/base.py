"""The family interface, the typed architecture configs and the registry.

A family is one class: declaring it (a subclass of `Family` with a `name`)
registers it. Everything other code needs to know about a family is declared on
it: the spec's `architecture.family` it answers to, the modality and objective
combinations that select it (`rules`), its default objective, its unit of work for
the cost model, the config it reads from the spec (a dataclass of `spec_key` and
`derived` fields), and what `--tiny` does.
"""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

from metagen.compiler.context import CompileContext
from metagen.compiler.cost import UnitOfWork
from metagen.diagnostics import Loc
from metagen.ir.builder import ModelBuilder
from metagen.ir.graph import Model

# ---------------------------------------------------------------- typed configs

_SPEC = "metagen_spec_key"


def spec_key(default: Any = None, *, key: str | None = None, ignored: str = "") -> Any:
    """A config field read from the spec's architecture section (as `key`, the field's
    own name by default). `ignored` declares a key the family accepts but does not
    use: writing it draws that message as a warning instead of the generic one."""
    meta = {_SPEC: (key, ignored)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def derived(default: Any = None) -> Any:
    """A config field the family computes (the context window, a head, a flag); no
    spec key sets it."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default))
    return dataclasses.field(default=default)


def tower(config: type) -> Any:
    """A nested config read from the spec section of the field's name
    (`architecture.text_encoder`)."""
    return dataclasses.field(default_factory=config, metadata={_SPEC: (None, "")})


@dataclass
class ArchConfig:
    """A family's resolved architecture: typed fields, in the order the generated
    CONFIG lists them. Also a mapping (`cfg["hidden_size"]`, `get`, `update`,
    `dict(cfg)`) so the fitter can move any knob by name; a dotted name
    (`image_encoder.layers`) reaches into a tower. Unknown names are errors, so a
    misspelt knob cannot set a key nothing reads."""

    # -- declaration

    @classmethod
    def spec_fields(cls) -> list[tuple[str, dataclasses.Field]]:
        """(spec key, field) for every field read from the spec, in declaration order."""
        out = []
        for f in dataclasses.fields(cls):
            if _SPEC in f.metadata:
                out.append((f.metadata[_SPEC][0] or f.name, f))
        return out

    @classmethod
    def spec_keys(cls) -> list[str]:
        return [key for key, f in cls.spec_fields() if not f.metadata[_SPEC][1] and not _is_tower(cls, f)]

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return _field_names(cls)

    @classmethod
    def towers(cls) -> dict[str, type["ArchConfig"]]:
        return _towers(cls)

    @classmethod
    def ignored_message(cls, key: str) -> str:
        for k, f in cls.spec_fields():
            if k == key:
                return f.metadata[_SPEC][1]
        return ""

    @classmethod
    def from_mapping(cls, values: Any) -> "ArchConfig":
        cfg = cls()
        for k in values.keys():
            v = values[k]
            if isinstance(v, ArchConfig):
                v = v.copy()
            cfg[k] = v
        return cfg

    def copy(self) -> "ArchConfig":
        return type(self).from_mapping(self)

    # -- mapping access

    def keys(self) -> list[str]:
        return list(self.field_names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.field_names())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.field_names()]

    def __getitem__(self, key: str) -> Any:
        head, _, rest = key.partition(".")
        if head not in _field_names(type(self)):
            raise KeyError(key)
        value = getattr(self, head)
        return value[rest] if rest else value

    def __setitem__(self, key: str, value: Any) -> None:
        head, _, rest = key.partition(".")
        if head not in _field_names(type(self)):
            raise KeyError(f"{type(self).__name__} has no field '{head}'")
        if rest:
            getattr(self, head)[rest] = value
            return
        tower_type = type(self).towers().get(head)
        if tower_type is not None and not isinstance(value, tower_type):
            value = tower_type.from_mapping(value)
        setattr(self, head, value)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def update(self, other: Any = (), **kw: Any) -> None:
        pairs = list(other.items()) if hasattr(other, "items") else list(other)
        for k, v in pairs + list(kw.items()):
            self[k] = v

    def pick(self, keys: list[str] | tuple[str, ...]) -> dict[str, Any]:
        return {k: self[k] for k in keys}


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _towers(cls: type) -> dict[str, type]:
    return {f.name: _tower_type(cls, f) for f in dataclasses.fields(cls) if _is_tower(cls, f)}


def _tower_type(cls: type, f: dataclasses.Field) -> type | None:
    factory = f.default_factory
    return factory if isinstance(factory, type) and issubclass(factory, ArchConfig) else None


def _is_tower(cls: type, f: dataclasses.Field) -> bool:
    return _tower_type(cls, f) is not None


# ---------------------------------------------------------------- selection rules


@dataclass(frozen=True)
class Rule:
    """Modality inputs and outputs (compared as sets) and the objectives (None: the
    spec names none) that select a family; one row of docs/families.md's table.
    `unknown_modalities` marks the rule every spec with a modality the language does
    not know falls to."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    objectives: tuple[str | None, ...] = ()
    note: str = ""
    unknown_modalities: bool = False
    # `architecture.family` values this rule needs; empty: any. A rule that names
    # families wins over one that does not for the same combination, so `family:
    # cnn` picks the CNN where `auto` or `transformer` picks the transformer.
    families: tuple[str, ...] = ()


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
    # How the fitter chooses among widths that reach the minimum, in words (the fit
    # rule of params_estimate.json), naming the design rule (compiler/design_rules.py).
    choice: str = "the one whose depth is closest to 12"
    # A width's distance from the family's ideal given its fitted depth (smaller wins);
    # by default how far the depth is from `ideal_depth`, in log terms.
    score: Callable[[dict[str, Any], int], float] | None = None
    # Widths that break a preference (a shrunk vocabulary) lose to every width that
    # keeps it: `demoted(width)` is True for them.
    demoted: Callable[[dict[str, Any]], bool] = lambda w: False
    # Called once with the chosen width, to say what a rule did (a located warning).
    chosen: Callable[[Any, dict[str, Any]], None] = lambda ctx, w: None
    # The design rule `ideal_depth` states (compiler/design_rules.py), recorded with
    # the chosen width and depth.
    depth_rule: str = ""


# ---------------------------------------------------------------- the interface

FAMILIES: dict[str, "Family"] = {}


class Family(ABC):
    """One model family. A subclass that sets `name` is registered on definition
    (a subclass of a family that keeps its parent's name is not)."""

    name: ClassVar[str]
    doc: ClassVar[str]
    inputs_doc: ClassVar[str] = ""
    outputs_doc: ClassVar[str] = ""
    msl_family_name: ClassVar[str] = "transformer"  # what `architecture.family: auto` resolves to
    # `architecture.family` values this family honours; another one is a warning
    # that says what is built instead (`built`; no warning when empty).
    accepts_families: ClassVar[tuple[str, ...]] = ("auto", "transformer")
    built: ClassVar[str] = ""
    rules: ClassVar[tuple[Rule, ...]] = ()
    default_objective: ClassVar[str | None] = None  # None: classification when the model outputs logits
    generates: ClassVar[bool] = False  # its model has a decode form (a KV cache): `generate`, `metagen generate`
    # Hugging Face's task for this family's model (the model card's `pipeline_tag`);
    # empty when the Hub has no counterpart. `hub_task` may choose by the built config.
    pipeline_tag: ClassVar[str] = ""
    unit: ClassVar[UnitOfWork]
    config: ClassVar[type[ArchConfig]]
    tiny_doc: ClassVar[str] = ""  # docs/families.md's --tiny table
    # `task.type` words this family performs; another one is a warning at that key
    # (the model follows modality and objective). Empty: any task (best effort).
    tasks: ClassVar[tuple[str, ...]] = ()
    # `architecture.norm` values this family builds (in the architecture section and
    # every tower); another one is an error at its key, never a silent substitute.
    norms: ClassVar[tuple[str, ...]] = ("layernorm", "rmsnorm")
    # The task default: parameter_budget.max when the spec gives none, and the
    # published design it is the size of (docs/families.md, "Per-task defaults").
    default_budget: ClassVar[int] = 1_000_000_000
    default_budget_source: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" not in cls.__dict__:
            return
        for attr in ("doc", "unit", "config"):
            if not hasattr(cls, attr):
                raise TypeError(f"family {cls.name}: declare '{attr}'")
        if cls.name in FAMILIES:
            raise TypeError(f"family {cls.name} is declared twice")
        FAMILIES[cls.name] = cls()

    def hub_task(self, arch: "ArchConfig") -> str:
        """The model card's `pipeline_tag` for the model built from `arch`."""
        return self.pipeline_tag

    # -- spec and resolution

    def msl_family(self, ctx: CompileContext) -> str:
        """The spec language's `architecture.family` for this model: what the user
        wrote, or what `auto` resolved to."""
        written = ctx.spec.architecture.family
        return written if written != "auto" else self.msl_family_name

    def resolve(self, ctx: CompileContext) -> None:
        """Diagnose a family key it does not honour and keys it does not read, then
        fill ctx.arch."""
        written = ctx.spec.architecture.family
        if self.built and written not in self.accepts_families:
            ctx.sink.warning(ctx.spec.architecture.loc("family"), self.family_mismatch(written))
        self.report_unused_keys(ctx)
        self.check_task(ctx)
        self.check_norms(ctx, ctx.spec.architecture, self.config, "architecture.")
        self.configure(ctx)

    def check_norms(self, ctx: CompileContext, section, config: type[ArchConfig], prefix: str) -> None:
        towers = config.towers()
        for key, value in section.items():
            if not section.given(key):
                continue
            if key in towers:
                self.check_norms(ctx, value, towers[key], f"{prefix}{key}.")
            elif key == "norm" and value not in self.norms:
                ctx.sink.error(
                    section.loc(key),
                    f"{prefix}norm '{value}' is not built by {self.name}; it takes {' or '.join(self.norms)}",
                )

    def check_task(self, ctx: CompileContext) -> None:
        """`task.type` restates what modality and objective already decide; one that
        contradicts the model being built is a warning at its line, never silence."""
        task = ctx.spec.task
        if not self.tasks or not task.given("type") or task.type in self.tasks:
            return
        does = " or ".join(self.tasks)
        ctx.sink.warning(
            task.loc("type"),
            f"task.type '{task.type}' does not match the model this spec builds: a {self.name} performs "
            f"{does} (the model follows modality and training.objective)",
        )

    def family_mismatch(self, written: str) -> str:
        """Tutorial Best Practices 3: a family that does not suit the task is not honoured silently."""
        return f"{unbuilt_family(written) or f'family {written!r} does not fit this modality and objective'}; building {self.built} (a transformer) instead"

    @abstractmethod
    def configure(self, ctx: CompileContext) -> None:
        """Fill ctx.arch (an instance of `config`) with conventions; free dimensions
        stay None."""

    def report_unused_keys(self, ctx: CompileContext) -> None:
        """A key written in the architecture section (or set with -D) that this
        family's config does not read is a warning at that key (an error under
        -Werror), so a pinned size never goes silently unused."""
        arch = ctx.spec.architecture
        self._report_unused(ctx, arch, self.config, "architecture.")

    def _report_unused(self, ctx: CompileContext, section, config: type[ArchConfig], prefix: str) -> None:
        reads = set(config.spec_keys())
        towers = config.towers()
        for key, value in section.items():
            if key in ("family", "components") and prefix == "architecture.":
                continue
            if not section.given(key):
                continue
            if key in towers:
                self._report_unused(ctx, value, towers[key], f"{prefix}{key}.")
                continue
            if key in reads:
                continue
            message = config.ignored_message(key) or self.unused_key_message(prefix + key)
            ctx.sink.warning(section.loc(key), message)

    def unused_key_message(self, dotted: str) -> str:
        article = "an" if self.name[:1] in "aeiou" else "a"
        return f"'{dotted}' has no effect on {article} {self.name}; ignored"

    def resolved_architecture(self, ctx: CompileContext) -> dict[str, Any]:
        """The architecture section of spec_resolved.yaml: the family and every key
        the config reads, with conventions and fitted sizes filled in."""
        out: dict[str, Any] = {"family": self.msl_family(ctx)}
        out.update(_resolved(ctx.arch))
        return out

    # -- building

    def model_builder(self, ctx: CompileContext) -> ModelBuilder:
        """A builder whose nodes point at the spec key that chose this family."""
        return ModelBuilder(loc=self.origin(ctx))

    @staticmethod
    def origin(ctx: CompileContext) -> Loc:
        arch = ctx.spec.architecture
        return arch.loc("family") if arch.given("family") else ctx.spec.modality.loc()

    @staticmethod
    def key_loc(ctx: CompileContext, key: str, section=None) -> Loc:
        """Where the spec writes `key` (the section, or the family's origin, when it does not)."""
        section = section if section is not None else ctx.spec.architecture
        if section.given(key):
            return section.loc(key)
        return Family.origin(ctx)

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
    def memory(self, ctx: CompileContext, params: int) -> dict[str, dict[str, int]]:
        """The family's one statement of its memory, in bytes:
        `inference` (blocks.inference: weights at the deployment precision, KV
        cache at the context for batch 1, one decode step's or forward's working
        set, total) and `training` (blocks.training: fp32 weights, gradients and
        AdamW moments, activations without and with checkpointing, totals)."""

    def objective(self, ctx: CompileContext) -> str | None:
        """The objective a spec that names none trains with (None: classification
        when the model outputs logits, regression when it outputs a prediction)."""
        return self.default_objective

    def data_transforms(self, ctx: CompileContext) -> list:
        """Data transforms (compiler/objectives.py `DataTransform`) the family's
        inputs need before the objective's own, e.g. synthetic graphs; none by default."""
        return []

    def workload(self, ctx: CompileContext, model: Model) -> dict[str, Any]:
        """One unit of work (`unit`) for the cost model: {'bindings': {symbol: int},
        'per_unit': units in one forward at those bindings}."""
        return {"bindings": {"batch": 1}, "per_unit": 1}


def unbuilt_family(written: str) -> str | None:
    """Honest words for an `architecture.family` the language names but the
    compiler does not build for this task: no family accepts it at all ("not
    implemented yet"), or only another task's family does (say which). None for a
    family that is built for some task but simply does not suit this one."""
    takers = sorted(f.name for f in FAMILIES.values() if written in f.accepts_families)
    if not takers:
        return f"family '{written}' is named by the spec language but not implemented yet (no {written} is built)"
    if written not in ("auto", "transformer", *(f.msl_family_name for f in FAMILIES.values())):
        return f"family '{written}' is implemented only as {', '.join(takers)} (docs/families.md), which this modality and objective do not select"
    return None


def _resolved(cfg: ArchConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    towers = type(cfg).towers()
    for key, f in type(cfg).spec_fields():
        if f.metadata[_SPEC][1]:
            continue
        value = getattr(cfg, f.name)
        if f.name in towers:
            out[key] = {k: v for k, v in _resolved(value).items() if v is not None}
        elif value is None:  # a setting that does not apply (llama3 rope settings without the scaling)
            continue
        else:
            out[key] = list(value) if isinstance(value, list) else value
    return out
