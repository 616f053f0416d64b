"""The located tree: what every frontend produces and the spec builder consumes.

YAML and the `.mg` DSL both parse to this shape (maps, lists, scalars, each with the
position it was written at), so there is exactly one place that gives the language
its meaning: `metagen.frontend.spec_builder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from metagen.diagnostics import Loc

Scalar = Union[str, int, float, bool, None]

# Limits every frontend enforces (docs/robustness.md lists them): far beyond any real
# spec, and small enough that a hostile one is refused in well under a second.
MAX_SPEC_BYTES = 4 * 1024 * 1024  # one file, and a spec with everything it imports
MAX_VALUES = 20_000  # keys and values, after YAML aliases are expanded and imports merged
MAX_DEPTH = 64  # nesting of maps and lists
MAX_IMPORT_DEPTH = 32  # a .mg file importing one importing one ...


@dataclass
class LNode:
    """One value with its source position.

    `value` is a scalar, a `dict[str, LNode]` (insertion-ordered, as written) or a
    `list[LNode]`. For maps, `key_locs` holds where each key was written, so an
    unknown key is reported at the key rather than at its value. `quoted` is true
    for scalars written as quoted strings (so "512" stays text where it matters).
    """

    value: Any
    loc: Loc
    key_locs: dict[str, Loc] = field(default_factory=dict)
    quoted: bool = False

    @property
    def is_map(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_list(self) -> bool:
        return isinstance(self.value, list)

    def to_plain(self) -> Any:
        """The tree without positions: dicts, lists and scalars."""
        if self.is_map:
            return {k: v.to_plain() for k, v in self.value.items()}
        if self.is_list:
            return [v.to_plain() for v in self.value]
        return self.value

    def get(self, key: str) -> "LNode | None":
        return self.value.get(key) if self.is_map else None


def from_plain(value: Any, loc: Loc) -> LNode:
    """A located tree for plain data (used for `-D` overrides and tests)."""
    if isinstance(value, dict):
        return LNode({str(k): from_plain(v, loc) for k, v in value.items()}, loc, {str(k): loc for k in value})
    if isinstance(value, (list, tuple)):
        return LNode([from_plain(v, loc) for v in value], loc)
    return LNode(value, loc, quoted=isinstance(value, str))
