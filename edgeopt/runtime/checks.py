"""One gate check (:class:`Check`) and the verdicts: shared by ``gate`` (budgets) and ``compare``
(NEW against OLD). A leaf module: standard library only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        """The fields, with ``status`` (pass / fail / inconclusive) and ``statement`` (the line to print)."""
        return dict(asdict(self), status=self.status, statement=self.statement)

    @property
    def statement(self) -> str:
        """One line, true to the verdict: which figure cleared or crossed the budget (the bound that
        decided it), or, inconclusive, the interval around the budget; never "over budget" unless it is."""
        u = f" {self.unit}" if self.unit and self.unit != "x" else self.unit
        limit = f"{'limit' if self.unit == 'x' else 'budget'} {self.budget:.4g}{u}"
        exact = self.lower_bound == self.upper_bound == self.measured or (
            self.lower_bound is None and self.upper_bound is None
        )
        measured = f"{self.measured:.4g}{u}"
        if exact:
            rel = "<=" if self.passed else ">" if self.passed is False else "vs"
            head = f"{self.name}: {measured} {rel} {limit}"
        elif self.passed:
            head = f"{self.name}: upper bound {self.upper_bound:.4g}{u} <= {limit} (measured {measured})"
        elif self.passed is False:
            head = f"{self.name}: lower bound {self.lower_bound:.4g}{u} > {limit} (measured {measured})"
        else:
            lo = "-" if self.lower_bound is None else f"{self.lower_bound:.4g}"
            hi = "no upper bound" if self.upper_bound is None else f"{self.upper_bound:.4g}"
            head = f"{self.name}: not decided, measured {measured}, interval [{lo}, {hi}]{u} holds the {limit}"
        return f"{self.status.upper()} {head}" + (f"; {self.detail}" if self.detail and self.passed is not True else "")


def combine(checks: Iterable[Check]) -> str:
    """FAIL if any check failed, else INCONCLUSIVE if any is, else PASS (also for no checks)."""
    checks = list(checks)
    if any(c.passed is False for c in checks):
        return FAIL
    if any(c.passed is None for c in checks):
        return INCONCLUSIVE
    return PASS


__all__ = ["Check", "combine", "PASS", "FAIL", "INCONCLUSIVE", "VERDICT_ICON"]
