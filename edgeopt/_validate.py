"""One validation helper and one message template for every user-facing value.

Every complaint about a value reads the same, wherever it comes from (a profile, a plan, bench
settings, an API argument)::

    <where>: <key>: expected <what was expected>, found <what was found>

``where`` is the file or the function/parameter owner (``rpi4.toml``, ``compile()``,
``plan['fc1']``); ``key`` the field (``[budget] latency_ms``, ``trials``, ``rank``). A leaf module:
standard library only, so the runtime half can use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt.errors import InputError


def describe(value: Any) -> str:
    """How a found value is shown: its kind and its repr (``a string 'x'``, ``an integer -3``)."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        tuple: "an array",
        dict: "a table",
    }.get(type(value))
    if isinstance(value, dict):
        return "a table"
    if value is None:
        return "nothing"
    return f"{kind} {value!r}" if kind else f"{type(value).__name__} {value!r}"


def message(where: str, key: str, expected: str, found: Any) -> str:
    """The one template: ``<where>: <key>: expected <expected>, found <found>``."""
    prefix = f"{where}: " if where else ""
    return f"{prefix}{key}: expected {expected}, found {describe(found)}"


def fail(where: str, key: str, expected: str, found: Any, *, error: type[InputError] = InputError) -> InputError:
    """The error (not raised) for a bad value, so callers write ``raise fail(...)``."""
    return error(message(where, key, expected, found))


def number(
    value: Any,
    where: str,
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    integer: bool = False,
    error: type[InputError] = InputError,
) -> float | int:
    """Check a real (or, with ``integer``, an int) within bounds; returns it as float (or int)."""
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if min_exclusive else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if max_exclusive else value <= maximum
    if not ok:
        raise fail(where, key, bounds_text(minimum, maximum, min_exclusive, max_exclusive, integer), value, error=error)
    return int(value) if integer else float(value)


def bounds_text(
    minimum: float | None,
    maximum: float | None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    integer: bool = False,
) -> str:
    """``an integer >= 1``, ``a number in (0, 1]``, ``a number > 0``: the expected part of a message."""
    noun = "an integer" if integer else "a number"
    if minimum is not None and maximum is not None:
        return (
            f"{noun} in {'(' if min_exclusive else '['}{_fmt(minimum)}, {_fmt(maximum)}{')' if max_exclusive else ']'}"
        )
    if minimum is not None:
        return f"{noun} {'>' if min_exclusive else '>='} {_fmt(minimum)}"
    if maximum is not None:
        return f"{noun} {'<' if max_exclusive else '<='} {_fmt(maximum)}"
    return noun


def choice(value: Any, where: str, key: str, choices: Iterable[Any], *, error: type[InputError] = InputError) -> Any:
    """Check ``value`` is one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise fail(
            where,
            key,
            "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in options),
            value,
            error=error,
        )
    return value


def boolean(value: Any, where: str, key: str, *, error: type[InputError] = InputError) -> bool:
    """Check a real boolean (``true``/``false`` in TOML; 1 and "yes" are not)."""
    if not isinstance(value, bool):
        raise fail(where, key, "true or false", value, error=error)
    return value


def string(value: Any, where: str, key: str, *, nonempty: bool = False, error: type[InputError] = InputError) -> str:
    """Check a string (with ``nonempty``: one that is not blank)."""
    if not isinstance(value, str) or (nonempty and not value.strip()):
        raise fail(where, key, "a non-empty string" if nonempty else "a string", value, error=error)
    return value


def strings(value: Any, where: str, key: str, *, error: type[InputError] = InputError) -> tuple[str, ...]:
    """Check an array of strings; returns a tuple."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise fail(where, key, "an array of strings", value, error=error)
    return tuple(value)


def pairs(value: Any, where: str, key: str, *, error: type[InputError] = InputError) -> tuple[tuple[float, float], ...]:
    """Check a non-empty array of ``[number > 0, number > 0]`` pairs; returns a tuple of float pairs."""

    def positive(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0

    ok = (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (list, tuple)) and len(v) == 2 and all(positive(x) for x in v) for v in value)
    )
    if not ok:
        raise fail(where, key, "a non-empty array of [number > 0, number > 0] pairs", value, error=error)
    return tuple((float(a), float(b)) for a, b in value)


