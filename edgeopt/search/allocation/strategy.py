"""The ``allocation`` search strategy: per-layer latency and sensitivity tables are built first, a
budget below the fastest plan is refused, and each trial's plan is the knapsack allocation of the
tables under a few knobs that Optuna samples (:mod:`.knobs`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from edgeopt.search.allocation.knapsack import SOLVERS
from edgeopt.search.allocation.knobs import FRACTION_MAX, WARM_FRACTIONS, WARM_LABEL
from edgeopt.search.strategy import SearchStrategy, StrategyConfig, StrategyContext, register_strategy


@dataclass(frozen=True)
class AllocationConfig(StrategyConfig):
    """``search="allocation"`` (the default). ``warm_fractions``: the shares of the latency budget a new
    study's first trials allocate; ``fraction_max``: the largest share a trial may sample; ``solver``: the
    knapsack's (``"milp"``, exact, or ``"sweep"``, the Lagrangian heuristic)."""

    strategy: ClassVar[str] = "allocation"
    warm_fractions: tuple[float, ...] = WARM_FRACTIONS
    fraction_max: float = FRACTION_MAX
    solver: str = "milp"

    def __post_init__(self) -> None:
        from edgeopt._validate import choice

        choice(self.solver, "AllocationConfig", "solver", SOLVERS)


@register_strategy
class AllocationStrategy(SearchStrategy):
    """Tables, then one knapsack allocation per trial."""

    name = "allocation"
    config_cls = AllocationConfig

    def __init__(self, config: AllocationConfig | None = None) -> None:
        super().__init__(config)
        self.space: Any = None  # the AllocationSpace, once prepared

    def prepare(self, ctx: StrategyContext) -> None:
        """The tables (a budget below their floor is refused before the sensitivities are computed:
        :class:`~edgeopt.errors.BudgetRefused`, exit code 1) and the allocation's caps."""
        from edgeopt.errors import BudgetRefused
        from edgeopt.search.allocation.build import build_tables
        from edgeopt.search.allocation.knobs import AllocationSpace
        from edgeopt.search.allocation.refusal import refusal, write_refusal

        super().prepare(ctx)
        if not ctx.space:
            return  # nothing to allocate: no tables

        def check(tables: Any) -> None:  # on the latencies alone, before the sensitivities are computed
            why = refusal(tables, ctx.target, ctx.max_params)
            if why is not None:
                write_refusal(ctx.out, why, tables, ctx.target)
                raise BudgetRefused(f"refused: {why}")

        tables = build_tables(
            ctx.teacher, ctx.task, ctx.target, ctx.out, ctx.layers, check=check, int8=getattr(ctx, "int8", None)
        )
        self.space = AllocationSpace(
            tables,
            ctx.target.budget.latency_ms,
            ctx.max_params,
            fraction_max=self.config.fraction_max,
            warm_fractions=self.config.warm_fractions,
            solver=self.config.solver,
        )

    def warm_start(self, fits_size: Callable[[dict[str, Any]], bool]) -> list[tuple[str, dict[str, Any]]]:
        return self.space.warm_params() if self.space is not None else []

    def alternatives(self) -> list[Any]:
        """Dense int8 and uniform pruning on the tables' prune rungs (one per dependency group), ± int8."""
        from edgeopt.search.alternatives import ladder

        return ladder(self.space.tables if self.space is not None else None)

    def plan(self, trial: Any) -> dict[str, Any]:
        """The allocation of the trial's knobs; a trial enqueued by another strategy's warm start (a study
        begun with ``search="layers"``), or any trial when there is nothing to allocate, is sampled from the
        per-layer space instead."""
        label = str(trial.user_attrs.get("warm_start", ""))
        if self.space is None or (label and not label.startswith(WARM_LABEL)):
            return self.ctx.space.sample(trial)
        return self.space.sample(trial)

    def after_trial(self, study: Any, trial: Any) -> None:
        """The next step down the best tier's speed, when one is due (:mod:`.descent`)."""
        from edgeopt.search.allocation import descent

        if self.space is not None and self.ctx.f1_tolerance is not None:
            descent.enqueue(study, self.space, self.ctx.f1_tolerance)

    def report(self, study: Any, shipped: Any) -> dict[str, Any] | None:
        """``tables``: the tables in the report (``Tables.report``: the shipped plan's latency is compared with the
        table when it is fp32, the only dtype the table measures), the screens' correction of the table at
        the end of the search, and the layers no plan may touch."""
        from edgeopt.search.allocation.knobs import table_correction

        if self.space is None:
            return {"tables": None}  # not prepared: the model has no layer to decompose
        latency_at = getattr(shipped.measured.bench, "latency_at", None)
        pct = float(self.ctx.target.budget.latency_percentile or 95)
        measured = float(latency_at(pct)) if latency_at is not None and shipped.dtype.value == "fp32" else None
        out = self.space.tables.report(shipped.plan, measured)
        out["screens"] = table_correction(study).to_dict()
        out["left_alone"] = self._left_alone()
        return {"tables": out}

    def _left_alone(self) -> list[dict[str, Any]]:
        """The layers with weights no plan may touch, grouped by the reason (depthwise convs, norms, ...)."""
        from edgeopt.compiler.decompose import left_alone

        groups: dict[str, list[str]] = {}
        for name, why in left_alone(self.ctx.teacher, self.ctx.task.example_input).items():
            groups.setdefault(re.sub(r" \(groups=\d+\)", "", why), []).append(name)  # one line for all depthwise
        return [{"reason": why, "count": len(names), "layers": names[:3]} for why, names in groups.items()]


__all__ = ["AllocationConfig", "AllocationStrategy"]
