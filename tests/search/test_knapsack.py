"""The allocation (issue 9, item 2): optimal on tiny instances, budgets respected, infeasible said."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgeopt.search.knapsack import allocate, floor
from edgeopt.search.tables import Candidate, Tables


def _tables(rng: np.random.Generator, layers: int = 3, cands: int = 4) -> Tables:
    rows = {}
    for i in range(layers):
        lat = np.sort(rng.uniform(0.05, 1.0, cands))[::-1]  # dense first and slowest
        sens = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 2.0, cands - 1))])
        params = np.sort(rng.integers(10, 1000, cands))[::-1]
        rows[f"l{i}"] = [
            Candidate(
                f"c{j}",
                {} if j == 0 else {"format": "lowrank", "rank": j},
                int(params[j]),
                float(lat[j]),
                float(sens[j]),
            )
            for j in range(cands)
        ]
    return Tables(rows, dense_ms=0.0, rest_ms=0.1, build_s=0.0, fixed_params=5)


def _brute(t: Tables, lat_cap: float, par_cap: float) -> float:
    best = math.inf
    for combo in itertools.product(*[range(len(c)) for c in t.layers.values()]):
        cs = [t.layers[n][j] for n, j in zip(t.layers, combo, strict=True)]
        lat = t.rest_ms + sum(c.latency_ms for c in cs)
        par = t.fixed_params + sum(c.params for c in cs)
        if lat <= lat_cap and par <= par_cap:
            best = min(best, sum(c.sensitivity for c in cs))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    t = _tables(rng)
    dense = t.rest_ms + sum(c[0].latency_ms for c in t.layers.values())
    dense_par = t.fixed_params + sum(c[0].params for c in t.layers.values())
    lat_cap, par_cap = dense * rng.uniform(0.3, 0.9), dense_par * rng.uniform(0.3, 0.9)
    want = _brute(t, lat_cap, par_cap)
    got = allocate(t, latency_ms=lat_cap, max_params=par_cap)
    if math.isinf(want):
        assert not got.feasible
        return
    assert got.feasible
    assert got.latency_ms <= lat_cap + 1e-9 and got.params <= par_cap
    assert got.sensitivity == pytest.approx(want, abs=1e-9)


def test_budget_respected_on_a_larger_instance():
    t = _tables(np.random.default_rng(1), layers=30, cands=12)
    dense = t.rest_ms + sum(c[0].latency_ms for c in t.layers.values())
    for frac in (0.9, 0.6, 0.4):
        a = allocate(t, latency_ms=frac * dense)
        assert a.feasible and a.latency_ms <= frac * dense + 1e-9
    loose = allocate(t, latency_ms=0.9 * dense)
    tight = allocate(t, latency_ms=0.4 * dense)
    assert loose.sensitivity <= tight.sensitivity


def test_infeasible_detected_and_floor():
    t = _tables(np.random.default_rng(3))
    f = floor(t)
    assert f.latency_ms == pytest.approx(t.rest_ms + sum(min(c.latency_ms for c in cs) for cs in t.layers.values()))
    assert len(f.top) == 3 and f.top[0][1] >= f.top[1][1] >= f.top[2][1]
    assert not allocate(t, latency_ms=0.5 * f.latency_ms).feasible
    assert not allocate(t, max_params=f.min_params - 1).feasible
    assert allocate(t, latency_ms=f.latency_ms * 1.0001).feasible
    assert "ms" in f.describe()
