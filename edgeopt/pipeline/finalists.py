"""A finalist's re-measurement, judged as the release gate will judge the plan that ships.

The screen's feasibility is a point estimate (the p95 of a 0.1 s run): cheap, and right for ranking
thousands of plans. The plan that ships is then gated on an order-statistic upper bound of that
percentile (:func:`edgeopt.runtime.gate.latency_check`, one-sided at :data:`~edgeopt.runtime.gate.CONFIDENCE`),
so a finalist picked on its point p95 at the budget's edge fails to be confirmed about half the time
(resnet8: INCONCLUSIVE, the compile failed after 7 minutes). A finalist therefore counts as meeting
the latency budget only when the same check, on its re-measurement's samples, passes: :func:`bounded`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeopt.pipeline.record import TrialRecord

Remeasure = Callable[[TrialRecord], dict[str, Any]]
BOUND = "latency_bound_ms"  # a re-measurement's upper confidence bound on the budget's percentile


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


__all__ = ["BOUND", "DenseRef", "Remeasure", "bounded", "screened"]
