"""Artifacts honour the umask: every atomic write gives ``0666 & ~umask``, like any ``open(path, "w")``.

Each case runs in a child process with its own umask (the umask is process-wide; setting it here would
touch every thread of the test run). The last case is a real CLI artifact: ``edgeopt bench --json``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "mlp_small.onnx"

WRITERS = """
import sys
from pathlib import Path
from edgeopt._io import atomic_path, atomic_write_bytes, atomic_write_text
d = Path(sys.argv[1])
atomic_write_text(d / "report.md", "# report\\n")
atomic_write_bytes(d / "model.onnx", b"\\x08\\x07")
with atomic_path(d / "plot.png") as tmp:  # a writer that opens the name itself (savefig, onnx.save)
    with open(tmp, "wb") as fh:
        fh.write(b"png")
(d / "replaced.json").write_text("old")
(d / "replaced.json").chmod(0o600)
atomic_write_text(d / "replaced.json", "new")  # a new file: the umask's mode, not the old file's
"""


def _child(umask: int, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, preexec_fn=lambda: os.umask(umask), capture_output=True, text=True, timeout=300, cwd=REPO, **kw
    )


def _modes(d: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()}


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    r = _child(umask, [sys.executable, "-c", WRITERS, str(tmp_path)])
    assert r.returncode == 0, r.stderr
    assert _modes(tmp_path) == dict.fromkeys(["report.md", "model.onnx", "plot.png", "replaced.json"], mode)
    assert (tmp_path / "replaced.json").read_text() == "new"


def test_failed_write_leaves_nothing(tmp_path):
    from edgeopt._io import atomic_path

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_bench_json_follows_the_umask(tmp_path, umask, mode):
    out = tmp_path / "bench.json"
    edgeopt = Path(sys.executable).with_name("edgeopt")
    r = _child(
        umask,
        [
            str(edgeopt),
            "bench",
            str(FIXTURE),
            "--json",
            str(out),
            "--min-iters",
            "5",
            "--min-time",
            "0.01",
            "--warmup",
            "1",
        ],
    )
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode
