"""Shared file plumbing: atomic writes and edgeopt's cache directory.

Every file edgeopt produces (artifacts, reports, caches, profiles written by ``calibrate --write``)
appears whole or not at all: it is written to a temporary name in the same directory and renamed
over the destination (``os.replace`` is atomic on POSIX and Windows within one filesystem).
The temporary file is created with mode ``0666`` so the kernel applies the process's umask (and a
directory's default ACL), as for any ``open(path, "w")``: artifacts are ``0644`` under umask 022, not the
``0600`` that ``tempfile.mkstemp`` would leave. The umask is never read or changed (``os.umask`` is
process-wide, so reading it by setting it would race with other threads creating files).
A leaf module: it imports only the standard library, so both halves can use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_TEMP_ATTEMPTS = 100


def _create_temp(dest: Path) -> Path:
    """Create an empty, unique temporary file beside ``dest`` with mode ``0666 & ~umask``."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, _TEMP_FLAGS, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{dest.parent}: no free temporary name for {dest.name} after {_TEMP_ATTEMPTS} tries")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    For writers that need a file name (``onnx.save``, ``torch.onnx.export``, ``savefig``)."""
    dest = Path(path)
    tmp = _create_temp(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def cache_dir() -> Path:
    """edgeopt's cache: ``$EDGEOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeopt``, else ``~/.cache/edgeopt``."""
    env = os.environ.get("EDGEOPT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeopt"


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "cache_dir"]
