"""Which plans selection calls equally good: a tie is judged on the validation samples, paired.

Selection ships the fastest re-measured plan of the best tier (:mod:`edgeopt.pipeline.select`): the best
feasible plan and those tied with it. A fixed tolerance (``f1_tolerance``, 0.5 pt) is two samples of a
359-sample validation split, well inside what such a split can tell apart: resnet8's five compiles with
one core busy (plans_stable_under_load, fac441e) shipped uniform keep 1/4 four times, at val F1 0.9717 and
test 0.9890, and once a searched plan 14 % slower whose val F1 read 0.88 pt higher and whose test F1 read
4.4 pt lower. Which tier a plan fell in was the validation split's noise (decision 0120).

So a plan is tied with the tier's best when the best's lead is within the tolerance **or** within one
standard error of the paired difference between the two on the validation samples
(:func:`~edgeopt.compiler.metrics.paired_se`, from which samples each got right): the one-standard-error
rule of model selection (Hastie, Tibshirani and Friedman, *The Elements of Statistical Learning*, 7.10:
of the models within one standard error of the best, the simplest; here, the fastest). The standard error
is that of the accuracy difference, taken as the scale of the task's score difference (macro F1 moves with
accuracy on these splits; it is a scale, not a test). A plan without stored correctness (the dense input
model, a study written before this) is tied within the tolerance only, as before.
"""

from __future__ import annotations

from typing import Any

from edgeopt.compiler.metrics import paired_se, unpack_right
from edgeopt.pipeline.record import TrialRecord

# Two were tried (decision 0123): resnet8 shipped a plan 1.1 pt under its best (test 0.975), and the fastest
# of the wider tier moved more between compiles, 0.072 to 0.103 ms in two.
SE_RULE = 1.0  # standard errors of the paired difference within which two plans are tied


def tie_band(top: TrialRecord, other: TrialRecord, tolerance: float) -> float:
    """How far ``other``'s score may fall below ``top``'s and still tie: ``tolerance``, or :data:`SE_RULE`
    standard errors of their paired difference on the validation samples when both stored which they got
    right, whichever is wider."""
    a, b = unpack_right(top.val_right), unpack_right(other.val_right)
    if a is None or b is None or a.shape != b.shape:
        return float(tolerance)
    return max(float(tolerance), SE_RULE * paired_se(a, b))


def tier_of(ranked: list[TrialRecord], tolerance: float) -> list[TrialRecord]:
    """The best of ``ranked`` (best validation score first) and the plans tied with it (:func:`tie_band`)."""
    top = ranked[0]
    return [r for r in ranked if r is top or r.score >= top.score - tie_band(top, r, tolerance)]


def tagged(rows: list[dict[str, Any]], tier: list[TrialRecord], tolerance: float, index: int) -> list[dict[str, Any]]:
    """Finalist ``rows`` of ``tier`` (the ``index``-th tried, from 0) with what tied them, for the report:
    ``tier`` (from 1), the trial it was tied with (``tier_best``) and the band in pt (``tie_band_pt``)."""
    top, by_number = tier[0], {r.number: r for r in tier}
    for row in rows:
        record = by_number.get(row["trial"])
        band = tie_band(top, record, tolerance) if record is not None else tolerance
        row.update(tier=index + 1, tier_best=top.number, tie_band_pt=round(100 * band, 2))
    return rows


__all__ = ["SE_RULE", "tagged", "tie_band", "tier_of"]
