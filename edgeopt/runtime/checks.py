"""One gate check (:class:`Check`) and the verdicts: shared by ``gate`` (budgets) and ``compare``
(NEW against OLD). A leaf module: standard library only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
# How a verdict reads in Markdown summaries (gate and gate --against).
VERDICT_ICON = {PASS: "✅ PASS", FAIL: "❌ FAIL", INCONCLUSIVE: "⚠️ INCONCLUSIVE"}


@dataclass(frozen=True)
class Check:
    """One check. ``passed`` is None when the check is inconclusive. For a budget, ``budget`` is
    the budget; for a NEW/OLD ratio (unit ``x``) it is the limit 1 + tolerance."""

    name: str
    budget: float
    measured: float
    upper_bound: float | None
    lower_bound: float | None
    passed: bool | None
    unit: str = ""
    source: str = "measured"  # measured | predicted
    detail: str = ""

    @property
    def status(self) -> str:
        return PASS if self.passed else FAIL if self.passed is False else INCONCLUSIVE


def combine(checks: Iterable[Check]) -> str:
    """FAIL if any check failed, else INCONCLUSIVE if any is, else PASS (also for no checks)."""
    checks = list(checks)
    if any(c.passed is False for c in checks):
        return FAIL
    if any(c.passed is None for c in checks):
        return INCONCLUSIVE
    return PASS


__all__ = ["Check", "combine", "PASS", "FAIL", "INCONCLUSIVE", "VERDICT_ICON"]
