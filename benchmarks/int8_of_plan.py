"""Does onnxruntime's int8 (static QDQ for Conv, dynamic for MatMul/Gemm) speed up edgeopt's decomposed
plans too? Latency only (weights as initialized from the teacher; int8 does not change the graph's
shape): per model, the dense graph and edgeopt's shipped plan from ``results/compare-architectures.json``,
each in fp32 and int8, on ``benchmarks/host-1t.toml``, the least p50 of three 1 s benches.

    flock /tmp/edgeopt-bench.lock python benchmarks/int8_of_plan.py [--models resnet8]

Writes ``benchmarks/results/int8_of_plan.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def shipped_plan(name: str) -> dict:
    doc = json.loads((HERE / "results" / "compare-architectures.json").read_text())
    ex = next(e for e in doc["architectures"] if e["example"] == name)
    return next(r for r in ex["rows"] if r["method"] == "edgeopt")["detail"]["plan"]


def p50_us(path: Path, target: str) -> float:
    from edgeopt.runtime.bench import bench

    return 1e3 * min(float(bench(path, target, min_time_s=1.0, min_iters=200).latency_ms["p50"]) for _ in range(3))


def one(name: str, tmp: Path) -> dict:
    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx
    from edgeopt.models.examples import load_example

    task, target = load_example(name), str(HERE / "host-1t.toml")
    row: dict = {"model": name, "plan": shipped_plan(name)}
    for label, plan in (("dense", {}), ("edgeopt plan", row["plan"])):
        fp32 = export_onnx(
            decompose(task.model, plan).eval(), task.example_input, tmp / f"{name}-{len(plan)}.onnx", verify=False
        )
        int8 = quantize_onnx(fp32, tmp / f"{name}-{len(plan)}-int8.onnx", calibration=task.X_train[:256])
        row[label] = {"fp32_p50_us": round(p50_us(fp32, target), 1), "int8_p50_us": round(p50_us(int8, target), 1)}
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet8")
    ap.add_argument("--out", default=str(HERE / "results" / "int8_of_plan"))
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one(m, Path(tmp)) for m in args.models.split(",")]
    lines = [
        f"edgeopt at commit {commit}; p50 µs on host-1t (1 thread), the least of three 1 s benches.",
        "",
        "| model | dense fp32 | dense int8 | edgeopt plan fp32 | edgeopt plan int8 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, e = r["dense"], r["edgeopt plan"]
        lines.append(
            f"| {r['model']} | {d['fp32_p50_us']} | {d['int8_p50_us']} | {e['fp32_p50_us']} | {e['int8_p50_us']} |"
        )
    Path(args.out).with_suffix(".json").write_text(json.dumps({"commit": commit, "rows": rows}, indent=1))
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
