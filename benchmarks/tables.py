"""Per-layer tables of the example models (issue 9, item 1): how long they take to build, and whether
the isolated layers add up to the whole graph.

For each model: the tables on ``benchmarks/host-1t.toml`` (this host, 1 onnxruntime thread), built
from scratch; the seconds spent on latencies, on the whole-graph additivity fit and on sensitivities;
and the additivity check: dense graph, fastest plan and middle plan (each layer at its median-latency
rung) measured as whole graphs against (a) the isolated layers summed plus the dense rest and (b) the
fitted table (``rest + scale x sum``). The middle plan is held out of the fit, so its error is the
table's real error.

    python benchmarks/tables.py --models resnet8 mobilenet vit cnn1d digits-mlp

Writes ``benchmarks/results/tables.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def one(name: str) -> dict:
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.build import build_tables

    task = load_example(name)
    target = Target.load(HERE / "host-1t.toml")
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet8", "mobilenet", "vit", "cnn1d", "digits-mlp"])
    ap.add_argument("--out", default=str(HERE / "results" / "tables"))
    args = ap.parse_args()
    import onnxruntime
    import torch

    rows = [one(m) for m in args.models]
    doc = {
        "host": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out + ".json").write_text(json.dumps(doc, indent=1))
    lines = [
        f"Tables on `benchmarks/host-1t.toml` (1 onnxruntime thread), {doc['cores']} cores, torch {doc['torch']}, "
        f"onnxruntime {doc['onnxruntime']}; load at the end {doc['load'][0]:.2f}. `python benchmarks/tables.py`.",
        "",
        "| model | layers | candidates | floor known s | latencies s | additivity s | sensitivity s (samples) | total s |",
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
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
