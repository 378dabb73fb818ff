"""Shared file plumbing: atomic writes and edgeopt's cache directory.

Every file edgeopt produces (artifacts, reports, caches, profiles written by ``calibrate --write``)
appears whole or not at all: it is written to a temporary name in the same directory and renamed
over the destination (``os.replace`` is atomic on POSIX and Windows within one filesystem).
A leaf module: it imports only the standard library, so both halves can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed.

    For writers that need a file name (``onnx.save``, ``torch.onnx.export``, ``savefig``)."""
    dest = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
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
