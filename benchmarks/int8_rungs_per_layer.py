"""The int8 rungs of the allocation tables against fp32, per layer, on this host; and whole graphs
dense fp32, every layer int8 (per-layer QDQ) and onnxruntime's whole-artifact int8, timed interleaved.

    python -m benchmarks int8_rungs_per_layer [--set models=digits-cnn,cnn1d]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.suite import Outcome


def rungs(name: str) -> dict[str, Any]:
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.targets import resolve_target
    from edgeopt.search.allocation.build import build_tables

    task = load_example(name)
    layers = decomposable_layers(task.model.eval(), task.example_input)
    with tempfile.TemporaryDirectory() as out:
        tables = build_tables(task.model, task, resolve_target("host"), Path(out), layers, int8=True)
    out: dict[str, Any] = {"build_s": round(tables.build_s, 1), "layers": {}}
    for layer, cands in tables.layers.items():
        d32, d8 = cands[0], next(c for c in cands if c.label == "dense int8")
        out["layers"][layer] = {
            "fp32_us": 1e3 * d32.latency_ms,
            "int8_us": 1e3 * d8.latency_ms,
            "int8_kl": d8.sensitivity,
        }
    return out


def whole(name: str) -> dict[str, Any]:
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
        return {
            "p50_us_median_of_3": {f: sorted(v)[1] for f, v in p50.items()},
            "all_int8_vs_torch": verify_int8(model, d / "all8.onnx", task.X_val[:256]),
        }


def run(args: SimpleNamespace) -> Outcome:
    results = {name: {"rungs": rungs(name), "whole": whole(name)} for name in str(args.models).split(",")}
    lines = [
        "| model | layer | fp32 µs | int8 µs (inside a run of int8 layers) | int8 KL |",
        "|---|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        for layer, v in r["rungs"]["layers"].items():
            lines.append(f"| {name} | {layer} | {v['fp32_us']:.1f} | {v['int8_us']:.1f} | {v['int8_kl']:.2e} |")
    lines += [
        "",
        "| model | dense fp32 p50 µs | every layer int8 (QDQ) | onnxruntime whole int8 |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        p = r["whole"]["p50_us_median_of_3"]
        lines.append(f"| {name} | {p['fp32']:.1f} | {p['all8']:.1f} | {p['ort8']:.1f} |")
    return Outcome(results, "\n".join(lines))
