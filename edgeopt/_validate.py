"""One validation helper and one message template for every user-facing value.

Every complaint about a value reads the same, wherever it comes from (a profile, a plan, bench
settings, an API argument)::

    <where>: <key>: expected <what was expected>, found <what was found>

``where`` is the file or the function/parameter owner (``rpi4.toml``, ``compile()``,
``plan['fc1']``); ``key`` the field (``[budget] latency_ms``, ``trials``, ``rank``). A leaf module:
standard library only, so the runtime half can use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from edgeopt.errors import InputError


def describe(value: Any) -> str:
    """How a found value is shown: its kind and its repr (``a string 'x'``, ``an integer -3``)."""
    kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            tuple: "an array", dict: "a table"}.get(type(value))
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


def number(value: Any, where: str, key: str, *, minimum: float | None = None, maximum: float | None = None,
           min_exclusive: bool = False, max_exclusive: bool = False, integer: bool = False,
           error: type[InputError] = InputError) -> float | int:
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


def bounds_text(minimum: float | None, maximum: float | None, min_exclusive: bool = False,
                max_exclusive: bool = False, integer: bool = False) -> str:
    """``an integer >= 1``, ``a number in (0, 1]``, ``a number > 0``: the expected part of a message."""
    noun = "an integer" if integer else "a number"
    if minimum is not None and maximum is not None:
        return f"{noun} in {'(' if min_exclusive else '['}{_fmt(minimum)}, {_fmt(maximum)}{')' if max_exclusive else ']'}"
    if minimum is not None:
        return f"{noun} {'>' if min_exclusive else '>='} {_fmt(minimum)}"
    if maximum is not None:
        return f"{noun} {'<' if max_exclusive else '<='} {_fmt(maximum)}"
    return noun


def choice(value: Any, where: str, key: str, choices: Iterable[Any], *,
           error: type[InputError] = InputError) -> Any:
    """Check ``value`` is one of ``choices``."""
    options = list(choices)
    if value not in options:
        raise fail(where, key, "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in options),
                   value, error=error)
    return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


__all__ = ["describe", "message", "fail", "number", "bounds_text", "choice"]
