"""A compile's settings as a TOML file: ``edgeopt compile --config FILE.toml`` reads one, and every compile
writes its resolved settings to ``OUT/compile.toml``, so that ``--config OUT/compile.toml`` repeats the run.

One table per section of :class:`~edgeopt.pipeline.config.CompileConfig` (``[run]``, ``[optimize]``, ``[train]``,
``[budget]``, ``[time]``, ``[study]``, ``[output]``), its keys the settings' own names. A setting whose default
is a value and which is off (``time_budget_s``, ``max_quality_drop``) is written ``false``. The writer is the
few lines such flat tables need (strings, numbers, booleans and one ``[output.final_bench]``), not a dependency.
Bad input is one line naming the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from edgeopt import _validate
from edgeopt._io import atomic_write_text
from edgeopt.errors import InputError
from edgeopt.pipeline.config import BENCH_KEYS, DEPRECATED_OBJECTIVES, SECTIONS, CompileConfig, declared

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FILE_NAME = "compile.toml"
_HEADER = "# edgeopt compile settings; `edgeopt compile --config THIS_FILE` repeats the run (flags override it)\n"


def read_tables(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The settings of the file at ``path``, by section, each checked against its declaration."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as exc:
        found = "no such file" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc)).lower()
        raise InputError(f"{where}: expected a TOML config file, found {found}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{where}: expected a TOML config file, found invalid TOML ({exc})") from None
    by_name = {cls.name: cls for cls in SECTIONS}
    tables: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        cls = by_name.get(name)
        if cls is None:
            raise _validate.unknown_key(where, f"[{name}]", [f"[{n}]" for n in by_name])
        if not isinstance(table, dict):
            raise _validate.fail(where, f"[{name}]", "a table", table)
        saved = {f.name: f for f in fields(cls) if f.metadata.get("saved", True)}
        for key, value in table.items():
            if key not in saved:
                raise _validate.unknown_key(where, f"[{name}] {key}", saved)
            tables.setdefault(name, {})[key] = _value(cls, saved[key], value, where)
    return tables


def _value(cls: type, f: Field, value: Any, where: str) -> Any:
    """One setting read from the file, checked as the API checks it (``false``: off, for a setting that can be)."""
    key = f"[{cls.name}] {f.name}"
    if f.name == "out":
        return Path(_validate.string(value, where, key, nonempty=True))
    if f.name == "final_bench":
        if not isinstance(value, dict):
            raise _validate.fail(where, key, "a table", value)
        unknown = sorted(set(value) - set(BENCH_KEYS))
        if unknown:
            raise _validate.unknown_key(where, f"[{cls.name}.{f.name}] {unknown[0]}", BENCH_KEYS)
        return value
    spec = declared(cls, f.name)
    if value is False and f.default is not None and spec is not None and spec.optional:
        return None
    if f.name == "objective" and value in DEPRECATED_OBJECTIVES:
        print(f"edgeopt: warning: {where}: {key}: {value!r} is deprecated, read as 'score'", file=sys.stderr)
        value = DEPRECATED_OBJECTIVES[value]
    return spec.check(value, where, key) if spec is not None else value


def config_from(tables: Mapping[str, Mapping[str, Any]]) -> CompileConfig:
    """The config of ``tables`` (as :func:`read_tables` returns them, flags laid over), defaults filled."""
    by_name = {cls.name: cls for cls in SECTIONS}
    return CompileConfig(**{name: by_name[name](**dict(table)) for name, table in tables.items() if table})


def read(path: str | os.PathLike[str]) -> CompileConfig:
    """The config of the file at ``path``."""
    return config_from(read_tables(path))


def dumps(config: CompileConfig) -> str:
    """The TOML text of ``config``: every setting the file holds, its default too (so the file says it)."""
    out = [_HEADER]
    for cls in SECTIONS:
        section = getattr(config, cls.name)
        lines, nested = [], []
        for f in fields(cls):
            value = getattr(section, f.name)
            if not f.metadata.get("saved", True) or (value is None and f.default is None):
                continue
            if isinstance(value, Mapping):
                nested.append(f"\n[{cls.name}.{f.name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in value.items()))
            else:
                lines.append(f"{f.name} = {_toml(False if value is None else value)}\n")
        out.append(f"\n[{cls.name}]\n" + "".join(lines) + "".join(nested))
    return "".join(out)


def write(path: str | os.PathLike[str], config: CompileConfig) -> Path:
    """Write ``config`` to ``path`` atomically."""
    return atomic_write_text(path, dumps(config))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else f"{'-' if value < 0 else ''}inf")
        )
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


__all__ = ["FILE_NAME", "config_from", "dumps", "read", "read_tables", "write"]
