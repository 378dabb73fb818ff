"""Does the harness distort what it measures?

(a) `edgeopt.bench` p50 vs a bare `session.run` loop in this process, same model, same session
    options: they should agree within 5%.
(b) p50 spread, (max - min) / median, over 5 consecutive `bench` invocations: under 10%.

    flock /tmp/edgeopt-bench.lock python benchmarks/bench_harness.py [--min-time 1.0]

The machine should be idle; rerun if another job was busy (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeopt.runtime import testing
from edgeopt.runtime.bench import bench
from edgeopt.runtime.inputs import make_feeds
from edgeopt.runtime.session import open_session
from edgeopt.runtime.targets import Target

MODELS = {
    "mlp 64-128-10": lambda: testing.mlp((64, 128, 10)),
    "mlp 64-1024-1024-10": lambda: testing.mlp((64, 1024, 1024, 10)),
    "cnn 28x28": lambda: testing.cnn(),
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--min-iters", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    target = Target.load("host")
    print(
        f"host: {target.device.cpu}, {target.device.cores} cores, onnxruntime {ort.__version__}, "
        f"load avg {os.getloadavg()[0]:.2f}"
    )
    print(f"{'model':<22}{'bare p50 ms':>12}{'harness p50 ms':>16}{'diff':>8}{'5-run p50s (ms)':>40}{'spread':>8}")
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
            spread = (max(harness) - min(harness)) / h
            print(
                f"{name:<22}{b:>12.4f}{h:>16.4f}{(h - b) / b:>+8.1%}{' '.join(f'{x:.4f}' for x in harness):>40}{spread:>8.1%}"
            )
    print(f"load avg after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
