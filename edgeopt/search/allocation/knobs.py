"""The search over allocations: each trial samples a few knobs, and the allocation
of the per-layer tables under them is the trial's plan.

Knobs: ``fraction`` of the latency budget the table may spend (0.5-1.0), ``size_weight`` (how much
fewer parameters are worth against sensitivity) and a sensitivity multiplier per depth stage (2-3
stages of consecutive layers). Warm start: fractions 1.0, 0.85 and 0.7 with neutral knobs. The budget
the fractions are of is the latency budget less the 5 % headroom selection confirms a finalist with
(decision 0117): aimed at the budget itself, the search's best plans were the ones selection could not
confirm, and it went down the tiers (``plans_stable_under_load``, resnet8 at 785d1e8: two of five
compiles shipped trials 9.8 and 10.2 pt of val F1 under their best finalist). When the
table's floor is above half the budget, the fractions are squeezed onto [floor, budget]: on mobilenet
at 0.7x its dense p95 the floor is ~0.85 of the budget, and most fractions gave the fastest plan (rank
1 nearly everywhere), trained again and again as repeats. Spanning [floor, budget] on every model
instead (tried) put the caps of low-floor models nearer their budget: 20 of resnet8's 30 trials
were screened out, against 6 of 26 the run before, on a noisier host too.

The screens correct the table as the search goes (:func:`table_correction`): once a few allocations
have been measured whole, the budget is taken less the median amount by which they measured over
the table, so a table that errs by 15 % near the budget stops sending
trials over it, or leaving it unspent. An offset over the table takes at most half the headroom over the
floor: on digits-cnn the first six screens fell in a burst of host noise (+75 %), the offset pushed the
budget below the floor, and all 40 trials became the fastest plan, screened out. One under the table
counts in full, the floor with it (noise does not speed a run up; decision 0118): cnn1d's table put
its floor at the budget (1/3 of the dense p95) while the screens ran it 2.9 µs (20 %) faster, and
bounded by half the room, 62 of 68 trials kept every conv at its floor and varied the classifier.

Every trial is a distinct allocation (:meth:`AllocationSpace.sample`): many knobs map to one allocation
(the demo: 58 of 60 trials repeated two), so when a trial's knobs give one that the study already
tried, the MILP is solved again under the same knobs with each tried allocation excluded (a no-good
cut), and the trial takes the next-ranked distinct allocation instead. Only when every allocation
under the cap has been tried is it a repeat (which the search does not count as a trial).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from edgeopt.runtime.retake import REPRODUCE
from edgeopt.search.allocation.knapsack import Allocation, allocate, floor

log = logging.getLogger("edgeopt.compile")

WARM_FRACTIONS = (1.0, 0.85, 0.7)
# Not above 1: at 1.15 resnet8 had 15 of 30 trials screened out over budget, against 2 of 21 at 1.0.
FRACTION_MAX = 1.0
WARM_LABEL = "allocation"
FEEDBACK_MIN = 5  # screened allocations before the table is corrected by them
NOISE_SE = 2.0  # the median offset is shrunk toward 0 by this many of its standard errors
MAX_UNDER = 0.5  # screens under the table move the cap up by at most this share of the table's floor


@dataclass(frozen=True)
class TableFit:
    """What the screens say the table's latency really is near the budget: ``measured ≈ table +
    offset_ms`` (0 until :data:`FEEDBACK_MIN` screens); ``count``: the screens it was taken from."""

    offset_ms: float = 0.0
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"offset_ms": round(self.offset_ms, 5), "count": self.count}


def table_correction(study: Any) -> TableFit:
    """The median of measured - table latency over the study's screened fp32 allocations (repeats of a
    plan counted once), shrunk toward 0 by :data:`NOISE_SE` standard errors (from the MAD). How much of it
    counts is bounded where it is used (:meth:`AllocationSpace.cap`), by its sign.

    Shrunk, because a screen is a 0.1 s p95 on a shared host: the unshrunk median followed the host's
    noise as often as the table's error (vit: +17.6 µs after three screens, one of them a spike),
    while a table that is off on every plan (resnet8, -24 %) is off by far more than its standard error.

    An offset, not a slope: the table's slope is already fitted on whole graphs that span it (dense and
    the fastest plan), while the screens cluster just under the cap, where their noise hides any slope.
    Both were tried first: one ratio tightened
    cnn1d's cap by 25 % on a few noisy screens and collapsed its search onto the fastest plan; a
    Theil-Sen line on digits-cnn's screens (table 0.40-0.51 ms, measured 0.35-0.86 ms) hit its slope
    clip (0.25) and extrapolated the cap."""
    import numpy as np
    import optuna

    from edgeopt.pipeline.record import DType, TrialRecord

    pts = []
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states) if study is not None else []:
        table = (t.user_attrs.get("allocation") or {}).get("table_latency_ms")
        rec = TrialRecord.from_trial(t) if table else None
        if (
            rec is not None
            and rec.screen is not None
            and rec.repeat_of is None
            and rec.dtype is DType.FP32
            and rec.screen.latency_ms > 0
        ):
            pts.append((table, rec.screen.latency_ms))
    if len(pts) < FEEDBACK_MIN:
        return TableFit(count=len(pts))
    x, y = np.array(pts).T
    d = y - x  # measured over the table
    med = float(np.median(d))
    se = 1.2533 * 1.4826 * float(np.median(np.abs(d - med))) / np.sqrt(len(d))  # the median's, from the MAD
    return TableFit(float(np.sign(med) * max(0.0, abs(med) - NOISE_SE * se)), len(pts))


def tried_allocations(study: Any, number: int) -> list[dict[str, int]]:
    """The allocations (layer -> candidate index) of the study's other trials, running ones included (another
    worker's), failed ones too (they would fail again): what a new trial should not repeat."""
    if study is None:
        return []
    out: list[dict[str, int]] = []
    for t in study.get_trials(deepcopy=False):
        choice = (t.user_attrs.get("allocation") or {}).get("choice")
        if t.number != number and isinstance(choice, dict) and choice not in out:
            out.append(choice)
    return out


@dataclass
class AllocationSpace:
    """What a trial's knobs are turned into a plan with: the tables and the caps of the budget."""

    tables: Any
    latency_ms: float | None  # the latency budget (None: none, the fraction knob is then idle)
    max_params: float | None  # parameters the size budget allows (None: no size budget)
    fraction_max: float = FRACTION_MAX
    warm_fractions: tuple[float, ...] = WARM_FRACTIONS
    solver: str = "milp"  # the knapsack's solver (edgeopt.search.allocation.knapsack.SOLVERS)
    headroom: float = REPRODUCE  # what selection asks of a finalist's bound under the budget (decision 0117)

    @property
    def aim_ms(self) -> float | None:
        """The latency the allocations aim at: the budget less the headroom selection confirms a finalist
        with (:func:`edgeopt.pipeline.finalists.margin_ms`), so that the search's best plans are ones that can
        ship; the budget itself when that falls below the floor (no plan can have the headroom there)."""
        return None if self.latency_ms is None else self._aim(floor(self.tables).latency_ms)

    def _aim(self, lo: float) -> float:
        aim = self.latency_ms / (1.0 + self.headroom)
        return aim if aim > lo else self.latency_ms

    def cap(self, fraction: float, fit: TableFit | None = None) -> float | None:
        """The table latency an allocation may have: ``fraction`` (0.5-1) of the budget less selection's
        headroom (:attr:`aim_ms`), the range squeezed to [floor, that] when the floor is above half of it,
        and that less the screens' offset (``fit``, :func:`table_correction`).

        The offset is bounded by which way it points. Screens over the table (a positive offset) may be a
        burst of host noise, and take at most half the room over the floor. Screens under it cannot be
        noise (a busy host slows a run, it does not speed one up): the table reads slow, and the floor is
        taken as the screens measure it, the offset in full (at most :data:`MAX_UNDER` of the floor). So a
        budget the table puts at its floor, though the screens run the floor well under it, still leaves
        the search room above the floor: cnn1d at 1/3 of its dense p95 (decision 0118)."""
        if self.latency_ms is None:
            return None  # no budget: no cap
        budget, low = self._span(fit)
        return budget * (low + (fraction - 0.5) / 0.5 * (1.0 - low))

    def _span(self, fit: TableFit | None) -> tuple[float, float]:
        """The table latency the fractions are shares of, and the least share (:meth:`cap`)."""
        lo = floor(self.tables).latency_ms
        offset = (fit or TableFit()).offset_ms
        under = max(min(offset, 0.0), -MAX_UNDER * lo)  # screens under the table: it reads slow
        aim = self._aim(lo + under)  # against the floor as the screens measure it
        over = min(max(offset, 0.0), 0.5 * max(0.0, aim - lo))  # screens over it: maybe noise, bounded
        budget = aim - under - over
        return budget, max(0.5, min(lo / budget, 1.0))  # the least share of the budget above the floor

    def fraction_at(self, table_ms: float, fit: TableFit | None = None) -> float | None:
        """The fraction whose :meth:`cap` is ``table_ms`` (clipped to [0.5, ``fraction_max``]); None where the
        fraction moves no cap (no latency budget, or the floor at the budget)."""
        if self.latency_ms is None:
            return None
        budget, low = self._span(fit)
        if low >= 1.0:
            return None
        return min(self.fraction_max, max(0.5, 0.5 + 0.5 * (table_ms / budget - low) / (1.0 - low)))

    @property
    def stages(self) -> list[list[str]]:
        names = list(self.tables.layers)
        k = min(3, max(1, len(names)))
        size = math.ceil(len(names) / k)
        return [names[i : i + size] for i in range(0, len(names), size)]

    def knobs(self, trial: Any) -> dict[str, float]:
        out = {
            "fraction": trial.suggest_float("fraction", 0.5, self.fraction_max),
            "size_weight": trial.suggest_float("size_weight", 0.0, 1.0),
        }
        for i, _ in enumerate(self.stages):
            out[f"stage{i}"] = trial.suggest_float(f"stage{i}", 0.25, 4.0, log=True)
        return out

    def allocation(
        self, knobs: dict[str, float], fit: TableFit | None = None, exclude: list[dict[str, int]] | None = None
    ) -> Allocation:
        """The knobs' allocation under :meth:`cap`, other than those in ``exclude``."""
        weights = {n: knobs.get(f"stage{i}", 1.0) for i, names in enumerate(self.stages) for n in names}
        return allocate(
            self.tables,
            latency_ms=self.cap(knobs["fraction"], fit),
            max_params=self.max_params,
            weights=weights,
            size_weight=knobs.get("size_weight", 0.0),
            solver=self.solver,
            exclude=exclude or (),
        )

    def sample(self, trial: Any) -> dict[str, Any]:
        """The trial's plan: its knobs' allocation under the table as the screens so far correct it (the
        fastest allocation when none fits); when the study already tried it, the next-ranked allocation it
        has not (``perturbed`` in the trial's ``allocation`` attribute), if one fits under the cap."""
        knobs = self.knobs(trial)
        study = getattr(trial, "study", None)
        fit = table_correction(study)
        alloc = self.allocation(knobs, fit)
        tried = tried_allocations(study, trial.number)
        perturbed = False
        if alloc.choice in tried:
            fresh = self.allocation(knobs, fit, exclude=tried)
            if fresh.feasible:
                alloc, perturbed = fresh, True
        trial.set_user_attr(
            "allocation",
            {
                "table_latency_ms": round(alloc.latency_ms, 5),
                "params": alloc.params,
                "sensitivity": round(alloc.sensitivity, 5),
                "feasible": alloc.feasible,
                "fit": fit.to_dict(),
                "choice": alloc.choice,
                "perturbed": perturbed,
            },
        )
        return self.tables.plan_of(alloc.choice)

    def warm_params(self) -> list[tuple[str, dict[str, float]]]:
        neutral = {f"stage{i}": 1.0 for i, _ in enumerate(self.stages)}
        return [(f"{WARM_LABEL} {f}", {"fraction": f, "size_weight": 0.0, **neutral}) for f in self.warm_fractions]


__all__ = [
    "FEEDBACK_MIN",
    "MAX_UNDER",
    "WARM_FRACTIONS",
    "WARM_LABEL",
    "AllocationSpace",
    "table_correction",
    "tried_allocations",
    "TableFit",
]
