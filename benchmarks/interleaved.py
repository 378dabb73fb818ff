"""ONNX files timed side by side: one onnxruntime session per file in one fresh process, round-robin
blocks over the files in an order rotated each round, p50/p95 from the pooled samples of each file
(each block's first :data:`WARMUP` runs dropped: a session's first runs after another's are cold).

The timing runs in a child process that never imports torch (``python -m benchmarks.interleaved``, a
JSON job on stdin, one JSON result on stdout), as edgeopt's own measurements do
(``edgeopt.runtime._worker``). Timed inside a benchmark that had trained or exported with torch (seen
in one run, decision 0103), the same five ResNet-8 artifacts read 1.1-1.8x slower, unevenly (int8 plans
the most), than in a fresh process on the same loaded host; why torch's presence does this was not
established. A difference between files must not depend on what the benchmark did before timing them.

    time_interleaved([a.onnx, b.onnx], rounds=30, block=200)  # -> [{"p50_us", "p95_us", "n"}, ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.suite import HOST_1T

WARMUP = 5  # runs dropped at the start of every block


def time_interleaved(paths: list[Path], *, rounds: int, block: int, timeout_s: float = 1800) -> list[dict[str, float]]:
    """p50/p95 (µs) and sample count per file, timed in a fresh torch-free process (see the module)."""
    job = {"paths": [str(p) for p in paths], "rounds": rounds, "block": block}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.interleaved"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"interleaved timing failed (exit {proc.returncode}): {tail}")
    out = json.loads(proc.stdout)
    if out["torch_loaded"]:  # the point of the child: a regression here would skew every ratio again
        raise RuntimeError("interleaved timing: the child process imported torch")
    return out["files"]


def _time_here(paths: list[str], rounds: int, block: int) -> list[dict[str, float]]:
    import numpy as np

    from edgeopt.runtime.session import open_session
    from edgeopt.runtime.targets import resolve_target

    runtime = resolve_target(str(HOST_1T)).runtime
    sessions, feeds = [], []
    for p in paths:
        s = open_session(p, runtime)
        inp = s.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        sessions.append(s)
        feeds.append({inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})
    samples: list[list[int]] = [[] for _ in paths]
    clock = time.perf_counter_ns
    for r in range(rounds):
        for k in range(len(paths)):
            i = (k + r) % len(paths)
            s, feed, got = sessions[i], feeds[i], samples[i]
            for j in range(WARMUP + block):
                t0 = clock()
                s.run(None, feed)
                if j >= WARMUP:
                    got.append(clock() - t0)
    return [
        {"p50_us": float(np.percentile(x, 50)) / 1e3, "p95_us": float(np.percentile(x, 95)) / 1e3, "n": len(x)}
        for x in samples
    ]


def _main() -> None:
    job: dict[str, Any] = json.loads(sys.stdin.read())
    files = _time_here(job["paths"], int(job["rounds"]), int(job["block"]))
    json.dump({"files": files, "torch_loaded": "torch" in sys.modules}, sys.stdout)


if __name__ == "__main__":
    _main()

__all__ = ["WARMUP", "time_interleaved"]
