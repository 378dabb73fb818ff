"""Should a Linear layer's int8 rung be static QDQ or dynamic? Per model, every decomposable layer in int8,
three ways, against fp32: static QDQ on every layer (what the per-layer int8 rungs did before decision
0113: ``quantize_static`` on those nodes, calibrated, per-channel weights), edgeopt's ``quantize_plan``
now (Conv static QDQ, MatMul/Gemm dynamic), and onnxruntime's whole-graph int8 (``quantize_onnx``, what
the alternatives use). The four files are timed side by side in one process (``benchmarks.interleaved``:
host-1t's runtime, 1 thread, rotating blocks, pooled p50/p95), and each file's argmax agreement with torch on 512
validation samples is given.

    flock /tmp/edgeopt-bench.lock python -m benchmarks int8_linear_dynamic [--set models=vit]
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.interleaved import time_interleaved
from benchmarks.suite import Outcome

AGREEMENT_SAMPLES = 512


def _static_all(src: Path, dst: Path, layers: list[str], calibration: np.ndarray) -> Path:
    """Static QDQ int8 of every node of ``layers`` (MatMul/Gemm too): the per-layer rungs before 0113."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgeopt.compiler.quantize import LAYER_OPS, layer_nodes

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, x: np.ndarray) -> None:
            self.batches = iter(
                [{name: np.ascontiguousarray(x[i : i + 32], dtype=np.float32)} for i in range(0, len(x), 32)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    model = onnx.load(str(src), load_external_data=False)
    nodes = [n for hit in layer_nodes(model, layers).values() for n in hit]
    quantize_static(
        str(src),
        str(dst),
        Reader(model.graph.input[0].name, calibration[:128]),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(LAYER_OPS),
        nodes_to_quantize=nodes,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return dst


def _agreement(path: Path, task: Any) -> float:
    import onnxruntime as ort
    import torch

    x = np.ascontiguousarray(task.X_val[:AGREEMENT_SAMPLES], dtype=np.float32)
    with torch.no_grad():
        ref = task.model.eval()(torch.as_tensor(x)).numpy().argmax(-1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    return round(float(np.mean(got.argmax(-1) == ref)), 4)


def one(name: str, tmp: Path, rounds: int, block: int) -> dict[str, Any]:
    from edgeopt.compiler.analysis import decomposable_layers
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx, quantize_plan
    from edgeopt.models.examples import load_example

    task = load_example(name, seed=0)
    layers = list(decomposable_layers(task.model, task.example_input))
    cal = task.X_train[:256]
    fp32 = export_onnx(task.model, task.example_input, tmp / f"{name}.onnx", verify=False)
    plan = {n: {"format": "dense", "precision": "int8"} for n in layers}
    files = {
        "fp32": fp32,
        "every layer static QDQ (before 0113)": _static_all(fp32, tmp / f"{name}-static.onnx", layers, cal),
        "every layer, quantize_plan (conv static, Linear dynamic)": quantize_plan(
            fp32, tmp / f"{name}-plan.onnx", plan, calibration=cal[:64]
        ),
        "ORT whole-graph int8": quantize_onnx(fp32, tmp / f"{name}-whole.onnx", calibration=cal),
    }
    timed = time_interleaved(list(files.values()), rounds=rounds, block=block)
    rows = []
    for (label, path), t in zip(files.items(), timed, strict=True):
        rows.append({"file": label, **t, "argmax_agreement": _agreement(path, task)})
    base = rows[0]["p50_us"]
    for r in rows:
        r["speedup_p50"] = round(base / r["p50_us"], 3)
    return {"model": name, "layers": len(layers), "rows": rows}


def run(args: SimpleNamespace) -> Outcome:
    """Per model in ``models``: fp32 and the three int8 files of every layer, timed side by side."""
    with tempfile.TemporaryDirectory() as tmp:
        models = [one(m, Path(tmp), int(args.rounds), int(args.block)) for m in str(args.models).split(",")]
    lines = ["| model | file | p50 µs | p95 µs | speed-up (p50) | argmax agrees |", "|---|---|---|---|---|---|"]
    for m in models:
        for r in m["rows"]:
            lines.append(
                f"| {m['model']} | {r['file']} | {r['p50_us']:.1f} | {r['p95_us']:.1f} | {r['speedup_p50']:.2f}x "
                f"| {100 * r['argmax_agreement']:.1f} % |"
            )
    notes = ["Speed-up against the model's fp32 file, timed in the same rounds; agreement with torch's argmax."]
    return Outcome({"models": models}, "\n".join(lines) + "\n", notes)
