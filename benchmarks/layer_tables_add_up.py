"""Per-layer tables of the example models : how long they take to build, and whether
the isolated layers add up to the whole graph.

For each model: the tables on ``benchmarks/host-1t.toml`` (this host, 1 onnxruntime thread), built
from scratch; the seconds spent on latencies, on the whole-graph additivity fit and on sensitivities;
and the additivity check: dense graph, fastest plan and middle plan (each layer at its median-latency
rung) measured as whole graphs against (a) the isolated layers summed plus the dense rest and (b) the
fitted table (``rest + scale x sum``). The middle plan is held out of the fit, so its error is the
table's real error.

    python -m benchmarks layer_tables_add_up [--set models=resnet8,mobilenet,vit,cnn1d,digits-mlp]
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.suite import HOST_1T, Outcome


def one(name: str) -> dict:
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.build import build_tables

    task = load_example(name)
    target = Target.load(HOST_1T)
    layers = decomposable_layers(task.model.eval(), task.example_input)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        floor_at: list[float] = []
        tables = build_tables(
            task.model, task, target, Path(out), layers, check=lambda t: floor_at.append(time.perf_counter() - t0)
        )
        wall = time.perf_counter() - t0
    return {
        "model": name,
        "layers": len(layers),
        "candidates": sum(map(len, tables.layers.values())),
        "wall_s": round(wall, 1),
        "refusal_known_s": round(floor_at[0], 1),
        **tables.timings,
        "calibration": tables.calibration,
        "additivity": tables.additivity,
    }


def run(args: SimpleNamespace) -> Outcome:
    """The tables of each model in ``models`` (comma-separated), built from scratch."""
    import onnxruntime
    import torch

    rows = [one(m) for m in args.models.split(",")]
    doc = {
        "host": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load": os.getloadavg(),
        "rows": rows,
    }
    lines = [
        f"Tables on `benchmarks/host-1t.toml` (1 onnxruntime thread), {doc['cores']} cores, torch {doc['torch']}, "
        f"onnxruntime {doc['onnxruntime']}; load at the end {doc['load'][0]:.2f}.",
        "",
        (
            "| model | layers | candidates | floor known s | latencies s | additivity s "
            "| sensitivity s (samples) | total s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['layers']} | {r['candidates']} | {r['refusal_known_s']} | {r['latency_s']} | "
            f"{r['additivity_s']} | {r['sensitivity_s']} ({r['calibration']}) | {r['wall_s']} |"
        )
    lines += [
        "",
        "Additivity (p95, ms): measured whole graph; isolated layers summed + the dense rest; the fitted table "
        "(the middle plan is held out of the fit).",
        "",
        "| model | scale | graph | measured | isolated sum | error | fitted table | error |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = r["additivity"]
        for g, v in a["graphs"].items():
            iso_err = 100 * (v["isolated_sum_ms"] / v["measured_ms"] - 1)
            lines.append(
                f"| {r['model']} | {a['scale']} | {g}{' (held out)' if g == a['held_out'] else ''} | "
                f"{v['measured_ms']:.4f} | {v['isolated_sum_ms']:.4f} | {iso_err:+.1f}% | {v['table_ms']:.4f} | "
                f"{v['error_pct']:+.1f}% |"
            )
    return Outcome(doc, "\n".join(lines) + "\n")
