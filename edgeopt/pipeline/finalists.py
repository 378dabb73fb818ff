"""A finalist's re-measurement, judged as the release gate will judge the plan that ships.

The screen's feasibility is a point estimate (the p95 of a 0.1 s run): cheap, and right for ranking
thousands of plans. The plan that ships is then gated on an order-statistic upper bound of that
percentile (:func:`edgeopt.runtime.gate.latency_check`, one-sided at :data:`~edgeopt.runtime.gate.CONFIDENCE`),
so a finalist picked on its point p95 at the budget's edge fails to be confirmed about half the time
(resnet8: INCONCLUSIVE, the compile failed after 7 minutes). A finalist therefore counts as meeting
the latency budget only when the same check, on its re-measurement's samples, passes: :func:`bounded`.

The finalists of a tier are compared with each other (the fastest ships), so they are timed side by
side (:class:`FinalistTimer`): :data:`ROUNDS` rounds of one short block per finalist, the order rotated
each round, each finalist's samples pooled. One at a time, a neighbour's burst during one finalist's
run decided which plan shipped (cnn1d, one core busy: five repeats shipped plans 0.015 to 0.025 ms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.pipeline.record import Constraints, DType, ScreenResult, Status, TrialRecord
from edgeopt.runtime.retake import REPRODUCE

Remeasure = Callable[[TrialRecord], dict[str, Any]]
BOUND = "latency_bound_ms"  # a re-measurement's upper confidence bound on the budget's percentile
DENSE_NUMBER = -1  # the dense input model's record number inside the selection
ROUNDS = 3  # finalists timed side by side: rounds of one block each, the order rotated per round


class FinalistTimer:
    """Re-measures finalists from their untrained graphs (latency needs no weights), as they ship: the
    plan's int8 layers quantized, whole-artifact int8 for an int8 trial; the dense finalist (plan
    ``{}``) from the input model itself. Called with one record, one measurement
    (``bench_kwargs``); :meth:`together` times several side by side."""

    def __init__(self, inputs: Any, screen: Any, bench_kwargs: Mapping[str, Any]):
        self.inputs, self.screen, self.bench_kwargs = inputs, screen, dict(bench_kwargs)

    def __call__(self, record: TrialRecord) -> dict[str, Any]:
        return self.together([record], rounds=1)[record.number]

    def together(self, records: list[TrialRecord], rounds: int = ROUNDS) -> dict[int, dict[str, Any]]:
        """Each record's measurement: ``rounds`` rounds, one block per record in a rotated order, the
        blocks' samples pooled (each block ``1 / rounds`` of ``bench_kwargs``' length)."""
        import tempfile

        from edgeopt.compiler.decompose import decompose
        from edgeopt.compiler.export import onnx_node_count
        from edgeopt.runtime import stats
        from edgeopt.runtime.bench import bench

        inputs = self.inputs
        block = {
            k: (max(1, math.ceil(v / rounds)) if k != "min_time_s" else v / rounds)
            for k, v in self.bench_kwargs.items()
        }
        samples: dict[int, list[float]] = {r.number: [] for r in records}
        with tempfile.TemporaryDirectory(prefix="edgeopt-finalists-") as tmp:
            paths = {}
            for i, r in enumerate(records):
                student = (
                    decompose(inputs.teacher, r.plan, example_input=inputs.task.example_input)
                    if r.plan
                    else inputs.teacher
                )
                folder = Path(tmp) / str(i)
                folder.mkdir()
                paths[r.number] = self.screen.export(student, r.dtype.value, folder, r.plan)
            for k in range(rounds):
                for i in range(len(records)):
                    number = records[(i + k) % len(records)].number
                    samples[number] += bench(paths[number], inputs.target, **block).samples_ms
            nodes = {n: onnx_node_count(p) for n, p in paths.items()}
        pct = inputs.target.budget.latency_percentile or 95
        # The samples go with it: selection bounds the percentile as the release gate will.
        return {
            n: {
                "latency_ms": stats.percentile(xs, pct),
                "latency_p50_ms": stats.percentile(xs, 50),
                "nodes": nodes[n],
                "samples_ms": xs,
            }
            for n, xs in samples.items()
        }


@dataclass
class Bounded:
    """``raw`` re-measurements with their samples replaced by the gate's verdict (:func:`bounded`)."""

    raw: Remeasure
    percentile: float
    budget_ms: float | None

    def __call__(self, record: TrialRecord) -> dict[str, Any]:
        return bounded(self.raw(record), self.percentile, self.budget_ms)

    def together(self, records: list[TrialRecord]) -> dict[int, dict[str, Any]]:
        return {n: bounded(m, self.percentile, self.budget_ms) for n, m in measure_together(self.raw, records).items()}


