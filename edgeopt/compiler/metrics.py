"""Classification metrics, all from scikit-learn, always reported together.

Accuracy alone hides what F1 shows (a model that ignores a rare class), so every evaluation
returns F1, precision, recall, accuracy and the confusion matrix; ``score`` is the one the
caller optimizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeopt.errors import InputError

__all__ = ["METRICS", "Metrics", "compute_metrics", "mcnemar", "metric_name", "pack_right", "paired_se", "unpack_right"]

MetricSpec = str | Callable[[np.ndarray, np.ndarray], float]

# metric name -> averaging used for F1 / precision / recall
METRICS: dict[str, str] = {
    "f1_macro": "macro",
    "f1_micro": "micro",
    "f1_weighted": "weighted",
    "f1": "binary",
    "accuracy": "macro",
}


@dataclass(frozen=True)
class Metrics:
    """One evaluation. ``score`` is the requested metric; ``average`` the F1/precision/recall averaging."""

    score: float
    f1: float
    precision: float
    recall: float
    accuracy: float
    confusion: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    metric: str = "f1_macro"
    average: str = "macro"
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["confusion"] = [list(r) for r in self.confusion]
        d["labels"] = list(self.labels)
        return d


def metric_name(metric: MetricSpec) -> str:
    if callable(metric):
        return getattr(metric, "__name__", "custom")
    if metric not in METRICS:
        raise InputError(
            f"The 'metric' parameter must be one of {sorted(METRICS)} or a callable(y_true, y_pred). "
            f"Got {metric!r} instead."
        )
    return metric


def compute_metrics(y_true: Any, y_pred: Any, metric: MetricSpec = "f1_macro") -> Metrics:
    """F1, precision, recall (averaged as ``metric`` says), accuracy and confusion matrix.

    ``metric``: "f1_macro" (default), "f1_micro", "f1_weighted", "f1" (binary, positive class 1),
    "accuracy", or a callable ``(y_true, y_pred) -> float`` (then F1 etc. are macro-averaged).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    name = metric_name(metric)
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise InputError(f"y_true and y_pred must have the same length. Got {y_true.size} and {y_pred.size} instead.")
    if y_true.size == 0:
        raise InputError("Cannot compute metrics on an empty set (0 samples).")
    average = "macro" if callable(metric) else METRICS[name]
    labels = np.union1d(y_true, y_pred)
    kwargs: dict[str, Any] = {"average": average, "zero_division": 0}
    if average == "binary":
        extra = set(labels.tolist()) - {0, 1}
        if extra:
            raise InputError(
                f"The 'f1' metric is binary (labels 0 and 1). Got labels {sorted(labels.tolist())} "
                f"instead; use 'f1_macro'."
            )
        kwargs["labels"] = [0, 1]
        kwargs["pos_label"] = 1
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, **kwargs)
    acc = float(accuracy_score(y_true, y_pred))
    if callable(metric):
        score = float(metric(y_true, y_pred))
    else:
        score = acc if name == "accuracy" else float(f)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return Metrics(
        score=score,
        f1=float(f),
        precision=float(p),
        recall=float(r),
        accuracy=acc,
        confusion=tuple(tuple(int(v) for v in row) for row in cm),
        labels=tuple(int(v) for v in labels),
        metric=name,
        average=average,
        n=int(y_true.size),
    )


def mcnemar(a_right: Any, b_right: Any) -> tuple[int, int, float]:
    """The paired test of two classifiers on the same samples (``a_right``, ``b_right``: per-sample
    correctness): the discordant samples (a right and b wrong, a wrong and b right) and the exact
    two-sided McNemar p-value (a binomial test on them, ``scipy.stats.binomtest``; 1.0 with none)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return n01, n10, (float(binomtest(n01, n01 + n10, 0.5).pvalue) if n01 + n10 else 1.0)


def paired_se(a_right: Any, b_right: Any) -> float:
    """The standard error of the difference in accuracy between two classifiers scored on the same samples
    (``a_right``, ``b_right``: per-sample correctness), from the per-sample differences (-1, 0, 1): small
    when the two predict alike, whatever the split's size. The scale of a score difference that the
    validation samples cannot tell from chance (selection's ties: :mod:`edgeopt.pipeline.ties`)."""
    a, b = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    if a.size == 0 or a.shape != b.shape:
        return 0.0
    d = a.astype(np.int8) - b.astype(np.int8)
    return float(np.sqrt(max(float(np.mean(d.astype(float) ** 2)) - float(np.mean(d)) ** 2, 0.0) / a.size))


def pack_right(right: Any) -> str:
    """Per-sample correctness as ``"<n>:<base64 of the packed bits>"`` (a trial's validation samples, 64
    characters for 359 of them: small enough for a study's user attributes)."""
    import base64

    bits = np.asarray(right, dtype=bool).ravel()
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode('ascii')}"


def unpack_right(text: Any) -> np.ndarray | None:
    """:func:`pack_right` undone (None for anything else: older studies store no correctness)."""
    import base64
    import binascii

    if not isinstance(text, str) or ":" not in text:
        return None
    n, _, data = text.partition(":")
    try:
        bits = np.unpackbits(np.frombuffer(base64.b64decode(data, validate=True), dtype=np.uint8))
        size = int(n)
    except (ValueError, binascii.Error):
        return None
    return bits[:size].astype(bool) if 0 <= size <= bits.size else None
