"""Shipping the chosen plan: fine-tune, export (verified against torch), quantize, measure, gate, and
write the artifacts — ``model.onnx`` and ``compile.json`` — atomically.

The file that ships is the file that was measured: it is staged in a temporary dir inside ``out``,
scored on val and test with onnxruntime (the only place the test split is used), stamped with its
provenance, benchmarked with the full protocol and gated, then renamed into place.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_path, atomic_write_text
from edgeopt._version import __version__
from edgeopt.search.config import CompileConfig
from edgeopt.search.record import DType, TrialRecord

log = logging.getLogger("edgeopt.compile")


@dataclass
class Measured:
    """An ONNX file as measured: its gate verdict (with the bench inside) and its metrics per split."""

    gate: Any
    bench: Any
    metrics: dict[str, Any]


@dataclass
class Shipped:
    """The artifact written: its plan, dtype, cost, measurements, timings and the trial it came from."""

    plan: dict[str, Any]
    dtype: DType
    measured: Measured
    cost: Any
    path: Path
    trial: int | None
    timings: dict[str, float] = field(default_factory=dict)


def export_verified(model: Any, task: Any, path: Path, metadata: dict[str, str]) -> dict[str, float]:
    """Export ``model`` to ``path``, checked against torch on validation samples; returns the time taken."""
    from edgeopt.compiler.export import export_onnx

    t0 = time.perf_counter()
    export_onnx(model, task.example_input, path, metadata=metadata, verify=True, verify_inputs=task.X_val[:32])
    return {"export": time.perf_counter() - t0}


def measure_artifact(path: Path, task: Any, target: Any, *, bench_kwargs: dict[str, Any]) -> Measured:
    """Metrics of an ONNX file on val and test (stamped into it as provenance), then the full-protocol
    bench and gate of the file exactly as it ships."""
    from edgeopt.runtime.gate import gate
    from edgeopt.search.evaluate import onnx_metrics, stamp_metadata

    metrics = {"val": onnx_metrics(path, task.X_val, task.y_val, task.metric)}
    metrics["test"] = onnx_metrics(path, task.X_test, task.y_test, task.metric) if task.X_test is not None else None
    stamp_metadata(path, {"edgeopt.metrics": metrics})
    g = gate(path, target, **bench_kwargs)
    return Measured(gate=g, bench=g.bench, metrics=metrics)


def fine_tune(teacher: Any, plan: dict[str, Any], task: Any, config: CompileConfig) -> tuple[Any, dict[str, float]]:
    """The plan's student, distilled for ``final_epochs`` with a cosine schedule (the dense teacher as is)."""
    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.distill import distill

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    student = decompose(teacher, plan, example_input=task.example_input) if plan else copy.deepcopy(teacher)
    timings["decompose"] = time.perf_counter() - t0
    from edgeopt.compiler.formats import DEFAULT_FORMAT

    if plan and any(v.get("format") != DEFAULT_FORMAT for v in plan.values()):
        log.info("fine-tuning the chosen plan for up to %d epochs", config.final_epochs)
        t0 = time.perf_counter()
        # The plan was selected on validation; selecting its weights on validation again over-fits
        # that small split (seen: +0.01 val, -0.8 pt test). Anneal the rate and keep the last epoch.
        distill(
            student,
            teacher,
            (task.X_train, task.y_train),
            (task.X_val, task.y_val),
            epochs=config.final_epochs,
            lr=config.lr,
            seed=config.seed,
            metric=task.metric,
            schedule="cosine",
            restore_best=False,
            train_device=config.train_device,
        )
        timings["distill"] = time.perf_counter() - t0
    return student.eval(), timings


def ship(teacher: Any, chosen: TrialRecord | None, task: Any, target: Any, config: CompileConfig) -> Shipped:
    """Fine-tune the chosen plan (none: the input model), export, quantize, measure, gate; write ``model.onnx``."""
    from edgeopt.compiler.decompose import plan_cost

    plan = dict(chosen.plan) if chosen is not None else {}
    dtype = chosen.dtype if chosen is not None else DType.FP32
    student, timings = fine_tune(teacher, plan, task, config)
    model_path = config.out / "model.onnx"
    meta = {
        "edgeopt.version": __version__,
        "edgeopt.role": "artifact",
        "edgeopt.target": target.name,
        "edgeopt.task": task.name,
        "edgeopt.plan": json.dumps(plan, sort_keys=True),
        "edgeopt.dtype": dtype.value,
        "edgeopt.precision": dtype.value,
    }  # the old key, for readers of earlier artifacts
    with tempfile.TemporaryDirectory(prefix="edgeopt-final-", dir=config.out) as tmp:
        staged = Path(tmp) / "model.onnx"
        timings.update(export_verified(student, task, staged, meta))
        if dtype is DType.INT8:
            from edgeopt.search.quantize import quantize_onnx

            staged = quantize_onnx(staged, Path(tmp) / "model.int8.onnx", calibration=task.X_train[:256])
        t0 = time.perf_counter()
        measured = measure_artifact(staged, task, target, bench_kwargs=config.artifact_bench())
        timings["bench"] = time.perf_counter() - t0
        with atomic_path(model_path) as dest:  # the artifact appears whole or not at all
            staged.replace(dest)
    return Shipped(
        plan=plan,
        dtype=dtype,
        measured=measured,
        cost=plan_cost(teacher, plan, task.example_input),
        path=model_path,
        trial=chosen.number if chosen is not None else None,
        timings=timings,
    )


def layer_table(layers: dict[str, Any], plan: dict[str, Any], base_cost: Any, best_cost: Any) -> list[dict[str, Any]]:
    """Per decomposable layer of the shipped plan: format, ranks, params before/after, MACs."""
    from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler

    rows = []
    for name, spec in layers.items():
        entry = plan.get(name, {"format": DEFAULT_FORMAT})
        base_l = getattr(base_cost, "layers", {}).get(name)
        best_l = getattr(best_cost, "layers", {}).get(name)
        dense_params = int(getattr(base_l, "params", 0) or getattr(spec, "params", 0))
        rows.append(
            {
                "name": name,
                "kind": getattr(spec, "kind", "linear"),
                "format": entry["format"],
                "ranks": list(getattr(best_l, "ranks", None) or []) or get_handler(entry["format"]).rank_of(entry),
                "params": int(getattr(best_l, "params", 0) or dense_params),
                "dense_params": dense_params,
                "macs": int(getattr(best_l, "macs", 0) or getattr(spec, "macs", 0) or 0),
            }
        )
    return rows


def json_default(o: Any) -> Any:
    """JSON for what ``compile.json`` holds besides plain data (dataclasses, arrays, paths)."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def write_state(out: Path, state: dict[str, Any]) -> Path:
    """``compile.json``: what ``edgeopt report DIR`` rebuilds the report from."""
    return atomic_write_text(out / "compile.json", json.dumps(state, indent=2, default=json_default))


__all__ = [
    "Measured",
    "Shipped",
    "export_verified",
    "fine_tune",
    "layer_table",
    "measure_artifact",
    "ship",
    "write_state",
]
