"""The tables' additivity fit: isolated layers do not add up to a graph (fusions across layers, an
attention module rebuilt when its projections are decomposed, dispatch between nodes), so three whole
graphs are measured, dense, the fastest plan and a middle plan (each layer at its middle rung); the
table's prediction becomes ``rest + scale x sum(layers)`` through the first two, and the third is the
held-out check (``Tables.additivity``).

On a busy host one stalled measurement of a whole graph skews the fit (a dense graph of 0.3 ms read as
7.6 ms put the scale at its clip and the rest at 7.4 ms), and the floor it gives would refuse a budget
the model meets. So when the held-out error is beyond :data:`TRUSTED_ERROR_PCT`, the three graphs are
measured again (at most :data:`REMEASURE_ROUNDS` more times) and the fit taken through each graph's
median; a fit still beyond it is kept for the search but marked untrusted, and no refusal is made on it.
The graphs of a round are timed side by side, in rounds of their own (:func:`graphs_ms`), so that a
window of other work falls on all of them alike.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from typing import Any

from edgeopt.search.allocation.tables import Tables

log = logging.getLogger("edgeopt.compile")

GRAPH_ROUNDS = 4  # rounds of the whole graphs timed side by side; a graph's latency is their median
GRAPH_BLOCK = {"min_iters": 25, "min_time_s": 0.1, "max_iters": 2500, "warmup": 5}  # a graph's block, each round
SCALE_RANGE = (0.25, 4.0)  # the plausible scales: a fit outside is clipped to this range
TRUSTED_ERROR_PCT = 50.0  # held-out error beyond which the graphs are re-measured, and no refusal is made
REMEASURE_ROUNDS = 2  # rounds of the three graphs measured again when the fit is off
GRAPHS = ("dense", "fastest", "middle")
INT8_CREDIT_FLOOR = 0.25  # the least an int8 rung is scaled to by a whole int8 graph that ran faster than the table


def graphs_ms(teacher: Any, plans: dict[str, dict[str, Any]], ctx: dict[str, Any]) -> dict[str, float]:
    """The whole graph of each plan exported (its int8 layers quantized, as it would ship) and the graphs
    timed side by side (:func:`~edgeopt.runtime.bench.bench_many`, :data:`GRAPH_ROUNDS` rounds): each
    the median over the rounds of its block's latency at the budget's percentile. They were timed one
    after another, each the least of two runs: on a busy host the fit then went through graphs taken in
    different windows of other work (the dense graph of a 0.3 ms model read 7.6 ms once)."""
    import numpy as np
    import torch

    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime import stats
    from edgeopt.runtime.bench import bench_many

    paths = []
    for name, plan in plans.items():
        path = ctx["tmp"] / f"{name}.onnx"
        export_onnx(
            decompose(teacher, plan, example_input=ctx["example"]).eval(),
            torch.as_tensor(ctx["example"]),
            path,
            verify=False,
        )
        if ctx.get("int8"):  # the plan's int8 layers as they would ship, with their Q/DQ boundaries
            from edgeopt.compiler.quantize import quantize_plan

            path = quantize_plan(path, ctx["tmp"] / f"{name}.int8.onnx", plan, calibration=ctx["model_calibration"])
        paths.append(path)
    rounds = bench_many(paths, ctx["target"], rounds=GRAPH_ROUNDS, **GRAPH_BLOCK)
    return {
        name: float(np.median([stats.percentile(r, ctx["pct"]) for r in rs if len(r)]))
        for name, rs in zip(plans, rounds, strict=True)
    }


def _at(tables: Tables, pick: Any) -> dict[str, int]:
    """Layer -> candidate index chosen by ``pick(list of latencies)``."""
    return {n: pick([c.latency_ms for c in cands]) for n, cands in tables.layers.items()}


def fit_scale(sums: dict[str, float], measured: dict[str, float]) -> dict[str, Any]:
    """The fit through the dense and the fastest graph of the isolated sums ``sums`` against the whole
    graphs ``measured`` (``GRAPHS`` each): scale, rest, how it was fitted, and each graph's error (rounded
    for the report; ``raw``: the scale, rest and graphs' latencies as fitted)."""
    span = sums["dense"] - sums["fastest"]
    scale, fit = 1.0, "none: the fastest plan is no faster than dense, or the layers barely differ"
    if span > 0.02 * measured["dense"] and measured["dense"] > measured["fastest"]:
        exact = (measured["dense"] - measured["fastest"]) / span
        scale = min(max(exact, SCALE_RANGE[0]), SCALE_RANGE[1])
        fit = "through both graphs" if scale == exact else f"scale clipped to {scale} (fitted {exact:.3g})"
    rest = measured["dense"] - scale * sums["dense"]
    if rest < 0:  # the layers alone take longer than the graph: no rest, the scale fits both graphs in ratio
        ratios = [sums[k] / measured[k] for k in ("dense", "fastest") if measured[k] > 0 and sums[k] > 0]
        scale = sum(ratios) / sum(r * r for r in ratios) if ratios else 1.0
        scale, rest = min(max(scale, SCALE_RANGE[0]), SCALE_RANGE[1]), 0.0
        fit = "in ratio, no rest: the isolated layers take longer than the graph"
    before = {k: measured["dense"] - sums["dense"] + sums[k] for k in sums}  # isolated sums plus the dense rest
    after = {k: rest + scale * sums[k] for k in sums}
    graphs = {
        k: {
            "measured_ms": round(measured[k], 5),
            "isolated_sum_ms": round(before[k], 5),
            "table_ms": round(after[k], 5),
            "error_pct": round(100 * (after[k] / measured[k] - 1), 2),
        }
        for k in sums
    }
    raw = {"scale": scale, "rest_ms": rest, **{k: measured[k] for k in sums}}
    return {
        "scale": round(scale, 4),
        "rest_ms": round(rest, 5),
        "fit": fit,
        "graphs": graphs,
        "held_out": "middle",
        "raw": raw,
    }


