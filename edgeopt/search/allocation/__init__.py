"""The ``allocation`` search strategy and its parts: per-layer tables (:mod:`.tables`, built by
:mod:`.build` from :mod:`.latency`, :mod:`.additivity` and :mod:`.sensitivity`), the refusal of a
budget below their floor (:mod:`.refusal`), the multiple-choice knapsack (:mod:`.knapsack`; its two solvers
compared by :mod:`.compare`) and the knobs a trial samples (:mod:`.knobs`).
"""

from edgeopt.search.allocation.strategy import AllocationConfig, AllocationStrategy

__all__ = ["AllocationConfig", "AllocationStrategy"]
