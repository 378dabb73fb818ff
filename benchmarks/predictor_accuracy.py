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
from edgeopt.runtime.host import host_facts
from edgeopt.runtime.predict import breakdown, run_cost_us
from edgeopt.runtime.targets import Target

MODELS = {
    "mlp 64-128-10 (small)": lambda: testing.mlp((64, 128, 10)),
    "mlp 64-1024-1024-10": lambda: testing.mlp((64, 1024, 1024, 10)),
    "mlp lowrank16 64-1024-1024-10": lambda: testing.mlp((64, 1024, 1024, 10), rank=16),
    "mlp 512-2048-2048-512 (large)": lambda: testing.mlp((512, 2048, 2048, 512)),
    "cnn 28x28 (small CNN)": lambda: testing.cnn(),
    "cnn 1-16-32-64 @64x64": lambda: testing.cnn(channels=(1, 16, 32, 64), size=64),
    "many_small (160 nodes)": lambda: testing.many_small(40),
}
# int8: onnxruntime's own quantizers (the benchmark may import onnx; the runtime half never does)
INT8_MODELS = {
    "int8 dyn mlp 64-1024-1024-10": ("mlp 64-1024-1024-10", "dynamic"),
    "int8 dyn mlp 512-2048-2048-512": ("mlp 512-2048-2048-512 (large)", "dynamic"),
    "int8 QDQ cnn 1-16-32-64 @64x64": ("cnn 1-16-32-64 @64x64", "static"),
}


def quantize(src: Path, dst: Path, mode: str) -> Path:
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" advice
    if mode == "dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        return dst

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"image": rng.standard_normal((1, 1, 64, 64)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    # 1 by default: on a small shared host (2 cores here, next to other people's training) a
    # multi-threaded run's speed depends on whether the other cores happen to be free, which no
    # calibration taken seconds earlier can know; pass --threads 0 on a quiet machine
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: onnxruntime default)")
    ap.add_argument("--min-time", type=float, default=1.0)
    args = ap.parse_args()
    host = calibrate(args.threads).perf
    print(f"host {host_facts()['cpu']}, threads={args.threads or 'default'}, load avg {os.getloadavg()[0]:.2f}")
    print(
        f"calibration: gflops={host.gflops} conv_gflops={host.conv_gflops} int8_gops={host.int8_gops} "
        f"int8_conv_gops={host.int8_conv_gops} op_overhead_us={host.op_overhead_us} "
        f"matmul_overhead_us={host.matmul_overhead_us} run_overhead_us={host.run_overhead_us}\n"
        f"  bandwidth curve [MiB, GB/s]: {[list(p) for p in host.bandwidth_curve or ()]}"
    )
    devices = ["rpi4", "rpi5", "rpi-zero-2w", "jetson-orin-nano-cpu"]
    targets = {n: Target.load(n).device.perf for n in devices}
    print(
        f"\n{'model':<32}{'nodes':>6}{'measured p50 us':>17}{'predicted us':>14}{'error':>8}  "
        + "".join(f"{n[:12]:>13}" for n in devices)
        + "  (predicted ms)"
    )
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            (name, lambda b=build, n=name: b().save(Path(tmp) / f"{abs(hash(n))}.onnx"))
            for name, build in MODELS.items()
        ]
        jobs += [
            (
                name,
                lambda s=src, m=mode, n=name: quantize(
                    MODELS[s]().save(Path(tmp) / "src.onnx"), Path(tmp) / f"{abs(hash(n))}.onnx", m
                ),
            )
            for name, (src, mode) in INT8_MODELS.items()
        ]
        for name, make in jobs:
            path = make()
            out = run_child(
                {
                    "model": str(path),
                    "intra_op_threads": args.threads,
                    "min_iters": 200,
                    "min_time_s": args.min_time,
                    "profile": True,
                },
                timeout_s=300,
            )
            measured = float(np.median(out["samples_ns"])) / 1e3
            nodes = out["nodes"]
            predicted = run_cost_us(nodes, host)
            err = (predicted - measured) / measured
            worst = max(worst, abs(err))
            factor = {n: run_cost_us(nodes, m) / predicted for n, m in targets.items()}
            print(
                f"{name:<32}{len(nodes):>6}{measured:>17.1f}{predicted:>14.1f}{err:>+8.1%}  "
                + "".join(f"{measured * factor[n] / 1e3:>13.3f}" for n in devices)
            )
            b = breakdown(nodes, host)
            print(
                f"{'':<32}  host model: dispatch {b['dispatch_us']:.1f} us, compute-bound {b['compute_bound_us']:.1f} us, "
                f"memory-bound {b['memory_bound_us']:.1f} us, {b['flops'] / 1e6:.2f} MFLOP, {b['int8_ops'] / 1e6:.2f} int8 MOP, "
                f"{b['bytes'] / 1e6:.2f} MB; ops: {' '.join(sorted({n['op'] for n in nodes}))}"
            )
    print(
        f"\nworst |error| {worst:.1%} ({'within' if worst <= 0.25 else 'OVER'} the 25% goal); load avg {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
