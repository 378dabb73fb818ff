"""The search-strategy contract and its registry (the built-in strategies: :mod:`edgeopt.search.strategies`).

A strategy turns an Optuna trial into a plan (layer -> format entry). The compile asks it, in order:

1. :meth:`SearchStrategy.prepare` — once, before the baseline is measured and before any trial, with
   the :class:`StrategyContext` (teacher, task, target, decomposable layers, the per-layer space, the
   caps of the budgets). Whatever it needs is built here (tables, ...). A budget that no plan can meet
   may be refused here by raising :class:`~edgeopt.errors.BudgetRefused` (nothing trained or shipped).
   The space may be empty (no layer to decompose): the compile then runs no trial.
2. :meth:`SearchStrategy.warm_start` — for a new study only: ``(label, Optuna params)`` pairs enqueued
   before the sampler's own trials (the label is kept in the trial's ``warm_start`` user attribute).
3. :meth:`SearchStrategy.plan` — in every trial (in every worker process), the trial's plan, sampled
   through ``trial.suggest_*`` so that the sampler learns from the results.
   :meth:`SearchStrategy.alternatives` — the plans a user would try first (:mod:`edgeopt.search.alternatives`),
   seeded into the study as labelled trials that compete with the search's own (unless ``--no-alternatives``).
4. :meth:`SearchStrategy.after_trial` — after every trial of this process (an Optuna callback).
5. :meth:`SearchStrategy.report` — once the plan has shipped: the strategy's sections of the report,
   by key (added to ``compile.json``, beside ``strategy``, its name), or None.

A strategy is chosen by name (``compile(search=NAME)``, ``--search NAME``) or by its config object
(:func:`make_strategy`), in the shape of torchao's ``quantize_(model, config)``: a frozen
:class:`StrategyConfig` subclass names its strategy, :func:`register_strategy` binds the two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from edgeopt._validate import fail


@dataclass(frozen=True)
class StrategyConfig:
    """A strategy's settings: subclass it (frozen, with defaults) and set ``strategy`` to the name."""

    strategy: ClassVar[str] = ""


@dataclass
class StrategyContext:
    """What a strategy is prepared from: the teacher (eval mode), the task, the target, the decomposable
    layers (``decomposable_layers``), their cost dense, the per-layer space (formats and rank ranges, the
    precisions), ``max_params`` (parameters the size budget allows; None: no size budget) and where the
    compile writes (``out``)."""

    teacher: Any
    task: Any
    target: Any
    layers: dict[str, Any]
    base_cost: Any
    space: Any
    max_params: float | None
    out: Any
    int8: bool | None = None  # per-layer int8 rungs: None where the target's CPU runs int8 well, False: fp32 only
    f1_tolerance: float | None = None  # selection's tie tolerance; None: no tiers (``--objective pareto``)


class SearchStrategy:
    """How trials become plans. Subclass it, set ``name`` and ``config_cls``, register it with
    :func:`register_strategy`; the defaults below do nothing, so a strategy overrides :meth:`plan` at least."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, config: StrategyConfig | None = None) -> None:
        self.config = config if config is not None else self.config_cls()
        self.ctx: StrategyContext | None = None

    def prepare(self, ctx: StrategyContext) -> None:
        """Build what the trials need (see the module's contract); may raise ``BudgetRefused``."""
        self.ctx = ctx

    def warm_start(self, fits_size: Callable[[dict[str, Any]], bool]) -> list[tuple[str, dict[str, Any]]]:
        """``(label, Optuna params)`` to enqueue first in a new study; ``fits_size(plan)``: whether a plan's
        file fits the size budget."""
        return []

    def alternatives(self) -> list[Any]:
        """The :class:`~edgeopt.search.alternatives.Alternative` s to seed (by default the dense model in int8:
        a strategy without tables knows no prune groups)."""
        from edgeopt.search.alternatives import ladder

        return ladder(None)

    def plan(self, trial: Any) -> dict[str, Any]:
        """The trial's plan: layer name -> plan entry (layers left out stay dense)."""
        raise NotImplementedError(f"{type(self).__name__}.plan")

    def after_trial(self, study: Any, trial: Any) -> None:
        """Called after each trial this process ran (Optuna's callback signature)."""

    def report(self, study: Any, shipped: Any) -> dict[str, Any] | None:
        """The strategy's sections of the report by key (``compile.json``), given the study and what
        shipped (``Shipped``); the keys of the compile's own state are not to be used."""
        return None


_REGISTRY: dict[str, type[SearchStrategy]] = {}


def register_strategy(cls: type[SearchStrategy]) -> type[SearchStrategy]:
    """Class decorator: ``cls`` is chosen by ``cls.name`` (and by its ``config_cls``)."""
    if not cls.name or cls.config_cls.strategy != cls.name:
        raise TypeError(f"{cls.__name__}: name and config_cls.strategy must be the same non-empty name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a search strategy named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def unregister_strategy(name: str) -> None:
    """Remove a strategy (for tests that register one of their own)."""
    _REGISTRY.pop(name, None)


class _Names:
    """The registered names, live: what ``--search`` and ``CompileConfig.search`` accept."""

    def __iter__(self) -> Iterator[str]:
        return iter(strategy_names())

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __repr__(self) -> str:
        return repr(strategy_names())


STRATEGY_NAMES = _Names()


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names, sorted (the same whichever module registered first)."""
    return tuple(sorted(_REGISTRY))


def make_strategy(spec: str | StrategyConfig, where: str = "compile()") -> SearchStrategy:
    """A fresh strategy from its name (default config) or its config object."""
    if isinstance(spec, StrategyConfig):
        cls = _REGISTRY.get(spec.strategy)
        if cls is None or not isinstance(spec, cls.config_cls):
            raise fail(where, "search", f"a registered strategy's config ({', '.join(strategy_names())})", spec)
        return cls(spec)
    if spec not in _REGISTRY:
        raise fail(where, "search", f"one of {', '.join(map(repr, strategy_names()))}", spec)
    return _REGISTRY[spec]()


__all__ = [
    "STRATEGY_NAMES",
    "SearchStrategy",
    "StrategyConfig",
    "StrategyContext",
    "make_strategy",
    "register_strategy",
    "strategy_names",
    "unregister_strategy",
]
