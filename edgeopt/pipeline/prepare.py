"""What the search starts from: the teacher's layers and cost, rank caps from the size budget, the
search space, and the baseline (the input model exported, verified and measured like any artifact).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt._version import __version__
from edgeopt.pipeline.config import PROVENANCE_BYTES, CompileConfig
from edgeopt.pipeline.record import MIB
from edgeopt.pipeline.ship import Measured, export_verified, measure_artifact

log = logging.getLogger("edgeopt.compile")


@dataclass
class SearchInputs:
    """Everything the objective, the selection and the shipping read about the starting point."""

    task: Any
    target: Any
    teacher: Any
    layers: dict[str, Any]
    base_cost: Any
    space: Any
    baseline: Measured
    baseline_path: Path
    strategy: Any = None  # the SearchStrategy (edgeopt.search.strategies), prepared by prepare()
    implicit_floor: dict[str, Any] | None = None  # the quality floor set from the input model (no min_f1 given)

    @property
    def latency_scale(self) -> float:
        """What the objective's tie-break measures latency against: the budget, else the baseline's p50."""
        return float(self.target.budget.latency_ms or self.baseline.bench.latency_ms["p50"])

    @property
    def size_scale(self) -> float:
        """What the tie-break measures size against: the budget, else the baseline file's size."""
        size_mb = self.target.budget.model_size_mb
        return float(size_mb * MIB if size_mb else self.baseline_path.stat().st_size)

    def fits_size(self, plan: dict[str, Any]) -> bool:
        """Whether ``plan``'s file (weights, plus the graph and provenance measured on the baseline) fits
        the size budget (without one: an eighth of the dense weights)."""
        from edgeopt.compiler.decompose import plan_cost

        overhead = max(0, self.baseline_path.stat().st_size - self.base_cost.size_bytes) + PROVENANCE_BYTES
        size = plan_cost(self.teacher, plan, self.task.example_input).size_bytes + overhead
        size_mb = self.target.budget.model_size_mb
        return size <= (size_mb * MIB if size_mb else self.base_cost.size_bytes / 8)


def rank_caps(
    teacher: Any, task: Any, layers: dict[str, Any], target: Any, base_cost: Any, *, int8: bool
) -> dict[tuple[str, str], int]:
    """Per (layer, format): the largest rank at which that layer alone still fits the size budget."""
    if not target.budget.model_size_mb:
        return {}
    bytes_per_param = 1 if int8 else 4
    fixed = base_cost.params - sum(int(getattr(spec, "params", 0)) for spec in layers.values())
    max_params = target.budget.model_size_mb * MIB / bytes_per_param - fixed
    from edgeopt.compiler.formats import get_handler

    caps: dict[tuple[str, str], int] = {}
    for name, spec in layers.items():
        for fmt, hi in (getattr(spec, "max_rank", None) or {}).items():
            if hi and get_handler(fmt).has_rank:
                caps[(name, fmt)] = _largest_rank_within(teacher, task, name, fmt, int(hi), max_params)
    return caps


def _largest_rank_within(teacher: Any, task: Any, name: str, fmt: str, hi: int, max_params: float) -> int:
    """Bisection on the rank (parameters grow with it); 0 when even rank 1 is too big."""
    from edgeopt.compiler.decompose import plan_cost
    from edgeopt.compiler.formats import get_handler

    def layer_params(r: int) -> int:
        entry = get_handler(fmt).plan_entry(r)
        return int(plan_cost(teacher, {name: entry}, task.example_input).layers[name].params)

    lo, top = 1, hi
    if layer_params(lo) > max_params:
        return 0
    while lo < top:
        mid = (lo + top + 1) // 2
        lo, top = (mid, top) if layer_params(mid) <= max_params else (lo, mid - 1)
    return lo


def measure_baseline(teacher: Any, task: Any, target: Any, out: Path, config: CompileConfig) -> Measured:
    """The input model exported the same way as the artifact, verified, scored and measured first."""
    meta = {
        "edgeopt.version": __version__,
        "edgeopt.role": "baseline",
        "edgeopt.target": target.name,
        "edgeopt.task": task.name,
    }
    path = out / "baseline.onnx"
    export_verified(teacher, task, path, meta)
    log.info("baseline: benchmarking %s on %s", path.name, target.name)
    return measure_artifact(path, task, target, bench_kwargs=config.artifact_bench())


def prepare(task: Any, target: Any, config: CompileConfig) -> SearchInputs:
    """The search's inputs; the strategy is prepared (a budget it refuses raises here), then the baseline
    is measured, before any trial."""
    from edgeopt.compiler.decompose import decomposable_layers, plan_cost
    from edgeopt.search.space import SearchSpace
    from edgeopt.search.strategies import StrategyContext, make_strategy

    strategy = make_strategy(config.search)
    if config.int8:
        log.warning("--int8 is deprecated: int8 is now chosen per layer by default (--fp32 keeps every layer fp32)")
    teacher = task.model.eval()
    layers = decomposable_layers(teacher, task.example_input)
    base_cost = plan_cost(teacher, {}, task.example_input)
    caps = rank_caps(teacher, task, layers, target, base_cost, int8=False)
    space = SearchSpace(layers, precisions=("fp32",), rank_caps=caps)
    if not space:
        log.warning("the model has no layer that can be decomposed: it is benchmarked and gated as it is")
    max_params = params_cap(target, base_cost, False)  # fp32 bytes: an int8 layer only leaves room
    int8 = False if config.fp32 else None  # None: per-layer int8 where the target runs it well
    tolerance = None if config.objective == "pareto" else config.f1_tolerance  # pareto: no tiers to walk down
    ctx = StrategyContext(teacher, task, target, layers, base_cost, space, max_params, config.out, int8, tolerance)
    strategy.prepare(ctx)
    baseline = measure_baseline(teacher, task, target, config.out, config)
    return SearchInputs(
        task,
        target,
        teacher,
        layers,
        base_cost,
        space,
        baseline,
        config.out / "baseline.onnx",
        strategy=strategy,
        implicit_floor=implicit_floor(target, baseline, config.max_quality_drop),
    )


def implicit_floor(target: Any, baseline: Measured, max_drop: float | None) -> dict[str, Any] | None:
    """The artifact's quality floor when the profile has no ``min_f1``: the input model's score less
    ``max_drop`` on each split (``scores``), checked on the shipped artifact only. Trials are not held
    to it: after their few epochs most students are below what the final fine-tune reaches (resnet8
    at 3 epochs a trial: 0 of 22 within 5 pt of the teacher, so nothing would have shipped)."""
    scores = {split: (baseline.metrics.get(split) or {}).get("score") for split in ("val", "test")}
    if target.budget.min_f1 is not None or max_drop is None or scores["val"] is None:
        return None
    return {"max_drop": max_drop, "scores": scores}


def params_cap(target: Any, base_cost: Any, int8: bool, overhead_bytes: int = 0) -> float | None:
    """Parameters the size budget allows (graph overhead, buffers and provenance taken out)."""
    size_mb = target.budget.model_size_mb
    if not size_mb:
        return None
    buffers = max(0, int(base_cost.size_bytes) - 4 * int(base_cost.params))
    return (size_mb * MIB - buffers - overhead_bytes - PROVENANCE_BYTES) / (1 if int8 else 4)


__all__ = ["SearchInputs", "measure_baseline", "params_cap", "prepare", "rank_caps"]
