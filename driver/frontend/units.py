"""Quantities with units, as users write them in specs.

Every parser returns the value or raises `UnitError` with a message that names the
accepted forms; the spec builder attaches the position.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

from metagen.diagnostics import did_you_mean


class UnitError(ValueError):
    pass


# One number grammar for every frontend (YAML, JSON, `.mg`, `-D`) and every unit:
# ASCII decimal digits only (no octal `010`, hex, `1_000`, sexagesimal `1:30`, nor
# fullwidth or Arabic-Indic digits, which Python's int() and float() would take).
_NUM = r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+)"
_PLAIN_INT = re.compile(r"[+-]?[0-9]+")
_PLAIN_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]")
MAX_NUMBER_DIGITS = 100  # a numeral longer than this is a typo (and 10^310 overflows a float)


def _check_numeral(text: str) -> None:
    digits = sum(c.isdigit() for c in text)
    if digits > MAX_NUMBER_DIGITS:
        raise UnitError(f"a number of {digits} digits is too long; numbers have at most {MAX_NUMBER_DIGITS} digits")
    if _LEADING_ZERO.match(text):
        raise UnitError(f"{text[:MAX_NUMBER_DIGITS]!r}: a number cannot start with 0 (YAML 1.1 read 010 as octal 8); write it without leading zeros")


def is_numeral(text: str) -> bool:
    """Whether plain (unquoted) `text` is a number in the spec language's grammar;
    numerals with a leading zero are text ("010"), and a numeric field refuses them."""
    return bool(_PLAIN_INT.fullmatch(text) or _PLAIN_FLOAT.fullmatch(text)) and not _LEADING_ZERO.match(text)


def read_numeral(text: str) -> int | float | None:
    """The number plain `text` spells (int without '.' or exponent), else None.
    Raises UnitError for a numeral of more than MAX_NUMBER_DIGITS digits."""
    if not is_numeral(text):
        return None
    _check_numeral(text)
    return int(text) if _PLAIN_INT.fullmatch(text) else float(text)


def leading_zero_hint(text: str) -> str:
    """A hint for text that is a numeral but for its leading zero, else ''."""
    if (_PLAIN_INT.fullmatch(text) or _PLAIN_FLOAT.fullmatch(text)) and _LEADING_ZERO.match(text):
        return "; a number cannot start with 0 (YAML 1.1 read 010 as octal 8): write it without leading zeros"
    return ""


def _num(text: str) -> float:
    """The value of a numeral matched by `_NUM` inside a quantity ("500" of "500M")."""
    _check_numeral(text)
    return float(text)


_PARAM_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_SUFFIX_HINT = {"G": "B"}  # giga is written B in parameter counts (as in "7B"); GB is a memory size
MAX_PARAMS = 10**13  # 10T: far beyond any trained model; larger is a typo


def _finite_positive(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise UnitError(f"{what} must be a finite number")
    if x <= 0:
        raise UnitError(f"{what} must be positive")
    return x


def parse_count(value, what: str = "parameter count", limit: int = MAX_PARAMS) -> int:
    """'50M' -> 50_000_000; '1.5B' -> 1_500_000_000; 125000 -> 125000."""
    if isinstance(value, bool):
        raise UnitError(f"{what} must be a number like \"500M\" or \"1.5B\", not a boolean")
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:  # an int beyond 1e308
            x = math.inf
    else:
        m = re.fullmatch(r"\s*([+-]?)" + _NUM + r"\s*([a-zA-Z]*)\s*", str(value))
        if not m:
            raise UnitError(f"cannot read {value!r} as a {what}; write e.g. \"50M\", \"1.5B\", \"70B\"")
        sign, num, suffix = m.groups()
        key = suffix.upper()
        if key not in _PARAM_SUFFIX:
            hint = f' (did you mean "{num}{_SUFFIX_HINT[key]}"?)' if key in _SUFFIX_HINT else ""
            raise UnitError(f"unknown suffix {suffix!r} in {value!r}; use K, M, B or T (e.g. \"500M\"){hint}")
        x = _num(num) * _PARAM_SUFFIX[key] * (-1 if sign == "-" else 1)
    if not math.isfinite(x):
        raise UnitError(f"{what} must be a finite number; the allowed range is 1 to {format_count(limit)}")
    if x < 1 or x > limit:
        raise UnitError(f"{what} {value!r} is out of range; the allowed range is 1 to {format_count(limit)}")
    return int(round(x))


_BYTES = {
    "B": 1,
    "KB": 1024, "KIB": 1024,
    "MB": 1024**2, "MIB": 1024**2,
    "GB": 1024**3, "GIB": 1024**3,
    "TB": 1024**4, "TIB": 1024**4,
}
MIN_BYTES, MAX_BYTES = 1024**2, 1024**5  # 1 MB to 1 PB


def parse_bytes(value, what: str = "memory budget") -> int:
    """'512MB' -> 536870912; '8GB' -> 8 GiB. Units are binary, as GPU tools report."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise UnitError(f"{what} needs a unit: write e.g. \"512MB\" or \"8GB\"")
    m = re.fullmatch(r"\s*([+-]?)" + _NUM + r"\s*([a-zA-Z]+)\s*", str(value))
    if not m:
        raise UnitError(f"cannot read {value!r} as a {what}; write e.g. \"512MB\", \"8GB\"")
    sign, num, unit = m.groups()
    if unit.upper() not in _BYTES:
        raise UnitError(f"unknown unit {unit!r} in {value!r}; use MB, GB or TB")
    x = _num(num) * _BYTES[unit.upper()] * (-1 if sign == "-" else 1)
    _finite_positive(x, what)
    if x < MIN_BYTES or x > MAX_BYTES:
        raise UnitError(f"{what} {value!r} is out of range; the allowed range is 1MB to 1PB")
    return int(x)


