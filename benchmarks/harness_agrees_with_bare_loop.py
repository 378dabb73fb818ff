"""Does the harness distort what it measures?

(a) `edgeopt.bench` p50 vs a bare `session.run` loop in this process, same model, same session
    options: they should agree within 5%.
(b) p50 spread, (max - min) / median, over 5 consecutive `bench` invocations: under 10%.

    flock /tmp/edgeopt-bench.lock python -m benchmarks harness_agrees_with_bare_loop [--set min_time=1.0]

The machine should be idle; rerun if another job was busy (the load average is in the result).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort

from benchmarks.suite import Outcome
from edgeopt.runtime.bench import bench
from edgeopt.runtime.inputs import make_feeds
from edgeopt.runtime.session import open_session
from edgeopt.runtime.targets import Target
from testkit import graphs

MODELS = {
    "mlp 64-128-10": lambda: graphs.mlp((64, 128, 10)),
    "mlp 64-1024-1024-10": lambda: graphs.mlp((64, 1024, 1024, 10)),
    "cnn 28x28": lambda: graphs.cnn(),
}


def bare_p50(path: Path, target: Target, min_iters: int, min_time_s: float) -> float:
    sess = open_session(path, target.runtime)  # the same session options as the harness's child
    feeds = make_feeds(sess.get_inputs(), batch=1)
    for _ in range(10):
        sess.run(None, feeds)
    samples, start = [], time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter_ns()
        sess.run(None, feeds)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    del sess
    return float(np.median(samples))


def run(args: SimpleNamespace) -> Outcome:
    """Per model, ``runs`` interleaved pairs of a ``bench`` and a bare loop; p50 difference and spread."""
    target = Target.load("host")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            path = build().save(Path(tmp) / "m.onnx")
            harness, bare = [], []
            for _ in range(args.runs):  # interleaved, so drift hits both alike
                harness.append(
                    bench(path, target, min_iters=args.min_iters, min_time_s=args.min_time).latency_ms["p50"]
                )
                bare.append(bare_p50(path, target, args.min_iters, args.min_time))
            h, b = float(np.median(harness)), float(np.median(bare))
            rows.append(
                {"model": name, "bare_p50_ms": b, "harness_p50_ms": h, "diff": (h - b) / b, "harness_p50s_ms": harness}
            )
            rows[-1]["spread"] = (max(harness) - min(harness)) / h
            print(rows[-1], flush=True)
    lines = [
        "| model | bare p50 ms | harness p50 ms | diff (goal within 5%) | p50 per run (ms) | spread (goal < 10%) |",
        "|---|---:|---:|---:|---|---:|",
        *(
            f"| {r['model']} | {r['bare_p50_ms']:.4f} | {r['harness_p50_ms']:.4f} | {r['diff']:+.1%} | "
            f"{' '.join(f'{x:.4f}' for x in r['harness_p50s_ms'])} | {r['spread']:.1%} |"
            for r in rows
        ),
    ]
    return Outcome(rows, "\n".join(lines) + "\n", [f"onnxruntime {ort.__version__}; the machine should be idle"])
