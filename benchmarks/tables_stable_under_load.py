"""Do the per-layer latency tables, and the allocations made of them, come out the same from build to
build with one core busy?

For the whole run another process keeps one core busy. Per model, the tables' latencies are built
``builds`` times by each of two methods, the methods alternating (so both see the same host):

- ``interleaved`` (edgeopt's, since decision 0107): every rung queued, then timed side by side in one
  process, a block of each per round, ``TABLE_ROUNDS`` rounds; a rung's latency is the median of its
  rounds' medians (``pending.Pending``).
- ``apart`` (edgeopt's before): each rung one short bench of its own, in a process of its own, its
  latency taken at the budget's percentile (p95), one rung after another.

The sensitivities are computed once (they do not depend on the latencies) and shared by every build.
Each build's table is then allocated by the knapsack at ``fractions`` of its own dense graph's latency
(as that build measured it whole): the question is whether the same knobs give the same plan when the
host's speed of the moment is set aside. That speed is reported apart (the dense graph of each build):
with one core busy it moves by up to 2x within minutes, on every rung alike, and no table can hold it.
Reported per method: each rung's spread across builds (max/min of its share of its build's dense layers,
over rungs of at least 1 µs), the allocations' distinct count and their agreement (the share of layers
on the same rung, pairwise), and the seconds the latencies took.

    python -m benchmarks tables_stable_under_load [--set models=resnet8,mobilenet --set builds=3]
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.suite import HOST_1T, Outcome, one_core_busy, provenance

METHODS = ("interleaved", "apart")
APART_BENCH = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}  # the former per-rung bench


class _Stop(Exception):
    """Raised from ``build_tables``' check: the latencies are known, the sensitivities not wanted."""


@contextlib.contextmanager
def method(name: str, pct: float) -> Iterator[None]:
    """``Pending.measure`` as ``name`` measures: edgeopt's own, or the former one bench per rung at ``pct``."""
    from edgeopt.runtime.bench import bench
    from edgeopt.search.allocation.pending import Pending

    if name == "interleaved":
        yield
        return

    def apart(self: Any) -> list[float]:
        self.ms = [float(bench(p, self.target, **APART_BENCH).latency_at(pct)) for p in self.paths]
        return self.ms

    own = Pending.measure
    Pending.measure = apart  # type: ignore[method-assign]
    try:
        yield
    finally:
        Pending.measure = own  # type: ignore[method-assign]


def latencies(task: Any, target: Any, layers: dict[str, Any]) -> tuple[Any, float]:
    """A build of the tables' latencies alone (no cache, no sensitivities) and its seconds."""
    from edgeopt.search.allocation.build import build_tables

    got: list[Any] = []

    def check(tables: Any) -> None:
        got.append(tables)
        raise _Stop

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, contextlib.suppress(_Stop):
        build_tables(task.model, task, target, Path(out), layers, check=check)
    return got[0], time.perf_counter() - t0


def _spreads(builds: list[Any]) -> list[float]:
    """Per rung (layer, label), max/min across the builds of its share of its build's dense layers (the
    table's shape: the level of the whole table moves with the host's speed, and the fit to the whole
    graphs carries it), where the rung takes at least 1 µs in every build."""
    out = []
    totals = [sum(cands[0].latency_ms for cands in b.layers.values()) for b in builds]
    for name, cands in builds[0].layers.items():
        for j in range(len(cands)):
            v = [b.layers[name][j].latency_ms for b in builds]
            if min(v) >= 1e-3:
                shares = [x / t for x, t in zip(v, totals, strict=True)]
                out.append(max(shares) / min(shares))
    return out


def _agreement(choices: list[dict[str, int]]) -> float:
    """The share of layers on the same rung, over every pair of allocations."""
    pairs = list(itertools.combinations(choices, 2))
    if not pairs:
        return 1.0
    return statistics.mean(sum(a[n] == b[n] for n in a) / len(a) for a, b in pairs)


def one(name: str, builds: int, fractions: list[float]) -> dict[str, Any]:
    from edgeopt.compiler.decompose import decomposable_layers
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.targets import Target
    from edgeopt.search.allocation.build import build_tables
    from edgeopt.search.allocation.knapsack import allocate

    task = load_example(name)
    target = Target.load(HOST_1T)
    layers = decomposable_layers(task.model.eval(), task.example_input)
    pct = float(target.budget.latency_percentile or 95)
    with tempfile.TemporaryDirectory() as out:
        full = build_tables(task.model, task, target, Path(out), layers)  # the sensitivities, once
    made: dict[str, list[Any]] = {m: [] for m in METHODS}
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for k in range(builds):
        for m in METHODS if k % 2 == 0 else METHODS[::-1]:
            with method(m, pct):
                tables, s = latencies(task, target, layers)
            for n, cands in tables.layers.items():
                for c, ref in zip(cands, full.layers[n], strict=True):
                    c.sensitivity = ref.sensitivity
            made[m].append(tables)
            seconds[m].append(round(s, 1))
            print(f"{name} build {k + 1}/{builds} {m}: {s:.1f} s", file=sys.stderr, flush=True)
    entry: dict[str, Any] = {"layers": len(layers), "methods": {}}
    for m in METHODS:
        spreads = sorted(_spreads(made[m]))
        allocations = {f: [allocate(t, latency_ms=f * t.dense_ms).choice for t in made[m]] for f in fractions}
        entry["methods"][m] = {
            "latency_s": seconds[m],
            "rungs": len(spreads),
            "rung_spread_median": round(statistics.median(spreads), 3) if spreads else None,
            "rung_spread_p90": round(spreads[int(0.9 * (len(spreads) - 1))], 3) if spreads else None,
            "dense_ms": [round(t.dense_ms, 5) for t in made[m]],
            "scale": [t.additivity["scale"] for t in made[m]],
            "allocations": {
                str(f): {
                    "distinct": len({tuple(sorted(c.items())) for c in cs}),
                    "agreement": round(_agreement(cs), 3),
                }
                for f, cs in allocations.items()
            },
        }
    return entry


def run(args: SimpleNamespace) -> Outcome:
    """Every model in ``models``, ``builds`` builds per method, with one core busy throughout."""
    models = [m.strip() for m in str(args.models).split(",") if m.strip()]
    fractions = [float(f) for f in str(args.fractions).split(",")]
    results: dict[str, Any] = {"builds": args.builds, "fractions": fractions, "models": {}, **provenance()}
    with one_core_busy():
        for name in models:
            results["models"][name] = one(name, int(args.builds), fractions)
            args.save(results, markdown(results))
    return Outcome(results, markdown(results))


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"One core busy; {results['builds']} builds of each model's latency tables per method, alternating; "
        f"allocations at {', '.join(str(f) for f in results['fractions'])} of each build's dense latency.",
        "",
        "| model | method | latencies (s) | rung share's spread across builds, median / p90 (max/min) "
        "| dense graph (ms) | distinct allocations | layers on the same rung |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in results["models"].items():
        for m, r in e["methods"].items():
            alloc = r["allocations"]
            lines.append(
                f"| {name} | {m} | {', '.join(map(str, r['latency_s']))} | {r['rung_spread_median']} / "
                f"{r['rung_spread_p90']} ({r['rungs']} rungs) | {', '.join(map(str, r['dense_ms']))} | "
                + ", ".join(f"{a['distinct']} of {results['builds']}" for a in alloc.values())
                + " | "
                + ", ".join(f"{100 * a['agreement']:.0f} %" for a in alloc.values())
                + " |"
            )
    return "\n".join(lines) + "\n"
