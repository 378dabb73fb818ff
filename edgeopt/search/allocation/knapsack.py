"""The knapsack behind an allocation: one candidate of the per-layer tables for each layer, minimizing the total
(weighted) sensitivity under a latency cap and a parameter cap.

A multiple-choice knapsack with two resources, solved exactly as a mixed-integer program
(:func:`solve_milp`: ``scipy.optimize.milp``, HiGHS; one binary per layer and candidate, one per
layer; milliseconds for tens of layers). The first solver, kept as the tests' oracle and as
``solver="sweep"``: a Lagrangian sweep (each layer's candidate
minimizing ``w * sensitivity + size_weight * params/scale + lam * latency/cap + mu * params/cap``,
over a grid of multipliers; the best feasible kept), then a repair when none is feasible and a local
search (single, then pairwise, candidate changes) that improves it while it stays feasible. Instant
for tens of layers. :func:`floor` is the fastest allocation plus the parts that cannot be decomposed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SOLVERS = ("milp", "sweep")
TIME_LIMIT_S = 10.0  # HiGHS's limit per solve (tens of layers take milliseconds)
GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1e4, 41)])
PAIR_MOVES_UP_TO = 64  # layers x candidates up to which pairwise moves are tried too


@dataclass
class Allocation:
    """Layer -> candidate index; the table's latency (rest included), params, weighted sensitivity."""

    choice: dict[str, int]
    latency_ms: float
    params: int
    sensitivity: float
    feasible: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class Floor:
    """The fastest allocation's latency with the rest, its top contributors, and the smallest size."""

    latency_ms: float
    top: list[tuple[str, float]]
    min_params: int  # the smallest allocation's parameters, fixed ones included

    def describe(self) -> str:
        parts = ", ".join(f"{name if name.startswith('(') else repr(name)} {ms:.3g} ms" for name, ms in self.top)
        return f"the fastest plan takes {self.latency_ms:.3f} ms on the target (largest: {parts})"


class Problem:
    """The tables as arrays: per layer, candidates' latency, params and (weighted) cost."""

    def __init__(self, tables: Any, weights: dict[str, float] | None = None, size_weight: float = 0.0) -> None:
        self.names = list(tables.layers)
        self.rest = float(tables.rest_ms)
        self.fixed = int(tables.fixed_params)
        cands = [tables.layers[n] for n in self.names]
        self.lat = [np.array([c.latency_ms for c in cs], dtype=float) for cs in cands]
        self.par = [np.array([c.params for c in cs], dtype=float) for cs in cands]
        scale = max(1.0, sum(float(p.max()) for p in self.par))
        w = weights or {}
        self.cost = [
            w.get(n, 1.0) * np.array([c.sensitivity for c in cs], dtype=float) + size_weight * p / scale
            for n, cs, p in zip(self.names, cands, self.par, strict=True)
        ]

    def totals(self, idx: list[int]) -> tuple[float, float, float]:
        lat = self.rest + sum(float(a[i]) for a, i in zip(self.lat, idx, strict=True))
        par = self.fixed + sum(float(a[i]) for a, i in zip(self.par, idx, strict=True))
        return lat, par, sum(float(a[i]) for a, i in zip(self.cost, idx, strict=True))


def _fits(p: Problem, idx: list[int], lat_cap: float, par_cap: float) -> bool:
    lat, par, _ = p.totals(idx)
    return lat <= lat_cap + 1e-12 and par <= par_cap + 1e-9


def _sweep(p: Problem, lat_cap: float, par_cap: float) -> list[int] | None:
    """The best feasible allocation over the grid of multipliers (None when none is feasible)."""
    best, best_cost = None, math.inf
    lat_n = max(lat_cap - p.rest, 1e-9) if math.isfinite(lat_cap) else 1.0
    par_n = max(par_cap - p.fixed, 1.0) if math.isfinite(par_cap) else 1.0
    mus = GRID if math.isfinite(par_cap) else [0.0]
    lams = GRID if math.isfinite(lat_cap) else [0.0]
    for lam, mu in itertools.product(lams, mus):
        idx = [
            int(np.argmin(c + lam * la / lat_n + mu * pa / par_n + 1e-12 * la))
            for c, la, pa in zip(p.cost, p.lat, p.par, strict=True)
        ]
        if _fits(p, idx, lat_cap, par_cap):
            cost = p.totals(idx)[2]
            if cost < best_cost:
                best, best_cost = idx, cost
    return best


def _repair(p: Problem, lat_cap: float, par_cap: float) -> list[int] | None:
    """A feasible start when the sweep found none: the cheapest in resources, made better greedily."""
    lat_n = max(lat_cap - p.rest, 1e-9) if math.isfinite(lat_cap) else math.inf
    par_n = max(par_cap - p.fixed, 1.0) if math.isfinite(par_cap) else math.inf
    for wl, wp in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0)):
        idx = [
            int(np.argmin(wl * la / lat_n + wp * pa / par_n + 1e-9 * c))
            for la, pa, c in zip(p.lat, p.par, p.cost, strict=True)
        ]
        if _fits(p, idx, lat_cap, par_cap):
            return idx
    return None


