"""Search strategies: one config and one registered strategy per way of turning trials into plans.

Adding a strategy: write a module with a frozen :class:`StrategyConfig` subclass (``strategy = "name"``,
its settings as fields with defaults) and a :class:`SearchStrategy` subclass (``name``, ``config_cls``,
at least ``plan``; ``prepare``, ``warm_start``, ``after_trial``, ``report`` as needed; the contract is in
:mod:`edgeopt.search.strategy`) decorated with :func:`register_strategy`, and import it below. Nothing else changes:
``compile(search=NAME)`` and ``--search NAME`` find it by name (``STRATEGY_NAMES``), ``prepare``,
the objective and the loop ask it. ``tests/search/test_strategy_contract.py`` shows it with a strategy
defined only in the test.
"""

from edgeopt.search.strategy import (
    STRATEGY_NAMES,
    SearchStrategy,
    StrategyConfig,
    StrategyContext,
    make_strategy,
    register_strategy,
    strategy_names,
    unregister_strategy,
)

# isort: off
from edgeopt.search.allocation.strategy import AllocationConfig  # registered first: the default
from edgeopt.search.space import LayersConfig

# isort: on

__all__ = [
    "STRATEGY_NAMES",
    "AllocationConfig",
    "LayersConfig",
    "SearchStrategy",
    "StrategyConfig",
    "StrategyContext",
    "make_strategy",
    "register_strategy",
    "strategy_names",
    "unregister_strategy",
]
