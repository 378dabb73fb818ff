"""The per-layer search space, and the ``layers`` search strategy that samples it: a format per
decomposable layer and its rank, declared side by side.

The formats come from the registry (``edgeopt.compiler.formats``): a layer is offered every
registered format it allows, in registration order; each handler says whether its format has a
rank, the largest rank worth searching on the layer (``max_search_rank``) and the plan entry of
a rank (``plan_entry``). Nothing here names a format but the default one, ``DEFAULT_FORMAT``
(dense), which every layer may keep. Ranks are ordered, so they are sampled with
``suggest_int(..., log=True)`` (never categorical indices).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeopt.compiler.formats import DEFAULT_FORMAT, FormatHandler, get_handler, registered_handlers
from edgeopt.search.strategy import SearchStrategy, StrategyConfig, register_strategy


def plan_key(plan: dict[str, Any]) -> str:
    """A canonical string for a plan, used to cache measurements by plan."""
    return json.dumps(plan, sort_keys=True, separators=(",", ":"))


@dataclass
class LayerChoice:
    name: str
    formats: tuple[str, ...]
    rank_bounds: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "formats": list(self.formats),
            "ranks": {k: list(v) for k, v in self.rank_bounds.items()},
        }


def _rank_limit(
    handler: FormatHandler,
    name: str,
    spec: Any,
    rank_limits: dict[str, int] | None,
    rank_caps: dict[tuple[str, str], int] | None,
) -> int:
    """The largest rank searched for ``handler``'s format on layer ``name`` (0: not offered)."""
    hi = handler.max_search_rank(spec)
    if rank_limits and handler.name in rank_limits:
        hi = min(hi, rank_limits[handler.name])
    if (
        rank_caps and (name, handler.name) in rank_caps
    ):  # e.g. the rank above which the layer alone busts the size budget
        hi = min(hi, rank_caps[(name, handler.name)])
    return hi


class SearchSpace:
    """Formats and rank ranges per layer, built from ``decomposable_layers(model)``.

    ``formats`` restricts the registered formats offered (all but the graph-level ones, such as
    ``prune``, by default: their latency is only known in the whole graph, which the tables measure;
    the default format is always offered); ``rank_limits`` lowers a format's ``search_rank_limit``; ``rank_caps`` bounds
    the rank per ``(layer, format)``.
    """

    def __init__(
        self,
        layers: dict[str, Any],
        *,
        formats: Iterable[str] | None = None,
        rank_limits: dict[str, int] | None = None,
        precisions: tuple[str, ...] = ("fp32",),
        rank_caps: dict[tuple[str, str], int] | None = None,
    ) -> None:
        wanted = None if formats is None else set(formats)
        self.choices: list[LayerChoice] = []
        for name, spec in layers.items():
            allowed = getattr(spec, "formats", None)
            bounds: dict[str, tuple[int, int]] = {}
            offered = [DEFAULT_FORMAT]
            for handler in registered_handlers():
                fmt = handler.name
                if (
                    fmt == DEFAULT_FORMAT
                    or (wanted is not None and fmt not in wanted)
                    or (allowed is not None and fmt not in allowed)
                    or (wanted is None and handler.graph_level)
                ):
                    continue
                if handler.has_rank:
                    hi = _rank_limit(handler, name, spec, rank_limits, rank_caps)
                    if hi < 1:
                        continue
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
            if fmt not in choice.rank_bounds:
                plan[choice.name] = get_handler(fmt).plan_entry()
                continue
            lo, hi = choice.rank_bounds[fmt]
            rank = trial.suggest_int(f"{choice.name}.{fmt}_rank", lo, hi, log=True)
            plan[choice.name] = get_handler(fmt).plan_entry(rank)
        return plan

    def uniform_plan(self, fmt: str, rank: int, only: set[str] | None = None) -> dict[str, Any]:
        """Every layer (of ``only``, if given) that offers ``fmt`` at ``min(rank, its cap)``; the others dense."""
        handler, default = get_handler(fmt), get_handler(DEFAULT_FORMAT).plan_entry()
        plan: dict[str, Any] = {}
        for c in self.choices:
            if fmt in c.rank_bounds and (only is None or c.name in only):
                plan[c.name] = handler.plan_entry(max(1, min(rank, c.rank_bounds[fmt][1])))
            else:
                plan[c.name] = dict(default)
        return plan

    def largest_uniform_plan(
        self, fmt: str, fits: Callable[[dict[str, Any]], bool], only: set[str] | None = None
    ) -> dict[str, Any] | None:
        """The uniform-rank plan of ``fmt`` (over ``only``, if given) with the largest rank for which
        ``fits(plan)`` holds."""
        his = [c.rank_bounds[fmt][1] for c in self.choices if fmt in c.rank_bounds and (only is None or c.name in only)]
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
            entry = plan.get(c.name, {"format": DEFAULT_FORMAT})
            fmt = entry["format"]
            params[f"{c.name}.format"] = fmt
            if fmt in c.rank_bounds:
                params[f"{c.name}.{fmt}_rank"] = int(get_handler(fmt).rank_of(entry))
        if len(self.precisions) > 1:
            params["precision"] = precision
        return params

    def sample_precision(self, trial: Any) -> str:
        if len(self.precisions) == 1:
            return self.precisions[0]
        return trial.suggest_categorical("precision", list(self.precisions))

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [c.to_dict() for c in self.choices], "precisions": list(self.precisions)}


def uniform_warm_start(
    space: SearchSpace, layers: dict[str, Any], fits: Callable[[dict[str, Any]], bool]
) -> list[tuple[str, dict[str, Any]]]:
    """The largest uniform-rank plans that ``fits`` accepts, as ``(label, Optuna params)``.

    What a user would try by hand, and the baselines edgeopt must beat; TPE then improves layer by
    layer from there. Also the uniform plan over the big layers only: squeezing a small layer (a
    10-class head) saves little and can cost F1 (rank below the class count)."""
    total = sum(int(getattr(spec, "params", 0)) for spec in layers.values()) or 1
    big = {name for name, spec in layers.items() if int(getattr(spec, "params", 0)) >= 0.1 * total}
    ranked = [h.name for h in registered_handlers() if h.has_rank]  # registry order: lowrank, tt, ...
    seen: list[dict[str, Any]] = []
    out: list[tuple[str, dict[str, Any]]] = []
    tries = [(fmt, None, f"uniform {fmt}") for fmt in ranked] + [(ranked[0], big, f"uniform {ranked[0]}, big layers")]
    for fmt, only, label in tries:
        plan = space.largest_uniform_plan(fmt, fits, only)
        if plan is not None and plan not in seen:
            seen.append(plan)
            out.append((label, space.trial_params(plan)))
    return out


@dataclass(frozen=True)
class LayersConfig(StrategyConfig):
    """``search="layers"``: Optuna samples a format and a rank per layer. ``uniform_warm_start``: a new
    study starts from the largest uniform-rank plans that fit the size budget."""

    strategy: ClassVar[str] = "layers"
    uniform_warm_start: bool = True


@register_strategy
class LayersStrategy(SearchStrategy):
    """The per-layer space searched as it is: each trial's plan is sampled layer by layer."""

    name = "layers"
    config_cls = LayersConfig

    def warm_start(self, fits_size: Callable[[dict[str, Any]], bool]) -> list[tuple[str, dict[str, Any]]]:
        if self.ctx is None or not self.config.uniform_warm_start:
            return []
        return uniform_warm_start(self.ctx.space, self.ctx.layers, fits_size)

    def plan(self, trial: Any) -> dict[str, Any]:
        return self.ctx.space.sample(trial)
