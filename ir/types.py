"""Tensor types: a dtype and a shape whose dims are ints or named symbols."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Mapping, Union

Dim = Union[int, str]  # str: a symbol ("batch", "seq"), a sum like "seq+1", a quotient like "height/8"


class DType(enum.Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    i64 = "i64"
    i32 = "i32"
    bool = "bool"

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f16, DType.bf16)

    @property
    def nbytes(self) -> int:
        return _DTYPE_INFO[self.value][0]

    @property
    def numpy(self) -> str:
        """The NumPy name, which is also the spec's (`constraints.dtype: bfloat16`)."""
        return _DTYPE_INFO[self.value][1]

    @classmethod
    def from_numpy(cls, name: str) -> "DType":
        for value, (_, numpy_name) in _DTYPE_INFO.items():
            if numpy_name == name:
                return cls(value)
        raise ValueError(f"no IR dtype for {name!r}")


# The one dtype table: bytes per element and NumPy name of each IR dtype.
_DTYPE_INFO: dict[str, tuple[int, str]] = {
    "f32": (4, "float32"),
    "f16": (2, "float16"),
    "bf16": (2, "bfloat16"),
    "i64": (8, "int64"),
    "i32": (4, "int32"),
    "bool": (1, "bool"),
}


def dim_str(d: Dim) -> str:
    return str(d)


_TERM = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\*([0-9]+))?(?:/([0-9]+))?")


def _scaled(d: str, num: int, den: int) -> Dim | None:
    """`d * num / den` for a dim of the form sym, sym*k or sym/k (None otherwise),
    in lowest terms: "height/8" * 2 -> "height/4", "height" * 8 -> "height*8"."""
    m = _TERM.fullmatch(d)
    if not m:
        return None
    num *= int(m.group(2) or 1)
    den *= int(m.group(3) or 1)
    g = math.gcd(num, den)
    num, den = num // g, den // g
    return m.group(1) + (f"*{num}" if num > 1 else "") + (f"/{den}" if den > 1 else "")


def dim_offset(d: str) -> tuple[str, int]:
    """`"seq+1"` -> ("seq", 1), `"height/2"` -> ("height/2", 0)."""
    m = re.fullmatch(r"(.+?)\+([0-9]+)", d)
    return (m.group(1), int(m.group(2))) if m else (d, 0)


def dim_add(d: Dim, n: int) -> Dim:
    """`d + n`, folding constants; symbolic sums stay readable ("seq+1")."""
    if isinstance(d, int):
        return d + n
    base, c = dim_offset(d)
    n += c
    if n < 0:
        raise ValueError(f"cannot subtract {-n} from symbolic dim {d!r}")
    return base if n == 0 else f"{base}+{n}"


def dim_div(d: Dim, n: int) -> Dim:
    """`d / n` for a dim known to be a multiple of n ("height" / 2 -> "height/2",
    "height/2" / 2 -> "height/4"). Models that divide a symbolic dim check the
    multiple at run time (op `require_multiple`)."""
    if isinstance(d, int):
        if d % n:
            raise ValueError(f"{d} is not a multiple of {n}")
        return d // n
    out = _scaled(d, 1, n)
    if out is None:
        raise ValueError(f"cannot divide symbolic dim {d!r}")
    return out


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int):
        a, b = b, a
    if isinstance(b, int):
        out = _scaled(a, b, 1)
        if out is not None:
            return out
    return f"{a}*{b}"


def eval_dim(d: Dim, bindings: Mapping[str, int]) -> int:
    """The dim's value with symbols bound (for FLOP and memory estimates)."""
    if isinstance(d, int):
        return d
    total = 0
    for term in d.split("+"):
        prod = 1
        for factor in term.split("*"):
            if factor.isdigit():
                prod *= int(factor)
            else:
                sym, _, div = factor.partition("/")
                prod *= bindings[sym] // int(div or 1)
        total += prod
    return total


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self):
        for d in self.shape:
            if isinstance(d, bool) or not isinstance(d, (int, str)):
                raise TypeError(f"bad dim {d!r}")
            if isinstance(d, int) and d < 0:
                raise ValueError(f"negative dim {d}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape)

    def numel(self, bindings: Mapping[str, int] | None = None) -> int:
        n = 1
        for d in self.shape:
            n *= eval_dim(d, bindings or {})
        return n

    def __str__(self) -> str:
        return f"{self.dtype.value}[{', '.join(dim_str(d) for d in self.shape)}]"


def parse_type(text: str) -> TensorType:
    m = re.fullmatch(r"\s*([a-z0-9]+)\[(.*)\]\s*", text)
    if not m:
        raise ValueError(f"bad tensor type {text!r}")
    dims: list[Dim] = []
    inner = m.group(2).strip()
    if inner:
        for part in inner.split(","):
            part = part.strip()
            dims.append(int(part) if part.isdigit() else part)
    return TensorType(DType(m.group(1)), tuple(dims))
