"""Output paths checked before anything is written: the out dir and files such as ``--json``."""

from __future__ import annotations

import os
from pathlib import Path

from edgeopt.errors import InputError

_WHERE = "compile()"

_OUT_DIR = "a directory (created if missing) in a writable place"


def check_out_dir(path: str | os.PathLike[str], where: str = _WHERE, key: str = "out") -> Path:
    """An output dir that ``compile()`` can create or write: a directory, or a new path whose nearest existing
    ancestor is a writable directory. Checked without writing anything (the CLI, before loading the task)."""
    p = Path(os.path.abspath(path))
    if p.exists() and not p.is_dir():
        raise _found(where, key, _OUT_DIR, f"the file {str(path)!r}")
    _check_writable_parent(p if p.is_dir() else p.parent, str(path), where, key, _OUT_DIR)
    return Path(path)


def check_out_file(path: str | os.PathLike[str], where: str, key: str) -> Path:
    """A file that can be written atomically: not a directory, in an existing writable directory."""
    p = Path(os.path.abspath(path))
    expected = "a file in an existing writable directory"
    if p.is_dir():
        raise _found(where, key, expected, f"the directory {str(path)!r}")
    if not p.parent.is_dir():
        raise _found(where, key, expected, f"{str(path)!r}, whose directory {str(p.parent)!r} does not exist")
    _check_writable_parent(p.parent, str(path), where, key, expected)
    return Path(path)


def _check_writable_parent(p: Path, given: str, where: str, key: str, expected: str) -> None:
    """The nearest existing ancestor of ``p`` (``p`` itself if it exists) is a writable directory."""
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise _found(where, key, expected, f"{given!r}, under the file {str(p)!r}")
    if not os.access(p, os.W_OK | os.X_OK) or _read_only(p):
        raise _found(where, key, expected, f"{given!r}, where {str(p)!r} is not writable")


def _found(where: str, key: str, expected: str, found: str) -> InputError:
    """The one template, with ``found`` already worded (a path and what is wrong with it)."""
    return InputError(f"{where}: {key}: expected {expected}, found {found}")


def _read_only(p: Path) -> bool:
    """On a read-only filesystem (which ``os.access`` does not say for root)."""
    try:
        return bool(os.statvfs(p).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


__all__ = ["check_out_dir", "check_out_file"]
