"""The one name uniquifier (cf. torch.fx's `_Namespace`): the IR printer, the graph
JSON, the Python emitters and the ONNX lowering all name things through it.

Values carry hints, never names; a `Namespace` turns each hint into a legal name
(`sanitize`) unique within its scope, suffixing `_1`, `_2`, ... on a clash, and
remembers the name it gave each value."""

from __future__ import annotations

from typing import Iterable

from metagen.ir.graph import Value


def sanitize(hint: str) -> str:
    """`hint` as an identifier: ASCII letters, digits and '_', not starting with a digit
    ('' stays '')."""
    out = "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else "_" for c in hint)
    if out and out[0].isdigit():
        out = "v" + out
    return out


class Namespace:
    def __init__(self, reserved: Iterable[str] = ()):
        self.taken: set[str] = set(reserved)
        self.names: dict[int, str] = {}

    def fresh(self, base: str) -> str:
        """`base` itself if free, else the first free `base_1`, `base_2`, ...; taken from
        then on. `base` is used as given (ONNX names keep their '/')."""
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name

    def name(self, v: Value | None = None, hint: str = "") -> str:
        """The name of value `v` (given once, then remembered), or a fresh name for
        `hint`; either made an identifier first."""
        if v is not None and id(v) in self.names:
            return self.names[id(v)]
        name = self.fresh(sanitize(v.hint if v is not None else hint) or "v")
        if v is not None:
            self.names[id(v)] = name
        return name

    __call__ = name

    def bind(self, v: Value, name: str) -> None:
        """Name `v` as `name`, which the caller has already made unique."""
        self.names[id(v)] = name