MAX_CONTEXT = 2**20  # 1M tokens


def parse_context(value) -> tuple[int, str | None]:
    """'32k' -> 32768 (k = 1024); '1M' -> 1048576; '∞' -> (1048576, warning)."""
    if isinstance(value, bool):
        raise UnitError("context window must be a token count like \"4096\" or \"32k\"")
    text = str(value).strip()
    if text.lower() in ("∞", "inf", "infinite", "infinity", "unlimited"):
        return MAX_CONTEXT, f"an infinite context window is not buildable; using {format_tokens(MAX_CONTEXT)} tokens"
    if isinstance(value, float) and not value.is_integer():
        raise UnitError(f"context window must be a whole number of tokens, not {value}")
    m = re.fullmatch(_NUM + r"\s*([kKmM]?)", text.replace("-", "\x00"))
    if not m:
        raise UnitError(f"cannot read {value!r} as a context window; write e.g. \"512\", \"32k\", \"128k\", \"1M\"")
    num, suffix = m.groups()
    x = _num(num) * {"": 1, "k": 1024, "m": 1024**2}[suffix.lower()]
    if x < 1:
        raise UnitError("context window must be at least 1 token")
    if x > MAX_CONTEXT:
        raise UnitError(f"context window {value!r} is out of range; the allowed range is 1 to 1M tokens")
    if not float(x).is_integer():
        raise UnitError(f"context window {value!r} is not a whole number of tokens")
    return int(x), None


MAX_DURATION = 1000 * 365 * 86400  # a budget beyond this is a typo, and overflows the estimates
_DURATION = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "month": 2592000, "months": 2592000,
}


def parse_duration(value) -> float:
    """'5 days' -> 432000.0 seconds."""
    m = re.fullmatch(_NUM + r"\s*([a-zA-Z]+)", str(value).strip())
    if not m or m.group(2).lower() not in _DURATION:
        raise UnitError(f"cannot read {value!r} as a duration; write e.g. \"12 hours\", \"5 days\", \"2 weeks\"")
    x = _finite_positive(_num(m.group(1)) * _DURATION[m.group(2).lower()], "duration")
    if x > MAX_DURATION:
        raise UnitError(f"duration {value!r} is out of range; the allowed range is up to 52000 weeks (1000 years)")
    return x


def parse_hardware(value, accelerators: Iterable[str] = ()) -> tuple[int, str]:
    """'8xA100' -> (8, 'A100'); 'H100' -> (1, 'H100'). With `accelerators` (the
    known names, upper case), the name must be one of them, optionally followed by
    a variant after '-' or '_' ("A100-80GB", "H100_SXM"): "8xFOO", "8xA100x2" and
    "nan" are refused."""
    m = re.fullmatch(r"\s*(?:([0-9]+)\s*[xX×*]\s*)?([A-Za-z][A-Za-z0-9_\-]*)\s*", str(value))
    if not m:
        raise UnitError(f"cannot read {value!r} as hardware; write e.g. \"8xA100\", \"512xH100\"")
    count = _num(m.group(1) or "1")
    if count < 1 or count > 10**6:
        raise UnitError(f"device count in {value!r} is out of range (1 to 1000000)")
    name = m.group(2)
    known = {a.upper() for a in accelerators}
    if known:
        cuts = [len(name)] + [i for i, c in enumerate(name) if c in "-_"]
        if not any(name[:i].upper().replace("-", "").replace("_", "") in known for i in cuts):
            raise UnitError(
                f"unknown accelerator {name!r} in {value!r}{did_you_mean(name.upper(), known)}; "
                f"known: {', '.join(sorted(known))} (a variant follows '-', e.g. \"A100-80GB\")"
            )
    return int(count), name


