"""Shipping the chosen plan: fine-tune (held to the selected trial's validation score:
:mod:`edgeopt.pipeline.finetune`), export (verified against torch), quantize, measure, gate, and write the
artifacts — ``model.onnx`` and ``compile.json`` — atomically, with figures counted from the file
(:mod:`edgeopt.pipeline.figures`).

The file that ships is the file that was measured: it is staged in a temporary dir inside ``out``,
scored on val and test with onnxruntime (the only place the test split is used), stamped with its
provenance, benchmarked with the full protocol and gated, then renamed into place.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_path, atomic_write_text
from edgeopt._version import __version__
from edgeopt.compiler.formats import int8_layers
from edgeopt.pipeline.config import CompileConfig
from edgeopt.pipeline.record import DType, TrialRecord
from edgeopt.runtime.gate import retaken_note
from edgeopt.runtime.retake import RETAKES, Expected, gate_retaking

log = logging.getLogger("edgeopt.compile")


@dataclass
class Measured:
    """An ONNX file as measured: its gate verdict (with the bench inside) and its metrics per split."""

    gate: Any
    bench: Any
    metrics: dict[str, Any]
    tries: list[dict[str, Any]] = field(default_factory=list)  # the release measurements, when repeated

    def repeated(self) -> str | None:
        """A note when other work disturbed the release measurement and it was taken again."""
        note = retaken_note(self.tries)
        return None if note is None else f"release measurement: {note}"


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
    finetune: dict[str, Any] | None = None  # the FineTune record: the trial's and the artifact's val scores
    int8_check: dict[str, Any] | None = None  # per-layer int8: its layers, argmax agreement and max diff vs torch


def export_verified(model: Any, task: Any, path: Path, metadata: dict[str, str]) -> dict[str, float]:
    """Export ``model`` to ``path``, checked against torch on validation samples; returns the time taken."""
    from edgeopt.compiler.export import export_onnx

    t0 = time.perf_counter()
    export_onnx(model, task.example_input, path, metadata=metadata, verify=True, verify_inputs=task.X_val[:32])
    return {"export": time.perf_counter() - t0}


RELEASE_TRIES = RETAKES  # release measurements at most, while other work disturbs one whose latency did not pass


def measure_artifact(
    path: Path, task: Any, target: Any, *, bench_kwargs: dict[str, Any], expected: Expected | None = None
) -> Measured:
    """Metrics of an ONNX file on val and test (stamped into it as provenance), then the full-protocol
    bench and gate of the file exactly as it ships; taken again (up to :data:`RELEASE_TRIES`) while its
    latency does not pass and other work disturbed it (:func:`~edgeopt.runtime.retake.gate_retaking`:
    flagged by our statistics, or its p50 over ``SHIFTED`` x, or its p95 over 1 + ``REPRODUCE`` x,
    ``expected``'s: the plan as its finalist measurement read it, :class:`~edgeopt.runtime.retake.Expected`)."""
    from edgeopt.pipeline.evaluate import onnx_metrics, stamp_metadata

    metrics = {"val": onnx_metrics(path, task.X_val, task.y_val, task.metric)}
    metrics["test"] = onnx_metrics(path, task.X_test, task.y_test, task.metric) if task.X_test is not None else None
    stamp_metadata(path, {"edgeopt.metrics": metrics})
    g = gate_retaking(path, target, retakes=RELEASE_TRIES, expected=expected, **bench_kwargs)
    return Measured(gate=g, bench=g.bench, metrics=metrics, tries=list(g.tries))


def _metadata(plan: dict[str, Any], dtype: DType, task: Any, target: Any) -> dict[str, str]:
    return {
        "edgeopt.version": __version__,
        "edgeopt.role": "artifact",
        "edgeopt.target": target.name,
        "edgeopt.task": task.name,
        "edgeopt.plan": json.dumps(plan, sort_keys=True),
        "edgeopt.dtype": dtype.value,
        "edgeopt.precision": dtype.value,  # the old key, for readers of earlier artifacts
    }


@dataclass
class _Stager:
    """Exports (and quantizes) a student into its own folder of the staging dir; scores the file on val."""

    task: Any
    dtype: DType
    meta: dict[str, str]
    tmp: Path
    timings: dict[str, float]
    plan: dict[str, Any] = field(default_factory=dict)
    int8_check: dict[str, Any] = field(default_factory=dict)  # the last staged file's int8 check against torch

    def __call__(self, student: Any, name: str) -> tuple[Path, float]:
        from edgeopt.pipeline.evaluate import onnx_metrics

        folder = self.tmp / name
        folder.mkdir()
        staged = folder / "model.onnx"
        for key, value in export_verified(student, self.task, staged, self.meta).items():
            self.timings[key] = self.timings.get(key, 0.0) + value
        if self.dtype is DType.INT8:
            from edgeopt.compiler.quantize import quantize_onnx

            staged = quantize_onnx(staged, folder / "model.int8.onnx", calibration=self.task.X_train[:256])
        elif int8_layers(self.plan):
            staged = self._per_layer_int8(student, staged, folder)
        return staged, float(onnx_metrics(staged, self.task.X_val, self.task.y_val, self.task.metric)["score"])

    def _per_layer_int8(self, student: Any, staged: Path, folder: Path) -> Path:
        """The plan's int8 layers quantized (static QDQ, calibrated on training samples), checked against torch."""
        from edgeopt.compiler.quantize import quantize_plan, verify_int8
        from edgeopt.search.allocation.sensitivity import balanced_order

        t0 = time.perf_counter()
        calib = self.task.X_train[balanced_order(self.task.y_train, 256)]
        staged = quantize_plan(staged, folder / "model.int8.onnx", self.plan, calibration=calib)
        self.timings["quantize"] = self.timings.get("quantize", 0.0) + time.perf_counter() - t0
        self.int8_check = {"layers": int8_layers(self.plan), **verify_int8(student, staged, self.task.X_val[:256])}
        log.info(
            "int8 layers %s: argmax agrees with torch on %.1f%% of val[:%d], max |logit diff| %.3g",
            ", ".join(self.int8_check["layers"]),
            100 * self.int8_check["argmax_agreement"],
            self.int8_check["samples"],
            self.int8_check["max_abs_diff"],
        )
        return staged


def _hold_to_trial(
    teacher: Any,
    chosen: TrialRecord | None,
    tuned: Any,
    stage: _Stager,
    config: CompileConfig,
    planned_epochs: int | None = None,
    kept: dict[str, Any] | None = None,
) -> tuple[Path, Any, Any]:
    """The file to ship, its student and the ``FineTune`` record (None without a selected trial): the
    fine-tuned file, unless it is beyond the tolerance below the trial and the trial's student (``kept``:
    its weights as the trial left them; else trained again) is better on val by McNemar (decision 0116),
    said in the record's note either way. ``planned_epochs``: the
    fine-tune's epochs before the time budget cut them to ``config.final_epochs`` (said when it did)."""
    from edgeopt.pipeline import finetune as ft

    path, score = stage(tuned.student, "tuned")
    if chosen is None:
        return path, tuned.student, None
    task, tol, metric = stage.task, ft.tolerance(config), stage.task.metric_name
    trial_score, fell_back, p = chosen.score, False, None
    cut = bool(tuned.history) and planned_epochs is not None and planned_epochs > config.final_epochs
    continued = tuned.continued
    note = ft.verdict_note(chosen.number, trial_score, score, tol, metric)
    if trial_score is not None and score < trial_score - tol:
        how = "taking the trial's kept student" if kept is not None else "training the trial's student again"
        log.info("the fine-tuned artifact is below trial %d on val: %s", chosen.number, how)
        again = ft.retrain_trial(teacher, dict(chosen.plan), task, config, kept)
        stage.timings.update(again.timings)
        again_path, again_score = stage(again.student, "trial")
        p = ft.prefer_trial(task, again_path, path, again_score, score)
        note = ft.fallback_note(chosen.number, trial_score, score, again_score, p, config, metric, kept is not None)
        if p is not None and p < ft.KEEP_P:
            path, tuned, score, fell_back = again_path, again, again_score, True
    record = ft.FineTune(
        selected_trial=chosen.number,
        trial_val_score=trial_score,
        artifact_val_score=score,
        tolerance_pt=round(tol * 100, 6),
        epoch=tuned.epoch,
        epochs=len(tuned.history) or (config.trial_epochs if fell_back else 0),
        fell_back=fell_back,
        note=note,
        cut_from=planned_epochs if cut else None,
        cut_to=config.final_epochs if cut else None,
        continued=continued,
        kept=tuned.kept,
        kept_p=tuned.kept_p,
        fallback_p=p,
    )
    ft.report(record, metric)
    return path, tuned.student, record


def ship(
    teacher: Any,
    chosen: TrialRecord | None,
    task: Any,
    target: Any,
    config: CompileConfig,
    measured_before: dict[str, Any] | None = None,
    planned_epochs: int | None = None,
) -> Shipped:
    """Fine-tune the chosen plan (none: the input model), held to the trial's validation score; export,
    quantize, measure, gate; write ``model.onnx``. Its figures are counted from the file itself.
    ``measured_before``: the plan's finalist re-measurement (``latency_p50_ms``, ``latency_ms`` at the
    budget's percentile), which a release measurement disturbed by other work is held against.
    ``planned_epochs``: ``final_epochs`` before the time budget cut it (``loop._final_config``)."""
    from edgeopt.pipeline import students
    from edgeopt.pipeline.finetune import fine_tune

    plan = dict(chosen.plan) if chosen is not None else {}
    dtype = chosen.dtype if chosen is not None else DType.FP32
    kept = students.load(config.out, chosen.number, plan) if chosen is not None and plan else None
    # cut by the time budget, the fine-tune goes on from the trial's weights rather than start again short
    cut = planned_epochs is not None and planned_epochs > config.final_epochs
    tuned = fine_tune(teacher, plan, task, config, start=kept if cut else None)
    timings = tuned.timings
    model_path = config.out / "model.onnx"
    with tempfile.TemporaryDirectory(prefix="edgeopt-final-", dir=config.out) as tmp:
        stage = _Stager(task, dtype, _metadata(plan, dtype, task, target), Path(tmp), timings, plan)
        staged, student, record = _hold_to_trial(teacher, chosen, tuned, stage, config, planned_epochs, kept)
        t0 = time.perf_counter()
        measured = measure_artifact(
            staged,
            task,
            target,
            bench_kwargs=config.artifact_bench(),
            expected=_expected(chosen, target, measured_before),
        )
        timings["bench"] = time.perf_counter() - t0
        cost = artifact_cost(teacher, student, plan, staged, task.example_input)
        with atomic_path(model_path) as dest:  # the artifact appears whole or not at all
            staged.replace(dest)
    return Shipped(
        plan=plan,
        dtype=dtype,
        measured=measured,
        cost=cost,
        path=model_path,
        trial=chosen.number if chosen is not None else None,
        timings=timings,
        finetune=record.to_dict() if record is not None else None,
        int8_check=stage.int8_check or None,
    )


def _expected(chosen: TrialRecord | None, target: Any, before: dict[str, Any] | None) -> Expected | None:
    """The plan as measured before its release: the finalists' re-measurement when there was one, else the
    screen's p50 (:class:`~edgeopt.runtime.retake.Expected`); None for the input model."""
    if chosen is None or chosen.screen is None:
        return None
    pct = float(getattr(target.budget, "latency_percentile", None) or 95)
    if before and before.get("latency_p50_ms") and before.get("latency_ms"):
        return Expected(float(before["latency_p50_ms"]), pct, float(before["latency_ms"]))
    return Expected(p50_ms=float(chosen.latency_p50_ms))


def artifact_cost(teacher: Any, student: Any, plan: dict[str, Any], path: Path, example_input: Any = None) -> Any:
    """The shipped file's figures (:class:`~edgeopt.pipeline.figures.ArtifactCost`): totals from the file,
    per layer from the built ``student``, MACs from the plan with each layer's built figure."""
    from edgeopt.compiler.decompose import decomposable_layers, plan_cost
    from edgeopt.pipeline.figures import built_layers, built_macs, file_cost

    teacher_layers = decomposable_layers(teacher, example_input)
    layers = built_layers(student, teacher_layers, example_input)
    macs = built_macs(plan_cost(teacher, plan, example_input), teacher_layers, layers)
    return file_cost(path, macs, layers)


def baseline_cost(base_cost: Any, path: Path) -> Any:
    """The input model's file figures: totals from ``baseline.onnx``, MACs and layers from ``base_cost``."""
    from edgeopt.pipeline.figures import file_cost

    return file_cost(path, int(base_cost.macs), dict(getattr(base_cost, "layers", {}) or {}))


def with_nodes(entry: Any, measured: Measured, cost: Any, path: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    """``entry(measured, cost, path, out, **kwargs)`` (report.json's side of the comparison) with the file's
    figures: ``params``, ``size_bytes`` and ``nodes`` as the file counts them."""
    d = entry(measured, cost, path, out, **kwargs)
    d.update({"params": int(cost.params), "size_bytes": int(cost.size_bytes), "nodes": int(cost.nodes)})
    return d


def gate_outcome(budget: dict[str, Any]) -> tuple[str, list[str]]:
    """The artifact's verdict as its final gate gave it (a failed quality floor fails it too) and one true
    line per check that did not pass: a failure by its bound, an undecided check by where its bounds lie."""
    checks = budget.get("checks", [])
    verdict = "fail" if any(c.get("passed") is False for c in checks) else str(budget.get("verdict", "unknown"))
    lines = [_check_line(c) for c in checks if not c.get("passed")]
    if verdict == "inconclusive":
        lines.insert(0, "final gate: INCONCLUSIVE, a budget could not be decided either way (exit 3)")
    return verdict, lines


def _check_line(c: dict[str, Any]) -> str:
    name, m, b = c.get("name"), c.get("measured"), c.get("budget")
    lo, hi = c.get("lower_bound"), c.get("upper_bound")
    if m is None or b is None:
        return f"{name}: not measured (budget {b})"
    if c.get("passed") is False:
        side = ">" if m > b else "<"
        kind, bound = ("lower", lo) if side == ">" else ("upper", hi)
        sure = f" ({kind} bound {bound:.6g} too)" if bound is not None else ""
        return f"{name}: measured {m:.6g} {side} budget {b:.6g}{sure}"
    within = "within" if m <= b else "over"
    bounds = ", ".join(f"{k} bound {v:.6g}" for k, v in (("lower", lo), ("upper", hi)) if v is not None)
    return (
        f"{name}: undecided: measured {m:.6g} is {within} budget {b:.6g} but the confidence interval ({bounds}) "
        "straddles it; a longer measurement may decide"
    )


def layer_table(layers: dict[str, Any], plan: dict[str, Any], base_cost: Any, best_cost: Any) -> list[dict[str, Any]]:
    """Per decomposable layer of the shipped plan: format, ranks, params before/after, MACs."""
    from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler, precision_of

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
                "precision": precision_of(entry),
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
    "artifact_cost",
    "baseline_cost",
    "export_verified",
    "gate_outcome",
    "layer_table",
    "measure_artifact",
    "ship",
    "with_nodes",
    "write_state",
]