def unknown_key(where: str, key: str, allowed: Iterable[str], *, error: type[InputError] = InputError) -> InputError:
    """The error for a key that is not in the schema (a typo, usually)."""
    prefix = f"{where}: " if where else ""
    return error(f"{prefix}{key}: unknown key; expected one of {', '.join(sorted(allowed))}")


def missing(where: str, key: str, *, error: type[InputError] = InputError) -> InputError:
    """The error for a required key that is absent."""
    prefix = f"{where}: " if where else ""
    return error(f"{prefix}{key}: required key is missing")


# --------------------------------------------------------------------------- declared fields
@dataclass(frozen=True)
class Spec:
    """A value's declared type and bounds, checked with the helpers above.

    ``kind``: ``int``, ``num`` (a real, returned as float), ``bool``, ``str``, ``strs`` (array of
    strings), ``pairs`` (array of positive number pairs). Declare it once, on a dataclass field with
    :func:`spec`, and read it with :func:`read_table` (a TOML table) or :func:`check_fields` (an
    instance built in Python)."""

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple[Any, ...] = ()
    nonempty: bool = False
    optional: bool = False  # None is allowed (and means "not set")

    def check(self, value: Any, where: str, key: str, *, error: type[InputError] = InputError) -> Any:
        if value is None and self.optional:
            return None
        if self.kind in ("int", "num"):
            value = number(
                value,
                where,
                key,
                minimum=self.minimum,
                maximum=self.maximum,
                min_exclusive=self.min_exclusive,
                max_exclusive=self.max_exclusive,
                integer=self.kind == "int",
                error=error,
            )
        elif self.kind == "bool":
            value = boolean(value, where, key, error=error)
        elif self.kind == "str":
            value = string(value, where, key, nonempty=self.nonempty, error=error)
        elif self.kind == "strs":
            value = strings(value, where, key, error=error)
        elif self.kind == "pairs":
            value = pairs(value, where, key, error=error)
        else:  # pragma: no cover - a programming error in a declaration
            raise ValueError(f"unknown Spec kind {self.kind!r}")
        if self.choices:
            choice(value, where, key, self.choices, error=error)
        return value


def spec(kind: str, *, default: Any = dataclasses.MISSING, doc: str = "", **bounds: Any) -> Any:
    """A dataclass field that carries its :class:`Spec` (no ``default``: required)."""
    return dataclasses.field(default=default, metadata={"spec": Spec(kind, **bounds), "doc": doc})


def specs(cls: Any) -> dict[str, tuple[Spec, Any]]:
    """``{field name: (Spec, default or MISSING)}`` for the fields of ``cls`` declared with :func:`spec`."""
    return {f.name: (f.metadata["spec"], f.default) for f in dataclasses.fields(cls) if "spec" in f.metadata}


def read_table(
    cls: Any,
    table: Mapping[str, Any],
    where: str,
    section: str = "",
    *,
    defaults: Mapping[str, Any] | None = None,
    error: type[InputError] = InputError,
) -> dict[str, Any]:
    """Check the keys of ``table`` declared on ``cls``; returns ``{field: value}`` with defaults filled.

    Keys are named ``[section] key`` in messages. ``defaults`` replace the declared ones (and make
    the field optional); a declared default is returned as is, unchecked."""
    out: dict[str, Any] = {}
    for name, (sp, default) in specs(cls).items():
        key = f"[{section}] {name}" if section else name
        if name in table:
            out[name] = sp.check(table[name], where, key, error=error)
        elif defaults and name in defaults:
            out[name] = defaults[name]
        elif default is dataclasses.MISSING:
            raise missing(where, key, error=error)
        else:
            out[name] = default
    return out


def check_fields(obj: Any, where: str, *, error: type[InputError] = InputError) -> dict[str, Any]:
    """Check every declared field of a dataclass instance; returns ``{field: checked value}``."""
    return {name: sp.check(getattr(obj, name), where, name, error=error) for name, (sp, _) in specs(type(obj)).items()}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


__all__ = [
    "describe",
    "message",
    "fail",
    "number",
    "bounds_text",
    "choice",
    "boolean",
    "string",
    "strings",
    "pairs",
    "unknown_key",
    "missing",
    "Spec",
    "spec",
    "specs",
    "read_table",
    "check_fields",
]