# Words that count examples in rates ("1 mesh/s", "200 requests/s"): each is read
# as samples. A data size reads any counted noun as samples ("118k images", "1M
# sentence pairs", "5M rows"), except units of another quantity (NOT_COUNTS).
SAMPLE_NOUNS = frozenset(
    """sample samples example examples image images clip clips pair pairs graph graphs row rows
    transition transitions mesh meshes video videos sentence sentences document documents record records
    episode episodes molecule molecules frame frames item items query queries request requests""".split()
)
TOKEN_NOUNS = frozenset(("token", "tokens", "tok"))
NOT_COUNTS = frozenset(
    """b kb mb gb tb pb kib mib gib tib pib byte bytes kilobytes megabytes gigabytes terabytes petabytes
    s sec secs second seconds min mins minute minutes day days week weeks month months year years
    flop flops""".split()
)
DATA_SIZE_UNREAD = (
    "{value!r} is kept as written: it is not a number of tokens or samples (e.g. \"100B tokens\", "
    "\"118k images\"), so the training estimate does not use it"
)


def read_data_size(value) -> tuple[int, str] | None:
    """'100B tokens' -> (100e9, 'tokens'); '118k images' -> (118000, 'samples');
    '1M sentence pairs' -> (1e6, 'samples'). None for free text that is not a count
    of tokens or samples ("unknown but large", "5 TB", "3 days", "10B tokns"); UnitError for a count that
    is one but is out of range or fractional. Suffixes K, M, B, T in either case;
    the number is `_NUM`, the one numeral grammar."""
    if isinstance(value, bool):
        return None
    m = re.fullmatch(r"\s*" + _NUM + r"\s*((?:[KMBTkmbt](?![A-Za-z_\-]))?)((?:\s*[A-Za-z_][A-Za-z_\-]*)*)\s*", str(value))
    if not m:
        return None
    num, suffix, words = m.groups()
    words = words.split()
    noun = words[-1].lower() if words else "tokens"
    if noun in TOKEN_NOUNS:
        unit = "tokens"
    elif noun in NOT_COUNTS or did_you_mean(noun, TOKEN_NOUNS):
        return None  # a size in bytes, a time, or a misspelt "tokens": not a count we can read
    else:
        unit = "samples"  # images, pairs, rows, meshes, hours of audio (as before): examples
    x = _num(num) * _PARAM_SUFFIX[suffix.upper()]
    _finite_positive(x, "data size")
    if x < 1 or x > 10**16:
        raise UnitError(f"data size {value!r} is out of range (1 to 10 quadrillion {unit})")
    if not x.is_integer():
        raise UnitError(f"data size {value!r} is not a whole number of {unit}")
    return int(x), unit


def parse_data_size(value) -> tuple[int, str]:
    """`read_data_size`, refusing what it cannot read."""
    out = read_data_size(value)
    if out is None:
        raise UnitError(f"cannot read {value!r} as a data size; write e.g. \"100B tokens\", \"1.28M samples\"")
    return out


def parse_rate(value) -> tuple[float, str]:
    """'60 tok/s' -> (60.0, 'tok/s'); '30fps' -> (30.0, 'img/s'); '2 img/s'."""
    m = re.fullmatch(r"\s*" + _NUM + r"\s*([a-zA-Z/]+)\s*", str(value))
    if not m:
        raise UnitError(f"cannot read {value!r} as a rate; write e.g. \"60 tok/s\", \"2 img/s\", \"30fps\"")
    x = _finite_positive(_num(m.group(1)), "rate")
    unit = m.group(2).lower()
    aliases = {
        "tok/s": "tok/s", "tokens/s": "tok/s", "token/s": "tok/s", "tps": "tok/s",
        "img/s": "img/s", "images/s": "img/s", "fps": "img/s", "frames/s": "img/s",
        "samples/s": "samples/s", "req/s": "samples/s", "qps": "samples/s",
    }
    noun = unit[:-2] if unit.endswith("/s") else ""
    if unit not in aliases and noun in SAMPLE_NOUNS:
        return x, "samples/s"  # "1 mesh/s", "1 sample/s": one example a second
    if unit not in aliases:
        raise UnitError(f"unknown rate unit {unit!r} in {value!r}; use tok/s, img/s, fps or samples/s")
    return x, aliases[unit]


def parse_time(value) -> float:
    """'10ms' -> 0.01 seconds."""
    m = re.fullmatch(r"\s*" + _NUM + r"\s*(ms|s|us|µs)\s*", str(value))
    if not m:
        raise UnitError(f"cannot read {value!r} as a time; write e.g. \"10ms\" or \"2s\"")
    scale = {"ms": 1e-3, "s": 1.0, "us": 1e-6, "µs": 1e-6}[m.group(2)]
    return _finite_positive(_num(m.group(1)) * scale, "time")


def format_count(n: int) -> str:
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            x = n / scale
            return f"{x:.3g}{suffix}" if x < 100 else f"{x:.0f}{suffix}"
    return str(n)


def format_bytes(n: int) -> str:
    for suffix, scale in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n}B"


def format_tokens(n: int) -> str:
    if n >= 1024**2 and n % 1024**2 == 0:
        return f"{n // 1024**2}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)


def format_bytes_exact(n: int) -> str:
    """Bytes as the largest binary unit that divides them exactly ("8GB")."""
    for suffix, scale in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n % scale == 0:
            return f"{n // scale}{suffix}"
    return f"{n}B"
