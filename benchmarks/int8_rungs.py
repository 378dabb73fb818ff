"""The int8 rungs of the allocation tables against fp32, per layer, on this host; and whole graphs
dense fp32, every layer int8 (per-layer QDQ) and onnxruntime's whole-artifact int8, timed interleaved.

    PYTHONPATH=. python benchmarks/int8_rungs.py digits-cnn cnn1d
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def rungs(name: str) -> None:
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.targets import resolve_target
    from edgeopt.search.allocation.build import build_tables

    task = load_example(name)
    layers = decomposable_layers(task.model.eval(), task.example_input)
    with tempfile.TemporaryDirectory() as out:
        tables = build_tables(task.model, task, resolve_target("host"), Path(out), layers, int8=True)
    print(f"{name}: tables built in {tables.build_s:.0f} s {tables.timings}")
    for layer, cands in tables.layers.items():
        d32, d8 = cands[0], next(c for c in cands if c.label == "dense int8")
        print(
            f"  {layer}: dense fp32 {1e3 * d32.latency_ms:.1f} us, int8 {1e3 * d8.latency_ms:.1f} us "
            f"(inside a run of int8 layers), int8 KL {d8.sensitivity:.2e}"
        )


def whole(name: str) -> None:
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.formats import all_int8
    from edgeopt.compiler.quantize import quantize_onnx, quantize_plan, verify_int8
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.bench import bench
    from edgeopt.runtime.targets import resolve_target

    task = load_example(name)
    model = task.model.eval()
    layers = list(decomposable_layers(model, task.example_input))
    target = resolve_target("host")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        export_onnx(model, task.example_input, d / "fp32.onnx", verify=False)
        quantize_plan(d / "fp32.onnx", d / "all8.onnx", all_int8({}, layers), calibration=task.X_train[:128])
        quantize_onnx(d / "fp32.onnx", d / "ort8.onnx", calibration=task.X_train[:128])
        p50: dict[str, list[float]] = {}
        for f in ("fp32", "all8", "ort8") * 3:
            r = bench(d / f"{f}.onnx", target, min_iters=200, min_time_s=1.0, max_iters=20000)
            p50.setdefault(f, []).append(1e3 * r.latency_ms["p50"])
        print(f"{name}: p50 us (median of 3) " + ", ".join(f"{f} {sorted(v)[1]:.1f}" for f, v in p50.items()))
        print(f"  every layer int8 vs torch: {verify_int8(model, d / 'all8.onnx', task.X_val[:256])}")


if __name__ == "__main__":
    for example in sys.argv[1:] or ["digits-cnn", "cnn1d"]:
        rungs(example)
        whole(example)
