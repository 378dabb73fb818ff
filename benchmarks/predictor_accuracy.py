"""How good is the per-node roofline? Predict this host's own latency from its own calibration
(absolute, no transfer) and compare with the measured p50, for a spread of models.

    flock /tmp/edgeopt-bench.lock python benchmarks/predictor_accuracy.py

Target: within 25% of the measured p50 for every model. Also prints what the same graphs are
predicted to take on the built-in device profiles (the transfer `bench` reports).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from edgeopt.runtime import testing
from edgeopt.runtime.bench import run_child
from edgeopt.runtime.calibrate import calibrate
from edgeopt.runtime.predict import PerfModel, breakdown, run_cost_us
from edgeopt.runtime.targets import Target, host_facts

MODELS = {
    "mlp 64-128-10 (small)": lambda: testing.mlp((64, 128, 10)),
    "mlp 64-1024-1024-10": lambda: testing.mlp((64, 1024, 1024, 10)),
    "mlp lowrank16 64-1024-1024-10": lambda: testing.mlp((64, 1024, 1024, 10), rank=16),
    "mlp 512-2048-2048-512 (large)": lambda: testing.mlp((512, 2048, 2048, 512)),
    "cnn 28x28 (small CNN)": lambda: testing.cnn(),
    "cnn 1-16-32-64 @64x64": lambda: testing.cnn(channels=(1, 16, 32, 64), size=64),
    "many_small (160 nodes)": lambda: testing.many_small(40),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime default)")
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    cal = calibrate(args.threads)
    host = PerfModel.of(cal)
    print(f"host {host_facts()['cpu']}, threads={args.threads or 'default'}, load avg {os.getloadavg()[0]:.2f}")
    print(f"calibration: gflops={cal['gflops']} mem_bandwidth_gbs={cal['mem_bandwidth_gbs']} "
          f"op_overhead_us={cal['op_overhead_us']} run_overhead_us={cal['run_overhead_us']}")
    devices = ["rpi4", "rpi5", "rpi-zero-2w", "jetson-orin-nano-cpu"]
    targets = {n: PerfModel.of(Target.load(n).device) for n in devices}
    print(f"\n{'model':<32}{'nodes':>6}{'measured p50 us':>17}{'predicted us':>14}{'error':>8}  "
          + "".join(f"{n[:12]:>13}" for n in devices) + "  (predicted ms)")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            path = build().save(Path(tmp) / "m.onnx")
            out = run_child({"model": str(path), "intra_op_threads": args.threads, "min_iters": 200,
                             "min_time_s": args.min_time, "profile": True}, timeout_s=300)
            measured = float(np.median(out["samples_ns"])) / 1e3
            nodes = out["nodes"]
            predicted = run_cost_us(nodes, host)
            err = (predicted - measured) / measured
            worst = max(worst, abs(err))
            factor = {n: run_cost_us(nodes, m) / predicted for n, m in targets.items()}
            print(f"{name:<32}{len(nodes):>6}{measured:>17.1f}{predicted:>14.1f}{err:>+8.1%}  "
                  + "".join(f"{measured * factor[n] / 1e3:>13.3f}" for n in devices))
            b = breakdown(nodes, host)
            print(f"{'':<32}  host model: dispatch {b['dispatch_us']:.1f} us, compute-bound {b['compute_bound_us']:.1f} us, "
                  f"memory-bound {b['memory_bound_us']:.1f} us, {b['flops'] / 1e6:.2f} MFLOP, {b['bytes'] / 1e6:.2f} MB")
    print(f"\nworst |error| {worst:.1%} ({'within' if worst <= 0.25 else 'OVER'} the 25% goal); load avg {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
