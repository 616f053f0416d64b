"""Located tree -> typed `Spec`: the single place where MSL gets its meaning.

Both frontends (YAML and the `.mg` DSL) hand a located tree to `build_spec`, so
their specs cannot drift apart. Every problem is reported at the position of the key
or value that causes it, all problems of a spec at once.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from metagen.diagnostics import MAX_SHOWN, CompileError, Diagnostic, DiagnosticSink, Loc, did_you_mean
from metagen.frontend import schema as S
from metagen.frontend import units
from metagen.frontend.tree import LNode, from_plain


class Record:
    """A typed spec section: attribute access to values, `loc(name)` to positions.

    Absent optional fields read as their schema default (None when a pass decides).
    `given(name)` tells whether the user wrote the field.
    """

    __slots__ = ("_field", "_values", "_locs", "_given", "_loc")

    def __init__(self, field: S.Field, loc: Loc):
        object.__setattr__(self, "_field", field)
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_locs", {})
        object.__setattr__(self, "_given", set())
        object.__setattr__(self, "_loc", loc)

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Record is read-only")

    def loc(self, name: str | None = None) -> Loc:
        if name is None:
            return self._loc
        return self._locs.get(name, self._loc)

    def given(self, name: str) -> bool:
        return name in self._given

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._values.items())

    def get(self, name: str, default: Any = None) -> Any:
        v = self._values.get(name)
        return default if v is None else v

    def to_plain(self, drop_none: bool = True) -> dict:
        out = {}
        for f in self._field.fields:
            v = self._values.get(f.name)
            if isinstance(v, Record):
                sub = v.to_plain(drop_none)
                if sub or not drop_none:
                    out[f.name] = sub
            elif v is None and drop_none:
                continue
            else:
                out[f.name] = _plain_value(f, v)
        return out


def _plain_value(f: S.Field, v: Any) -> Any:
    if f.kind == S.BYTES and isinstance(v, int):
        return units.format_bytes_exact(v)
    if isinstance(v, list):
        return list(v)
    return v


Spec = Record  # the root record


def _type_name(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if v is None:
        return "null"
    return "a string"


class _Builder:
    def __init__(self, sink: DiagnosticSink):
        self.sink = sink
        self.hints = 0  # "did you mean" for the first diagnostics (those printed), not for 20,000
        self.recorded: list[tuple[str, Loc]] = []  # keys written that cannot change the model

    def did_you_mean(self, word: str, choices) -> str:
        self.hints += 1
        return did_you_mean(word, choices) if self.hints <= MAX_SHOWN else ""

    def build_map(self, field: S.Field, node: LNode | None, path: str, loc: Loc, quiet: bool = False) -> Record:
        """`quiet`: the whole section is missing and already reported; do not
        report its required members one by one."""
        if node is not None and field.scalar_key and not node.is_map and not node.is_list and node.value is not None:
            node = LNode({field.scalar_key: node}, node.loc, {field.scalar_key: node.loc})  # "x" means {name: "x"}
        rec = Record(field, node.loc if node is not None else loc)
        if node is not None and not node.is_map:
            if node.value is None:  # `constraints:` with nothing under it
                node = LNode({}, node.loc)
            else:
                self.sink.error(node.loc, f"'{path}' must be a mapping, not {_type_name(node.value)}")
                node = None
        given = node.value if node is not None else {}
        names = [f.name for f in field.fields]
        for key, child in given.items():
            if field.member(key) is None:
                where = f"in '{path}'" if path else "at the top level"
                kloc = node.key_locs.get(key, child.loc)
                self.sink.error(kloc, f'unknown key "{key}" {where}{self.did_you_mean(key, names)}')
        for f in field.fields:
            child = given.get(f.name)
            sub = f"{path}.{f.name}" if path else f.name
            if f.kind == S.MAP:
                missing = child is None or child.value is None
                if missing and f.required and not quiet:
                    self.sink.error(rec.loc(), f"missing required key '{sub}'")
                rec._values[f.name] = self.build_map(f, child, sub, rec.loc(), quiet=quiet or missing)
                if child is not None:
                    rec._locs[f.name] = node.key_locs.get(f.name, child.loc)
                    rec._given.add(f.name)
                    if f.recorded:
                        self.recorded.append((sub, rec._locs[f.name]))
                continue
            if child is None or child.value is None:
                if f.required and not quiet:
                    self.sink.error(rec.loc(), f"missing required key '{sub}'")
                rec._values[f.name] = self.default(f, sub, rec.loc())
                continue
            rec._given.add(f.name)
            rec._locs[f.name] = child.loc
            rec._values[f.name] = self.value(f, child, sub)
            if f.recorded:
                self.recorded.append((sub, node.key_locs.get(f.name, child.loc)))
        return rec

    def default(self, f: S.Field, path: str, loc: Loc) -> Any:
        if f.default is None:
            return None
        return self.value(f, from_plain(f.default, loc), path)

    def value(self, f: S.Field, node: LNode, path: str) -> Any:
        v = node.value
        err = self.sink.error
        if f.kind == S.MAP:  # a mapping inside a list (architecture.components)
            return self.build_map(f, node, path, node.loc).to_plain()
        if f.kind == S.LIST:
            if not node.is_list and f.one_or_many and v is not None and not node.is_map:
                node = LNode([node], node.loc)  # one value, or a list of them: both are the language
            if not node.is_list:
                if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                    # Read as a one-item list, but the schema says list: warn with the fix.
                    self.sink.warning(node.loc, f"'{path}' must be a list (the JSON Schema says so): write [{_scalar_text(v)}]")
                    node = LNode([node], node.loc)
                else:
                    err(node.loc, f"'{path}' must be a list, not {_type_name(v)}")
                    return None
            return [self.value(f.item, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if node.is_map or node.is_list:
            err(node.loc, f"'{path}' must be {_expect(f)}, not {_type_name(v)}")
            return None
        try:
            return self.scalar(f, node, path)
        except units.UnitError as exc:
            err(node.loc, f"'{path}': {exc}")
            return None

    def scalar(self, f: S.Field, node: LNode, path: str) -> Any:
        v = node.value
        err = self.sink.error
        kind = f.kind
        if kind == S.STR:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                err(node.loc, f"'{path}' must be a string, not {_type_name(v)}")
                return None
            text = str(v) if isinstance(v, str) else _number_text(v)
            if not isinstance(v, str):
                # Read as text, but the schema says string: warn with the fix.
                self.sink.warning(node.loc, f"'{path}' must be a string (the JSON Schema says so): write \"{text}\" in quotes")
            if f.choices and text not in f.choices:
                err(node.loc, f"'{path}' must be one of {', '.join(repr(c) for c in f.choices)}, not {text!r}")
            return text
        if kind == S.ENUM:
            if not isinstance(v, str):
                err(node.loc, f"'{path}' must be one of {_choices(f)}, not {_type_name(v)} {v!r}")
                return None
            word = v.strip().lower()
            alias = dict(f.aliases).get(word)
            if alias is not None and word not in f.choices:
                self.sink.note(node.loc, f"'{path}': \"{v}\" is a task word, read as the {f.name} \"{alias}\"")
                return alias
            if word != v and word in f.choices and not f.open_choices:
                # Read case- and space-insensitively, but the schema lists exact words.
                self.sink.warning(node.loc, f"'{path}': write \"{word}\" (the JSON Schema lists exact words), not \"{v}\"")
            if word not in f.choices:
                hint = self.did_you_mean(word, f.choices + tuple(w for w, _ in f.aliases))
                if f.open_choices:
                    self.sink.warning(node.loc, f"unsupported {f.name} \"{v}\"{hint}; MetaGen builds a best-effort model for it")
                    return word
                err(node.loc, f"'{path}' must be one of {_choices(f)}, not \"{v}\"{hint}")
                return None
            return word
        if kind == S.BOOL:
            if not isinstance(v, bool):
                err(node.loc, f"'{path}' must be true or false, not {_type_name(v)} {v!r}")
                return None
            return v
        if kind in (S.INT, S.FLOAT):
            num = _as_number(v)
            if num is None:
                hint = units.leading_zero_hint(v) if isinstance(v, str) and not node.quoted else ""
                err(node.loc, f"'{path}' must be {_expect(f)}, not {_type_name(v)} {v!r}{hint}")
                return None
            if kind == S.INT:
                if isinstance(num, float) and not num.is_integer():
                    err(node.loc, f"'{path}' must be a whole number, not {num}")
                    return None
                num = int(num)
            else:
                num = float(num)
            if (f.minimum is not None and num < f.minimum) or (f.maximum is not None and num > f.maximum):
                err(node.loc, f"'{path}' = {v} is out of range; the allowed range is {_fmt(f.minimum)} to {_fmt(f.maximum)}")
                return None
            return num
        if kind == S.PARAMS:
            return units.parse_count(v)
        if kind == S.BYTES:
            return units.parse_bytes(v)
        if kind == S.CONTEXT:
            n, warning = units.parse_context(v)
            if warning:
                self.sink.warning(node.loc, f"'{path}': {warning}")
            return n
        if kind == S.LATENCY:
            text = str(v).strip().lower()
            if text in S.LATENCY_WORDS:
                return text
            try:
                units.parse_time(text)
                return text
            except units.UnitError:
                pass
            try:
                units.parse_rate(text)
                return text
            except units.UnitError:
                pass
            hint = self.did_you_mean(text, S.LATENCY_WORDS)
            raise units.UnitError(
                f"cannot read {v!r} as a latency{hint}; use one of {', '.join(S.LATENCY_WORDS)}, "
                "a time (\"10ms\") or a rate (\"60 tok/s\", \"2 img/s\", \"30fps\")"
            )
        if kind == S.HARDWARE:
            from metagen.compiler.objectives import ACCELERATORS  # the accelerators with known throughput

            units.parse_hardware(v, ACCELERATORS)
            return str(v).strip()
        if kind == S.DATA_SIZE:
            if units.read_data_size(v) is None:
                self.sink.note(node.loc, f"'{path}': {units.DATA_SIZE_UNREAD.format(value=str(v).strip())}")
            return str(v).strip()
        parser = {
            S.RATE: units.parse_rate,
            S.DURATION: units.parse_duration,
        }[kind]
        parser(v)
        return str(v).strip()


def _number_text(v) -> str:
    return str(v)


def _scalar_text(v) -> str:
    """A scalar as it would be written inside a list of the user's spec."""
    return v if isinstance(v, str) else _number_text(v)