def measure_together(measure: Remeasure, records: list[TrialRecord]) -> dict[int, dict[str, Any]]:
    """Each record's re-measurement: side by side when ``measure`` can (a ``together`` method), else one by one."""
    together = getattr(measure, "together", None)
    if together is not None and len(records) > 1:
        return together(records)
    return {r.number: measure(r) for r in records}


def bounded(m: dict[str, Any], percentile: float, budget_ms: float | None) -> dict[str, Any]:
    """``m`` (a re-measurement) with its samples replaced by the gate's verdict on them: ``latency_bound_ms``
    (the upper bound; inf when the samples are too few for one) and ``gate`` (pass, fail, inconclusive).
    Without samples (the screen's own figures) the point estimate stands in for the bound."""
    from edgeopt.runtime.gate import CONFIDENCE, latency_check

    out = {k: v for k, v in m.items() if k != "samples_ms"}
    samples = m.get("samples_ms")
    if not samples:
        out.setdefault(BOUND, out["latency_ms"])
        return out
    check = latency_check(
        samples, percentile, budget_ms if budget_ms is not None else math.inf, CONFIDENCE, source="measured"
    )
    out[BOUND] = check.upper_bound if check.upper_bound is not None else math.inf
    if budget_ms is not None:
        out["gate"] = check.status
    return out


def screened(record: TrialRecord) -> dict[str, Any]:
    """The screen's own figures of a trial, in the shape ``remeasure`` returns."""
    s = record.screen
    return {
        "latency_p50_ms": s.latency_p50_ms if s else math.inf,
        "latency_ms": s.latency_ms if s else math.inf,
        "nodes": s.nodes if s else 0,
    }


@dataclass
class DenseRef:
    """The dense input model as a finalist (``record``, number ``DENSE_NUMBER``) and its
    re-measurement: taken before the plans and again after the first tier's, the faster counting."""

    record: TrialRecord
    measured: dict[str, Any]
    rounds: int = 1

    @classmethod
    def measure(cls, record: TrialRecord, measure: Remeasure) -> DenseRef:
        return cls(record, measure(record))

    def confirm(self, measure: Remeasure) -> None:
        """Measured again once, after the plans, so that a host that slowed down meanwhile does not
        favour them: the faster of the two measurements counts."""
        if self.rounds < 2:
            again = measure(self.record)
            self.rounds += 1
            if again["latency_p50_ms"] < self.measured["latency_p50_ms"]:
                self.measured = again


def margin_ms(m: dict[str, Any]) -> float:
    """The headroom a re-measurement's bound must leave under the budget for the release measurement, taken
    in another window, to read it within: :data:`~edgeopt.runtime.retake.REPRODUCE` of the bound. (It was
    the finalist's own tail, p95 less p50; on a busy host the p50 moves between windows as much as the p95
    or more, so the tail added its noise to the verdict: decision 0108.)"""
    bound = float(m.get(BOUND, m.get("latency_ms", 0.0)))
    return REPRODUCE * bound if math.isfinite(bound) else math.inf


def dense_record(baseline: Any, budget: Any) -> TrialRecord | None:
    """The dense input model as a finalist (fp32, number :data:`DENSE_NUMBER`; scored and measured as the
    baseline: ``gate``, ``bench``, ``metrics``), or None when it misses a budget (its gate) or the floor."""
    if baseline.gate.verdict != "pass":
        return None
    score = baseline.metrics["val"]["score"]
    if budget.min_f1 is not None and score < budget.min_f1:
        return None
    bench = baseline.bench
    p50 = float(bench.latency_ms["p50"])
    pct = float(getattr(budget, "latency_percentile", None) or 95)
    at = getattr(bench, "latency_at", None)
    lat = float(at(pct)) if at is not None else float(bench.latency_ms.get(f"p{pct:g}", p50))
    screen = ScreenResult(
        latency_ms=lat,
        latency_p50_ms=p50,
        latency_source=str(getattr(bench, "latency_source", "")),
        peak_memory_mb=float(getattr(bench, "peak_memory_mb", math.nan)),
        size_bytes=int(getattr(bench, "model_size_bytes", 0) or 0),
        nodes=0,
    )
    return TrialRecord(
        number=DENSE_NUMBER,
        status=Status.TRAINED,
        plan={},
        dtype=DType.FP32,
        screen=screen,
        val={"score": score},
        constraints=Constraints(),
        state="complete",
    )


__all__ = [
    "BOUND",
    "DENSE_NUMBER",
    "Bounded",
    "DenseRef",
    "FinalistTimer",
    "Remeasure",
    "bounded",
    "dense_record",
    "margin_ms",
    "measure_together",
    "screened",
]