def robust_fit(sums: dict[str, float], measure: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """:func:`fit_scale` on one round of ``measure()`` (the three graphs' latencies); while its held-out
    error is beyond :data:`TRUSTED_ERROR_PCT`, up to :data:`REMEASURE_ROUNDS` more rounds, the fit then
    taken through each graph's median over the rounds. ``trusted``: whether the last fit is within it."""
    rounds = [measure()]
    while True:
        medians = {k: statistics.median(r[k] for r in rounds) for k in GRAPHS}
        fit = fit_scale(sums, medians)
        trusted = abs(fit["graphs"]["middle"]["error_pct"]) <= TRUSTED_ERROR_PCT
        if trusted or len(rounds) > REMEASURE_ROUNDS:
            return {**fit, "rounds": len(rounds), "trusted": trusted}
        rounds.append(measure())


def fit_trusted(tables: Tables) -> bool:
    """Whether the tables' additivity fit may decide a refusal (tables cached before the mark: by their error)."""
    a = tables.additivity or {}
    if "trusted" in a:
        return bool(a["trusted"])
    err = ((a.get("graphs") or {}).get("middle") or {}).get("error_pct")
    return err is None or abs(float(err)) <= TRUSTED_ERROR_PCT


def fit_additivity(tables: Tables, teacher: Any, ctx: dict[str, Any]) -> None:
    """Measure the dense graph, the fastest plan and a middle plan whole (again when the fit is off:
    :func:`robust_fit`); scale the layers' latencies and set the rest so that the table gives the first
    two exactly; the third is the held-out check.

    With int8 rungs the fastest fp32 plan is measured whole too. When it runs faster than the table's
    fastest plan (int8 rungs are priced alone; as one graph they can run slower: ResNet-8 here, 0.143 ms
    all-int8 against 0.103 ms fp32), the fit goes through it instead and the int8 rungs are charged the
    difference (:func:`_charge_int8`): fitted through the int8 plan, the table's rest came out above the
    budget, no plan fitted under it, and every trial of a compile was the fastest plan (val F1 0.12).

    When the fit goes through an fp32 plan, the int8 rungs are priced through a whole int8 graph (every layer
    at its fastest int8 rung) if it runs faster than that plan, or the table's int8 plan was not the slower
    one (:func:`_reprice_int8`): an isolated rung does not see what a whole graph shares (a conv run's
    interior Q/DQ, weights four times smaller in cache). On the bundled models it has not applied yet: on
    vit, int8 on pruned or low-rank layers ran slower than fp32 as a graph too (decision 0113); the graph
    is then recorded as measured (``priced_through`` false)."""
    choices, fp32_choice, int8_choice, first = _first_round(tables, teacher, ctx)
    fp32_ms, int8_plan = _fastest_of_two(choices, first, fp32_choice)
    sums = {k: sum(tables.layers[n][i].latency_ms for n, i in choice.items()) for k, choice in choices.items()}
    once = [first]

    def measure() -> dict[str, float]:
        if once:  # the first round: the graphs measured above
            got = once.pop()
            return {k: got[k] for k in GRAPHS}
        return graphs_ms(teacher, {k: tables.plan_of(choices[k]) for k in GRAPHS}, ctx)

    fit = robust_fit(sums, measure)
    raw = fit.pop("raw")
    dense, fastest = raw["dense"], raw["fastest"]
    if fastest >= dense:
        tables.notes.append(
            f"the fastest plan by the table measures {fastest:.4f} ms as one graph, no faster than dense "
            f"({dense:.4f} ms): the isolated layers' latencies do not hold in this graph on this target, "
            "so the allocation's latency is a guess and the screen decides"
        )
        log.warning("tables: %s", tables.notes[-1])
    if not fit["trusted"]:
        tables.notes.append(
            f"additivity fit off by {fit['graphs']['middle']['error_pct']:+.1f} % on the held-out graph after "
            f"{fit['rounds']} measurements (a busy host?): the floor is not trusted to refuse a budget"
        )
    if raw["scale"] != 1.0:
        for cands in tables.layers.values():
            for c in cands:
                c.latency_ms *= raw["scale"]
    if fp32_choice is not None:  # a refusal must hold against the fastest fp32 plan too
        measured = raw["fastest"] if choices["fastest"] == fp32_choice else float(fp32_ms or 0.0)
        isolated = sum(tables.layers[n][i].latency_ms for n, i in fp32_choice.items())  # scaled by now
        table = raw["rest_ms"] + isolated
        fit["graphs"]["fastest_fp32"] = {
            "measured_ms": round(measured, 5),
            "isolated_sum_ms": round(dense - sums["dense"] + isolated / raw["scale"], 5),
            "table_ms": round(table, 5),
            "error_pct": round(100 * (table / measured - 1), 2) if measured > 0 else None,
        }
    _price_int8(tables, fit, raw, (choices["fastest"], int8_plan, int8_choice), first, dense - sums["dense"])
    tables.dense_ms, tables.rest_ms, tables.additivity = dense, raw["rest_ms"], fit


def _price_int8(
    tables: Tables,
    fit: dict[str, Any],
    raw: dict[str, Any],
    plans: tuple[dict[str, int], dict[str, Any] | None, dict[str, int] | None],
    first: dict[str, float],
    dense_rest: float,
) -> None:
    """Through an fp32 plan (``plans``: the fit's fastest choice, the table's slower int8 plan or None, the
    whole int8 choice), the int8 rungs are priced by the whole int8 graph when it runs faster than that plan,
    or no int8 plan ran slower (int8 pays in runs), else charged through the table's slower int8 plan
    (ResNet-8)."""
    fastest, int8_plan, int8_choice = plans
    runs = "whole_int8" in first and not _has_int8(tables, fastest)
    if runs and (int8_plan is None or first["whole_int8"] < raw["fastest"]):
        fit["graphs"]["whole_int8"] = _reprice_int8(tables, int8_choice, first["whole_int8"], raw["rest_ms"])
        return
    if int8_plan is not None:
        _record_int8(tables, fit, raw, int8_plan, dense_rest)
    if "whole_int8" in first and int8_choice is not None:  # measured, not priced through: shown as it ran
        table = raw["rest_ms"] + sum(tables.layers[n][i].latency_ms for n, i in int8_choice.items())
        fit["graphs"]["whole_int8"] = {
            "measured_ms": round(first["whole_int8"], 5),
            "table_ms": round(table, 5),
            "error_pct": round(100 * (table / first["whole_int8"] - 1), 2) if first["whole_int8"] > 0 else None,
            "priced_through": False,
        }


def _first_round(
    tables: Tables, teacher: Any, ctx: dict[str, Any]
) -> tuple[dict[str, dict[str, int]], dict[str, int] | None, dict[str, int] | None, dict[str, float]]:
    """The graphs' choices (dense, the table's fastest plan, the middle plan), the fastest fp32 plan's and the
    whole int8 plan's (with int8 rungs), and the first round of every graph timed side by side."""
    choices = {
        "dense": dict.fromkeys(tables.layers, 0),
        "fastest": _at(tables, lambda lats: min(range(len(lats)), key=lats.__getitem__)),
        "middle": _at(tables, lambda lats: sorted(range(len(lats)), key=lats.__getitem__)[len(lats) // 2]),
    }
    fp32_choice = fastest_fp32(tables) if ctx.get("int8") else None
    plans = {k: tables.plan_of(c) for k, c in choices.items()}
    if fp32_choice is not None and fp32_choice != choices["fastest"]:
        plans["fastest_fp32"] = tables.plan_of(fp32_choice)
    int8_choice = whole_int8(tables) if ctx.get("int8") else None
    if int8_choice is not None and int8_choice not in (choices["fastest"], fp32_choice):
        plans["whole_int8"] = tables.plan_of(int8_choice)
    return choices, fp32_choice, int8_choice, graphs_ms(teacher, plans, ctx)


def _record_int8(
    tables: Tables, fit: dict[str, Any], raw: dict[str, Any], int8_plan: dict[str, Any], dense_rest: float
) -> None:
    """The int8 plan that ran slower than the fp32 one: its rungs charged, its graph recorded, a note."""
    fit["fit"] += "; through the fastest fp32 plan, which ran faster than the table's fastest (int8) plan"
    scaled = sum(tables.layers[n][i].latency_ms for n, i in int8_plan["choice"].items())
    record = _charge_int8(tables, int8_plan, raw["rest_ms"])
    record["isolated_sum_ms"] = round(dense_rest + scaled / raw["scale"], 5)
    fit["graphs"]["fastest_int8"] = record
    tables.notes.append(
        f"int8 rungs charged {fit['graphs']['fastest_int8']['charge_ms']:.4f} ms each: the table's fastest "
        f"plan (int8) measured {int8_plan['measured_ms']:.4f} ms as one graph, slower than the fastest fp32 "
        f"plan ({raw['fastest']:.4f} ms)"
    )
    log.info("tables: %s", tables.notes[-1])


def _fastest_of_two(
    choices: dict[str, dict[str, int]], measured: dict[str, float], fp32_choice: dict[str, int] | None
) -> tuple[float | None, dict[str, Any] | None]:
    """With int8 rungs, the table's fastest plan and the fastest fp32 plan (both in ``measured``): the faster
    becomes ``choices["fastest"]`` (and ``measured["fastest"]``). Returns the fp32 plan's latency (None: not
    measured) and, when the int8 plan was the slower, it (``choice``, ``measured_ms``) for :func:`_charge_int8`."""
    if fp32_choice is None or "fastest_fp32" not in measured:
        return None, None
    fastest_ms, fp32_ms = measured["fastest"], measured["fastest_fp32"]
    if fp32_ms >= fastest_ms:
        return fp32_ms, None
    int8_plan = {"choice": choices["fastest"], "measured_ms": fastest_ms}
    choices["fastest"], measured["fastest"] = fp32_choice, fp32_ms
    return fp32_ms, int8_plan


def _charge_int8(tables: Tables, int8_plan: dict[str, Any], rest_ms: float) -> dict[str, Any]:
    """Add to every int8 rung the share of what the table's fastest plan measured over the table (its
    int8 layers' Q/DQ boundaries and slow kernels, spread evenly over them): the knapsack then takes an
    int8 rung only where it still wins by more than that. Returns the plan's record for the report."""
    from edgeopt.compiler.formats import precision_of

    choice = int8_plan["choice"]
    table = rest_ms + sum(tables.layers[n][i].latency_ms for n, i in choice.items())
    int8_layers = [n for n, i in choice.items() if precision_of(tables.layers[n][i].entry) == "int8"]
    charge = max(0.0, int8_plan["measured_ms"] - table) / max(1, len(int8_layers))
    for cands in tables.layers.values():
        for c in cands:
            if precision_of(c.entry) == "int8":
                c.latency_ms += charge
    after = table + charge * len(int8_layers)
    measured = int8_plan["measured_ms"]
    return {
        "measured_ms": round(measured, 5),
        "table_ms": round(after, 5),
        "error_pct": round(100 * (after / measured - 1), 2) if measured > 0 else None,
        "table_before_charge_ms": round(table, 5),
        "int8_layers": len(int8_layers),
        "charge_ms": round(charge, 6),
    }


def _has_int8(tables: Tables, choice: dict[str, int]) -> bool:
    from edgeopt.compiler.formats import precision_of

    return any(precision_of(tables.layers[n][i].entry) == "int8" for n, i in choice.items())


def whole_int8(tables: Tables) -> dict[str, int] | None:
    """Layer -> its fastest int8 candidate (its fastest fp32 one where it has none): the plan that quantizes
    every layer it can; None when no layer has an int8 rung."""
    from edgeopt.compiler.formats import precision_of

    fp32 = fastest_fp32(tables)
    out = {}
    for n, cands in tables.layers.items():
        int8 = [i for i, c in enumerate(cands) if precision_of(c.entry) == "int8"]
        out[n] = min(int8, key=lambda i: cands[i].latency_ms) if int8 else fp32[n]
    return out if out != fp32 else None


def _reprice_int8(tables: Tables, choice: dict[str, int], measured: float, rest_ms: float) -> dict[str, Any]:
    """Price the int8 rungs through the whole int8 graph (``measured``, ms) when the fit went through fp32
    plans: slower than the table says, every int8 rung is charged an even share (:func:`_charge_int8`);
    faster, every int8 rung is scaled by what its layers took in the graph over what the table gave them
    (at least :data:`INT8_CREDIT_FLOOR`: the rest's own share of a graph cannot be told from the layers').
    Returns the graph's record for the report."""
    from edgeopt.compiler.formats import precision_of

    lat = {n: tables.layers[n][i].latency_ms for n, i in choice.items()}
    int8 = [n for n, i in choice.items() if precision_of(tables.layers[n][i].entry) == "int8"]
    table = rest_ms + sum(lat.values())
    if measured >= table:
        record = _charge_int8(tables, {"choice": choice, "measured_ms": measured}, rest_ms)
        note = f"int8 rungs charged {record['charge_ms']:.4f} ms each"
    else:
        share = sum(lat[n] for n in int8)
        factor = max(INT8_CREDIT_FLOOR, (measured - table + share) / share) if share > 0 else 1.0
        for cands in tables.layers.values():
            for c in cands:
                if precision_of(c.entry) == "int8":
                    c.latency_ms *= factor
        after = table - share * (1 - factor)
        record = {
            "measured_ms": round(measured, 5),
            "table_ms": round(after, 5),
            "error_pct": round(100 * (after / measured - 1), 2) if measured > 0 else None,
            "table_before_charge_ms": round(table, 5),
            "int8_layers": len(int8),
            "credit_factor": round(factor, 4),
        }
        note = f"int8 rungs scaled by {factor:.3f}"
    tables.notes.append(
        f"{note}: every layer at its fastest int8 rung measured {measured:.4f} ms as one graph, the table "
        f"gave {table:.4f} ms (isolated int8 rungs do not see what a whole graph shares)"
    )
    log.info("tables: %s", tables.notes[-1])
    return record


def fastest_fp32(tables: Tables) -> dict[str, int]:
    """Layer -> its fastest fp32 candidate: int8 rungs are priced in isolation, less their Q/DQ boundaries,
    and a graph of them can run slower than the fp32 plan (ResNet-8 here: 0.147 ms against ~0.115 ms)."""
    from edgeopt.compiler.formats import precision_of

    return {
        n: min((i for i, c in enumerate(cands) if precision_of(c.entry) != "int8"), key=lambda i: cands[i].latency_ms)
        for n, cands in tables.layers.items()
    }


__all__ = [
    "GRAPH_BLOCK",
    "GRAPH_ROUNDS",
    "INT8_CREDIT_FLOOR",
    "REMEASURE_ROUNDS",
    "SCALE_RANGE",
    "TRUSTED_ERROR_PCT",
    "fit_additivity",
    "fit_scale",
    "fastest_fp32",
    "fit_trusted",
    "graphs_ms",
    "whole_int8",
    "robust_fit",
]
