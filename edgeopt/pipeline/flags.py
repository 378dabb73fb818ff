"""The flags of ``edgeopt compile`` (and ``demo``), derived from the settings' declarations.

Each setting of :mod:`edgeopt.pipeline.config` that declares a flag gets one here, with its help and
default from the declaration, checked as it is parsed against the same bounds the API checks
(``edgeopt compile: --trials: expected an integer >= 0, found an integer -1``). A flag left out is not
set (its value stays ``None``), so that the flags can be laid over a config file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from edgeopt._validate import Spec
from edgeopt.errors import InputError
from edgeopt.pipeline.config import DEPRECATED_OBJECTIVES, SECTIONS, declared

HIDDEN = frozenset({"--sampler"})  # kept for benchmarks; not a choice a user needs
# On the command line "--time-budget 0" means no limit (None in the API).
ZERO_IS_OFF = frozenset({"time_budget_s"})


class _Off:
    """A flag that turns its setting off (None), which ``None`` (flag not given) cannot say."""

    def __repr__(self) -> str:
        return "off"


OFF = _Off()


def dest(section: str, name: str) -> str:
    return f"{section}__{name}"


def add_flags(
    parser: argparse.ArgumentParser,
    where: str,
    *,
    only: Iterable[str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """A flag on ``parser`` for every setting that declares one (``only``: those flags), its help saying the
    default (``defaults``: the command's own, by setting name)."""
    wanted = None if only is None else set(only)
    for cls in SECTIONS:
        for f in fields(cls):
            names = f.metadata.get("flags")
            if not names or (wanted is not None and names[0] not in wanted):
                continue
            default = (defaults or {}).get(f.name, f.default)
            text = f.metadata["doc"] + _default_text(f.name, default)
            kw: dict[str, Any] = {
                "dest": dest(cls.name, f.name),
                "default": None,
                "help": argparse.SUPPRESS if names[0] in HIDDEN else text,
            }
            if isinstance(f.default, bool):
                parser.add_argument(*names, action="store_true", **kw)
            else:
                kw["metavar"] = f.metadata.get("metavar") or _metavar(names[0], declared(cls, f.name))
                parser.add_argument(*names, type=_checked(names[0], cls, f.name, where), **kw)


def given(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings the command line gave, by section (a flag left out is not there)."""
    out: dict[str, dict[str, Any]] = {}
    for cls in SECTIONS:
        for f in fields(cls):
            value = getattr(args, dest(cls.name, f.name), None)
            if value is not None and value is not False:
                out.setdefault(cls.name, {})[f.name] = None if value is OFF else value
    return out


def _metavar(flag: str, spec: Spec | None) -> str:
    """``{score,pareto}`` for a choice, else the flag's name (``--latency-ms``: ``LATENCY_MS``)."""
    if spec is not None and spec.choices:
        return "{" + ",".join(map(str, spec.choices)) + "}"
    return flag.lstrip("-").replace("-", "_").upper()


def _default_text(name: str, default: Any) -> str:
    if default is None or isinstance(default, bool):
        return ""
    if name in ZERO_IS_OFF:
        return f" (default: {default:g})"
    return f" (default: {default})"


def _checked(flag: str, cls: type, name: str, where: str) -> Callable[[str], object]:
    """An argparse ``type`` that checks a flag as it is parsed, against its setting's declared bounds."""
    spec = Spec("num", minimum=0) if name in ZERO_IS_OFF else declared(cls, name)

    def parse(text: str) -> object:
        if spec is None:  # the out dir: checked where it is used, before anything is written
            return Path(text)
        value = _number(text) if spec.kind in ("int", "num") else text
        if name == "objective" and value in DEPRECATED_OBJECTIVES:
            warn(f"{where}: --objective {value} is deprecated, read as score (the task's metric)")
            value = DEPRECATED_OBJECTIVES[value]
        try:
            value = spec.check(value, where, flag)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return OFF if name in ZERO_IS_OFF and value == 0 else value

    parse.__name__ = flag  # argparse names a type by it
    return parse


def warn(line: str) -> None:
    """A one-line warning on stderr, as the CLI's errors are written (logging is set up after parsing)."""
    print(f"edgeopt: warning: {line}", file=sys.stderr)


def _number(text: str) -> object:
    """``"3"`` is an int, ``"2.5"`` a float; anything else stays the text (and is reported as found)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


__all__ = ["OFF", "add_flags", "dest", "given", "warn"]