def _as_number(v):
    """A finite number, or None. Every frontend reads numerals by one grammar
    (`units.read_numeral`), so text here is never a number: "1e-5" is already a
    float, and "010", "1_000", "１２" or "1:30" stay text and are refused."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if math.isfinite(v) else None


def _fmt(x) -> str:
    if x is None:
        return "unbounded"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _choices(f: S.Field) -> str:
    return ", ".join(f'"{c}"' for c in f.choices)


def _expect(f: S.Field) -> str:
    return {
        S.INT: "an integer",
        S.FLOAT: "a number",
        S.BOOL: "true or false",
        S.STR: "a string",
        S.ENUM: f"one of {_choices(f)}",
        S.MAP: "a mapping",
        S.LIST: "a list",
    }.get(f.kind, "a value with a unit")


def apply_overrides(tree: LNode, overrides: list[tuple[str, str]], sink: DiagnosticSink) -> LNode:
    """Apply `-D key=value` overrides to a located tree, as if written in the spec.

    Values are read as YAML scalars by the YAML frontend's own rules, so
    `-D architecture.layers=2` is an integer, `-D name="x y"` a string, and
    `-D description=2001-02-03` the same text it is in a file. Text that is not
    well-formed YAML, or that YAML reads as a mapping, is taken as it is.
    """
    from metagen.frontend.yaml_frontend import parse_override

    if not tree.is_map:
        return tree  # build_spec says a spec must be a mapping; -D has nowhere to go
    for i, (key, raw) in enumerate(overrides):
        loc = Loc("<command line>", 1, i + 1)
        try:
            value = parse_override(raw, loc) if raw.strip() else None
        except CompileError as exc:
            sink.extend(Diagnostic(d.severity, d.loc, f"-D {key}: {d.message}") for d in exc.diagnostics)
            continue
        if value is None or (value.is_map and not raw.strip().startswith("{")) or (
            value.is_list and not raw.strip().startswith("[")
        ):
            if not _is_text(raw):
                sink.error(loc, f"-D {key}: the value is not UTF-8 text")
                continue
            value = LNode(raw, loc, quoted=True)
        parts = key.split(".")
        node = tree
        ok = True
        for part in parts[:-1]:
            child = node.value.get(part) if node.is_map else None
            if child is None or (child.value is None):
                child = LNode({}, loc)
                node.value[part] = child
                node.key_locs[part] = loc
            if not child.is_map:
                sink.error(loc, f"-D {key}: '{part}' is not a section")
                ok = False
                break
            node = child
        if ok:
            node.value[parts[-1]] = value
            node.key_locs[parts[-1]] = loc
    return tree


def _is_text(raw: str) -> bool:
    try:
        raw.encode("utf-8")  # argv undecodable in the locale arrives as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def build_spec(tree: LNode, sink: DiagnosticSink) -> Spec:
    """Typed spec from a located tree; errors go to `sink` (check it afterwards)."""
    if not tree.is_map:
        sink.error(tree.loc, f"a spec must be a mapping of sections, not {_type_name(tree.value)}")
        tree = LNode({}, tree.loc)
    builder = _Builder(sink)
    spec = builder.build_map(S.SPEC, tree, "", tree.loc)
    _check_cross_fields(spec, sink)
    if builder.recorded:
        keys = [path for path, _ in builder.recorded]
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        sink.note(
            builder.recorded[0][1],
            f"{shown} {'is' if len(keys) == 1 else 'are'} kept in spec_resolved.yaml and the model card; "
            f"{'it does' if len(keys) == 1 else 'they do'} not affect the model",
        )
    return spec


def _check_cross_fields(spec: Spec, sink: DiagnosticSink) -> None:
    budget = spec.constraints.parameter_budget
    if budget.given("min") and budget.min is not None and budget.max is not None and budget.min > budget.max:
        sink.error(
            budget.loc("min"),
            f"'constraints.parameter_budget.min' ({units.format_count(budget.min)}) is larger than "
            f"'max' ({units.format_count(budget.max)}); min must be at most max",
        )
    for section in ("inputs", "outputs"):
        values = getattr(spec.modality, section) or []
        if spec.modality.given(section) and not values:
            sink.error(spec.modality.loc(section), f"'modality.{section}' must name at least one modality")
