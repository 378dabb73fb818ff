"""The per-layer search space: a format per decomposable layer and its rank, declared side by side.

Ranks are ordered, so they are sampled with ``suggest_int(..., log=True)`` (never categorical
indices), bounded by the rank above which the format stops saving anything for that layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# A TT layer with bonds above this loses to dense on CPUs (every core adds nodes and the
# contraction becomes compute-bound), so the search does not spend trials there.
DEFAULT_MAX_TT_RANK = 32
DEFAULT_MAX_LOWRANK = 256


def plan_key(plan: dict[str, Any]) -> str:
    """A canonical string for a plan, used to cache measurements by plan."""
    return json.dumps(plan, sort_keys=True, separators=(",", ":"))


def _max_rank(spec: Any, fmt: str) -> int:
    """The largest rank worth trying for ``fmt`` on the layer ``spec`` describes (0: not offered)."""
    caps = getattr(spec, "max_rank", None) or getattr(spec, "max_ranks", None) or {}
    if isinstance(caps, dict):
        value = caps.get(fmt, 0)
    else:  # a single number for every format
        value = caps
    return int(value or 0)


@dataclass
class LayerChoice:
    name: str
    formats: tuple[str, ...]
    rank_bounds: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "formats": list(self.formats), "ranks": {k: list(v) for k, v in self.rank_bounds.items()}}


class SearchSpace:
    """Formats and rank ranges per layer, built from ``decomposable_layers(model)``."""

    def __init__(
        self,
        layers: dict[str, Any],
        *,
        formats: tuple[str, ...] = ("dense", "lowrank", "tt"),
        max_tt_rank: int = DEFAULT_MAX_TT_RANK,
        max_lowrank: int = DEFAULT_MAX_LOWRANK,
        precisions: tuple[str, ...] = ("fp32",),
        rank_caps: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.choices: list[LayerChoice] = []
        for name, spec in layers.items():
            allowed = tuple(getattr(spec, "formats", ("dense", "lowrank", "tt")))
            bounds: dict[str, tuple[int, int]] = {}
            offered = ["dense"]
            for fmt in ("lowrank", "tt"):
                if fmt not in formats or fmt not in allowed:
                    continue
                hi = _max_rank(spec, fmt)
                hi = min(hi, max_tt_rank if fmt == "tt" else max_lowrank)
                if rank_caps and (name, fmt) in rank_caps:  # e.g. the rank above which the layer alone busts the size budget
                    hi = min(hi, rank_caps[(name, fmt)])
                if hi >= 1:
                    bounds[fmt] = (1, hi)
                    offered.append(fmt)
            if len(offered) > 1:
                self.choices.append(LayerChoice(name, tuple(offered), bounds))
        self.precisions = tuple(precisions)

    def __bool__(self) -> bool:
        return bool(self.choices)

    def sample(self, trial: Any) -> dict[str, Any]:
        """One plan from an Optuna trial (parameters named ``<layer>.format``, ``<layer>.<format>_rank``)."""
        plan: dict[str, Any] = {}
        for choice in self.choices:
            fmt = trial.suggest_categorical(f"{choice.name}.format", list(choice.formats))
            if fmt == "dense":
                plan[choice.name] = {"format": "dense"}
                continue
            lo, hi = choice.rank_bounds[fmt]
            rank = trial.suggest_int(f"{choice.name}.{fmt}_rank", lo, hi, log=True)
            plan[choice.name] = {"format": "lowrank", "rank": rank} if fmt == "lowrank" else {"format": "tt", "ranks": rank}
        return plan

    def uniform_plan(self, fmt: str, rank: int, only: set[str] | None = None) -> dict[str, Any]:
        """Every layer (of ``only``, if given) that offers ``fmt`` at ``min(rank, its cap)``; the others dense."""
        plan: dict[str, Any] = {}
        for c in self.choices:
            if fmt in c.formats and (only is None or c.name in only):
                r = max(1, min(rank, c.rank_bounds[fmt][1]))
                plan[c.name] = {"format": "lowrank", "rank": r} if fmt == "lowrank" else {"format": "tt", "ranks": r}
            else:
                plan[c.name] = {"format": "dense"}
        return plan

    def largest_uniform_plan(self, fmt: str, fits: Any, only: set[str] | None = None) -> dict[str, Any] | None:
        """The uniform-rank plan of ``fmt`` (over ``only``, if given) with the largest rank for which
        ``fits(plan)`` holds."""
        his = [c.rank_bounds[fmt][1] for c in self.choices if fmt in c.formats and (only is None or c.name in only)]
        if not his:
            return None
        lo, hi = 1, max(his)
        if not fits(self.uniform_plan(fmt, lo, only)):
            return None
        while lo < hi:  # fits() is monotone in the rank: more rank, more parameters
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(self.uniform_plan(fmt, mid, only)) else (lo, mid - 1)
        return self.uniform_plan(fmt, lo, only)

    def trial_params(self, plan: dict[str, Any], precision: str = "fp32") -> dict[str, Any]:
        """The Optuna parameters that make ``sample`` return ``plan`` (for ``study.enqueue_trial``)."""
        params: dict[str, Any] = {}
        for c in self.choices:
            entry = plan.get(c.name, {"format": "dense"})
            fmt = entry["format"]
            params[f"{c.name}.format"] = fmt
            if fmt != "dense":
                params[f"{c.name}.{fmt}_rank"] = int(entry.get("rank", entry.get("ranks")))
        if len(self.precisions) > 1:
            params["precision"] = precision
        return params

    def sample_precision(self, trial: Any) -> str:
        if len(self.precisions) == 1:
            return self.precisions[0]
        return trial.suggest_categorical("precision", list(self.precisions))

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [c.to_dict() for c in self.choices], "precisions": list(self.precisions)}
