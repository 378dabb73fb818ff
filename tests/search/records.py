"""Trained trial records for selection's tests: a plan, a val score, a screen p50 (no study needed)."""

from __future__ import annotations

import numpy as np

from edgeopt.compiler.metrics import pack_right
from edgeopt.pipeline.record import Constraints, DType, ScreenResult, Status, TrialRecord


def trained(
    number: int, score: float | None, p50: float, *, right: np.ndarray | None = None, nodes: int = 4
) -> TrialRecord:
    """Trial ``number``, trained and within every budget: a pruned plan, its val ``score`` (from ``right``,
    which validation samples it got right, when given), screened at p50 ``p50`` ms (p95 1.2x)."""
    screen = ScreenResult(
        latency_ms=p50 * 1.2,
        latency_p50_ms=p50,
        latency_source="measured",
        peak_memory_mb=1.0,
        size_bytes=100,
        nodes=nodes,
    )
    return TrialRecord(
        number=number,
        status=Status.TRAINED,
        plan={"conv": {"format": "prune", "rank": number}},
        dtype=DType.FP32,
        screen=screen,
        val={"score": float(np.mean(right)) if score is None else score},
        val_right=None if right is None else pack_right(right),
        constraints=Constraints(),
        state="complete",
    )