def _improve(p: Problem, idx: list[int], lat_cap: float, par_cap: float) -> list[int]:
    """Local search: the best single (then pairwise) change that lowers the cost and stays feasible."""
    pairs = sum(len(c) for c in p.cost) <= PAIR_MOVES_UP_TO
    while True:
        cost = p.totals(idx)[2]
        moves = [[(i, j)] for i in range(len(idx)) for j in range(len(p.cost[i])) if j != idx[i]]
        if pairs:
            moves += [[a[0], b[0]] for a, b in itertools.combinations(moves, 2) if a[0][0] != b[0][0]]
        best, best_cost = None, cost - 1e-12
        for move in moves:
            trial = list(idx)
            for i, j in move:
                trial[i] = j
            c = p.totals(trial)[2]
            if c < best_cost and _fits(p, trial, lat_cap, par_cap):
                best, best_cost = trial, c
        if best is None:
            return idx
        idx = best


def solve_milp(p: Problem, lat_cap: float, par_cap: float, exclude: Sequence[Sequence[int]] = ()) -> list[int] | None:
    """The candidate index per layer of least total cost under both caps, other than the index lists in
    ``exclude`` (None: none is feasible). Each excluded allocation is a no-good cut: its chosen binaries
    may not all be 1, so the solver returns the next-ranked distinct allocation."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    sizes = [len(c) for c in p.cost]
    if not sizes:
        return []
    n, starts = sum(sizes), np.cumsum([0, *sizes])
    one = np.zeros((len(sizes), n))
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
        one[i, a:b] = 1.0
    lat = np.concatenate(p.lat)
    rows = [LinearConstraint(one, 1.0, 1.0)]
    if math.isfinite(lat_cap):
        rows.append(LinearConstraint(lat[None, :], -np.inf, lat_cap - p.rest + 1e-12))
    if math.isfinite(par_cap):
        rows.append(LinearConstraint(np.concatenate(p.par)[None, :], -np.inf, par_cap - p.fixed + 1e-9))
    if exclude:
        cuts = np.zeros((len(exclude), n))
        for row, idx in zip(cuts, exclude):
            row[starts[:-1] + np.asarray(idx)] = 1.0
        rows.append(LinearConstraint(cuts, -np.inf, len(sizes) - 1))
    cost = np.concatenate(p.cost)
    # Costs scaled to ~1e6: HiGHS stops at an absolute gap of 1e-6, which KL costs of 1e-4 would be within.
    scaled = cost * (1e6 / max(1e-12, float(np.abs(cost).max())))
    tie = 1e-3 * lat / max(1e-12, float(np.abs(lat).max()))  # among equal costs, the faster candidate
    res = milp(
        scaled + tie,
        constraints=rows,
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"time_limit": TIME_LIMIT_S, "mip_rel_gap": 1e-9},
    )
    if res.x is None:
        return None
    x = np.round(res.x).astype(int)
    return [int(np.argmax(x[a:b])) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def allocate(
    tables: Any,
    *,
    latency_ms: float | None = None,
    max_params: float | None = None,
    weights: dict[str, float] | None = None,
    size_weight: float = 0.0,
    solver: str = "milp",
    exclude: Sequence[Mapping[str, int]] = (),
) -> Allocation:
    """The allocation of least (weighted) sensitivity with the table's latency (rest included)
    ``<= latency_ms`` and total parameters ``<= max_params`` (None: no cap), by ``solver``: ``"milp"``
    (exact) or ``"sweep"`` (Lagrangian, then local search). Infeasible caps give the fastest allocation
    with ``feasible=False``. ``exclude``: allocations (layer -> candidate index) the MILP may not return
    (no-good cuts; the sweep ignores them): with all those under the caps excluded, none is feasible."""
    p = Problem(tables, weights, size_weight)
    lat_cap = math.inf if latency_ms is None else float(latency_ms)
    par_cap = math.inf if max_params is None else float(max_params)
    cuts = [[int(c[n]) for n in p.names] for c in exclude if set(c) == set(p.names)]
    idx = solve_milp(p, lat_cap, par_cap, cuts) if solver == "milp" else None
    if idx is None and cuts:
        return _infeasible(p)
    if idx is None:  # the sweep: the solver asked for, or HiGHS out of time without a feasible point
        idx = _sweep(p, lat_cap, par_cap) or _repair(p, lat_cap, par_cap)
        idx = _improve(p, idx, lat_cap, par_cap) if idx is not None and p.names else idx
    if idx is None:
        return _infeasible(p)
    lat, par, cost = p.totals(idx)
    return Allocation(dict(zip(p.names, idx, strict=True)), lat, int(par), cost, True)


def _infeasible(p: Problem) -> Allocation:
    """The fastest allocation, marked infeasible."""
    idx = [int(np.argmin(la)) for la in p.lat]
    lat, par, cost = p.totals(idx)
    return Allocation(dict(zip(p.names, idx, strict=True)), lat, int(par), cost, False)


def floor(tables: Any) -> Floor:
    """The fastest allocation plus the rest, the three largest parts of it, and the smallest size."""
    parts = {name: min(c.latency_ms for c in cands) for name, cands in tables.layers.items()}
    parts["(not decomposable: the rest of the graph)"] = float(tables.rest_ms)
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    min_params = int(tables.fixed_params) + sum(min(c.params for c in cands) for cands in tables.layers.values())
    return Floor(sum(parts.values()), top, min_params)


__all__ = ["SOLVERS", "Allocation", "Floor", "Problem", "allocate", "floor", "solve_milp"]
