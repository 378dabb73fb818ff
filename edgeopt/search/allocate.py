"""The allocation of issue 9, item 2: one candidate of the per-layer tables per layer, least total
sensitivity under the latency and size budgets, and the floor (the fastest allocation plus the rest).

The solver (Lagrangian sweep, repair, local search) is :mod:`edgeopt.search.knapsack`; the search
over allocations (a few knobs per trial) is :mod:`edgeopt.search.knobs`.
"""

from __future__ import annotations

from edgeopt.search.knapsack import Allocation, Floor, Problem, allocate, floor

__all__ = ["Allocation", "Floor", "Problem", "allocate", "floor"]
