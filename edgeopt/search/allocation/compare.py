"""The knapsack's two solvers measured side by side (:func:`compare_solvers`): the exact MILP and the
Lagrangian sweep of :mod:`.knapsack`, their objective (weighted sensitivity) and seconds on given tables.
"""

from __future__ import annotations

import time
from typing import Any

from edgeopt.search.allocation.knapsack import allocate, floor


def compare_solvers(tables: dict[str, Any], fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)) -> list[dict]:
    """Per tables (name -> ``Tables``) and latency cap (``fractions`` of the way from the floor to the dense
    graph), the sweep's and the MILP's weighted sensitivity and seconds; ``gap_pct``: how far the sweep
    is above the optimum."""
    rows = []
    for name, t in tables.items():
        lo, hi = floor(t).latency_ms, t.rest_ms + sum(c[0].latency_ms for c in t.layers.values())
        for f in fractions:
            cap = lo + f * max(0.0, hi - lo)
            t0 = time.perf_counter()
            heuristic = allocate(t, latency_ms=cap, solver="sweep")
            t1 = time.perf_counter()
            exact = allocate(t, latency_ms=cap, solver="milp").sensitivity
            t2 = time.perf_counter()
            gap = 100 * (heuristic.sensitivity - exact) / exact if exact > 0 else 0.0
            rows.append(
                {
                    "tables": name,
                    "fraction": f,
                    "cap_ms": round(cap, 5),
                    "sweep": round(heuristic.sensitivity, 6),
                    "milp": round(exact, 6),
                    "gap_pct": round(gap, 3),
                    "sweep_s": round(t1 - t0, 4),
                    "milp_s": round(t2 - t1, 4),
                }
            )
    return rows


__all__ = ["compare_solvers"]
