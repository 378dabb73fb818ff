"""Does onnxruntime's int8 (static QDQ for Conv, dynamic for MatMul/Gemm) speed up edgeopt's decomposed
plans too? Latency only (weights as initialized from the teacher; int8 does not change the graph's
shape): per model, the dense graph and edgeopt's shipped plan from the ``edgeopt_vs_baselines_on_architectures``
result, each in fp32 and int8, on ``benchmarks/host-1t.toml``, the least p50 of three 1 s benches.

    flock /tmp/edgeopt-bench.lock python -m benchmarks int8_pays_on_plans [--set models=resnet8]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

from benchmarks.suite import HOST_1T, RESULTS, Outcome, load

SOURCE = "edgeopt_vs_baselines_on_architectures"  # whose shipped plans are quantized


def shipped_plan(name: str, doc: dict) -> dict:
    found = {e["example"]: e for e in doc["architectures"]}
    if name not in found:
        raise ValueError(f"{SOURCE}: no {name} in its result (it has {', '.join(found)}); run it for {name} first")
    ex = found[name]
    return next(r for r in ex["rows"] if r["method"] == "edgeopt")["detail"]["plan"]


def p50_us(path: Path, target: str) -> float:
    from edgeopt.runtime.bench import bench

    return 1e3 * min(float(bench(path, target, min_time_s=1.0, min_iters=200).latency_ms["p50"]) for _ in range(3))


def one(name: str, tmp: Path, plans: dict) -> dict:
    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx
    from edgeopt.models.examples import load_example

    task, target = load_example(name), str(HOST_1T)
    row: dict = {"model": name, "plan": shipped_plan(name, plans)}
    for label, plan in (("dense", {}), ("edgeopt plan", row["plan"])):
        fp32 = export_onnx(
            decompose(task.model, plan, example_input=task.example_input).eval(),
            task.example_input,
            tmp / f"{name}-{len(plan)}.onnx",
            verify=False,
        )
        int8 = quantize_onnx(fp32, tmp / f"{name}-{len(plan)}-int8.onnx", calibration=task.X_train[:256])
        row[label] = {"fp32_p50_us": round(p50_us(fp32, target), 1), "int8_p50_us": round(p50_us(int8, target), 1)}
    return row


def run(args: SimpleNamespace) -> Outcome:
    """Per model in ``models``: dense and the shipped plan, each fp32 and int8."""
    plans = load(args.out, SOURCE) or load(RESULTS, SOURCE)
    if not plans:
        raise FileNotFoundError(f"{SOURCE}: no result in {args.out} or {RESULTS}; run that benchmark first")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [one(m, Path(tmp), plans) for m in args.models.split(",")]
    lines = [
        "p50 µs on host-1t (1 thread), the least of three 1 s benches.",
        "",
        "| model | dense fp32 | dense int8 | edgeopt plan fp32 | edgeopt plan int8 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        d, e = r["dense"], r["edgeopt plan"]
        lines.append(
            f"| {r['model']} | {d['fp32_p50_us']} | {d['int8_p50_us']} | {e['fp32_p50_us']} | {e['int8_p50_us']} |"
        )
    return Outcome({"rows": rows}, "\n".join(lines) + "\n")
