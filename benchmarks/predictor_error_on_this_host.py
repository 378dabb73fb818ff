"""How good is the per-node roofline? Predict this host's own latency from its own calibration
(absolute, no transfer) and compare with the measured p50, for a spread of models.

    flock /tmp/edgeopt-bench.lock python -m benchmarks predictor_error_on_this_host

Target: within 25% of the measured p50 for every model. Also shows what the same graphs are
predicted to take on the built-in device profiles (the transfer `bench` reports).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.suite import Outcome
from edgeopt.runtime.bench import run_child
from edgeopt.runtime.calibrate import calibrate
from edgeopt.runtime.predict import breakdown, run_cost_us
from edgeopt.runtime.targets import Target
from testkit import graphs

MODELS = {
    "mlp 64-128-10 (small)": lambda: graphs.mlp((64, 128, 10)),
    "mlp 64-1024-1024-10": lambda: graphs.mlp((64, 1024, 1024, 10)),
    "mlp lowrank16 64-1024-1024-10": lambda: graphs.mlp((64, 1024, 1024, 10), rank=16),
    "mlp 512-2048-2048-512 (large)": lambda: graphs.mlp((512, 2048, 2048, 512)),
    "cnn 28x28 (small CNN)": lambda: graphs.cnn(),
    "cnn 1-16-32-64 @64x64": lambda: graphs.cnn(channels=(1, 16, 32, 64), size=64),
    "many_small (160 nodes)": lambda: graphs.many_small(40),
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


def run(args: SimpleNamespace) -> Outcome:
    """Each model measured and predicted from this host's calibration (``threads`` intra-op threads)."""
    host = calibrate(args.threads).perf
    devices = ["rpi4", "rpi5", "rpi-zero-2w", "jetson-orin-nano-cpu"]
    targets = {n: Target.load(n).device.perf for n in devices}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in jobs(Path(tmp)):
            out = run_child(
                {
                    "model": str(make()),
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
            row = {"model": name, "nodes": len(nodes), "measured_us": measured, "predicted_us": predicted}
            row["error"] = (predicted - measured) / measured
            # the same graph on each device profile: the transfer ``bench`` reports
            row["devices_ms"] = {n: measured * run_cost_us(nodes, m) / predicted / 1e3 for n, m in targets.items()}
            row["host_model"] = breakdown(nodes, host)
            row["ops"] = sorted({n["op"] for n in nodes})
            print(row, flush=True)
            rows.append(row)
    worst = max(abs(r["error"]) for r in rows)
    doc = {"calibration": dataclasses.asdict(host), "threads": args.threads, "rows": rows, "worst_abs_error": worst}
    return Outcome(doc, markdown(doc, devices))


def jobs(tmp: Path) -> list[tuple[str, Any]]:
    """(name, build-and-save) for every float model and every int8 variant."""
    out: list[tuple[str, Any]] = [
        (name, lambda b=build, n=name: b().save(tmp / f"{abs(hash(n))}.onnx")) for name, build in MODELS.items()
    ]
    out += [
        (
            name,
            lambda s=src, m=mode, n=name: quantize(MODELS[s]().save(tmp / "src.onnx"), tmp / f"{abs(hash(n))}.onnx", m),
        )
        for name, (src, mode) in INT8_MODELS.items()
    ]
    return out


def markdown(doc: dict, devices: list[str]) -> str:
    lines = [
        f"Calibration at {doc['threads'] or 'default'} threads: "
        + ", ".join(f"{k} {v}" for k, v in doc["calibration"].items() if k != "bandwidth_curve"),
        "",
        "| model | nodes | measured p50 µs | predicted µs | error | "
        + " | ".join(f"{n} (ms)" for n in devices)
        + " | host model: dispatch / compute / memory µs |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(devices) + "---|",
    ]
    for r in doc["rows"]:
        b = r["host_model"]
        lines.append(
            f"| {r['model']} | {r['nodes']} | {r['measured_us']:.1f} | {r['predicted_us']:.1f} | {r['error']:+.1%} | "
            + " | ".join(f"{r['devices_ms'][n]:.3f}" for n in devices)
            + f" | {b['dispatch_us']:.1f} / {b['compute_bound_us']:.1f} / {b['memory_bound_us']:.1f} |"
        )
    w = doc["worst_abs_error"]
    lines += ["", f"Worst |error| {w:.1%} ({'within' if w <= 0.25 else 'OVER'} the 25% goal)."]
    return "\n".join(lines) + "\n"
