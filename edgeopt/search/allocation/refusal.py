"""Refusing a budget no plan can meet, before anything is trained: the fastest plan (the tables'
floor) is over the latency budget, or the smallest one over the size budget. A refusal is made only on
a trusted additivity fit (:func:`~.additivity.fit_trusted`): an untrusted floor is said in one line and
the search runs instead, its screens measuring each plan whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_write_text
from edgeopt.search.allocation.additivity import fit_trusted
from edgeopt.search.allocation.knapsack import floor
from edgeopt.search.allocation.tables import Tables

log = logging.getLogger("edgeopt.compile")
# A budget under this share of the fastest plans measured whole is refused even on an untrusted fit: the
# fit can misprice plans, but no plan runs twice as fast as the fastest ones measured (noise only adds).
FAR_BELOW = 0.5


def measured_floor(tables: Tables) -> tuple[float, str, float] | None:
    """:data:`FAR_BELOW` x the fastest of the whole graphs measured (dense, the fastest plan, the fastest
    fp32 plan), that graph's name and its latency: a floor that holds whatever the table's fit says."""
    graphs = tables.additivity.get("graphs") or {}
    measured = {k: g["measured_ms"] for k, g in graphs.items() if g.get("measured_ms") and k != "middle"}
    if not measured:
        return None
    name = min(measured, key=measured.__getitem__)
    return FAR_BELOW * measured[name], name, measured[name]


def refusal(tables: Tables, target: Any, max_params: float | None) -> str | None:
    """Why no plan can meet the budget (None when the floor is within it, or not trusted): one line."""
    f = floor(tables)
    budget = target.budget.latency_ms
    graphs = tables.additivity.get("graphs") or {}
    fp32 = (graphs.get("fastest_fp32") or {}).get("measured_ms")
    whole = measured_floor(tables)
    if budget and whole and whole[0] > budget and f.latency_ms <= whole[0]:
        # the table's floor is under it (prune rungs credited their consumers' saving, a fit that does not
        # hold in this graph): the measured graphs decide
        return (
            f"latency budget {budget:.4g} ms is below the floor of {whole[0]:.3f} ms: the fastest graph measured "
            f"whole ({whole[1]}) takes {whole[2]:.4f} ms, and no plan runs {1 / FAR_BELOW:g}x as fast "
            f"(the tables' own floor, {f.latency_ms:.3f} ms, does not hold in this graph)"
        )
    if budget and f.latency_ms > budget and fp32 is not None and fp32 <= budget:
        log.warning(
            "not refused: the table's floor is %.3f ms, but the fastest plan without int8 measures %.4f ms as one "
            "graph, within the budget (int8 rungs priced alone do not hold in this graph): searching instead",
            f.latency_ms,
            fp32,
        )
    elif budget and f.latency_ms > budget:
        why = f"latency budget {budget:.4g} ms is below the floor of {f.latency_ms:.3f} ms: {f.describe()}"
        if fit_trusted(tables) or (whole and budget < whole[0]):
            return why
        log.warning(
            "not refused: the floor of %.3f ms was not trusted (additivity held-out error %+.1f %% after %s "
            "measurements of the whole graphs; dense measured %.4f ms): searching instead",
            f.latency_ms,
            float((graphs.get("middle") or {}).get("error_pct", float("nan"))),
            tables.additivity.get("rounds", 1),
            float((graphs.get("dense") or {}).get("measured_ms", tables.dense_ms)),
        )
    if max_params is not None and f.min_params > max_params:
        return (
            f"size budget {target.budget.model_size_mb} MiB is below the smallest plan "
            f"({f.min_params} parameters, {max_params:.0f} allowed)"
        )
    return None


def write_refusal(out: Path, why: str, tables: Tables, target: Any) -> None:
    """``report.json``/``.md`` of a refused compile: the floor and the tables, nothing trained or shipped."""
    f = floor(tables)
    whole = measured_floor(tables)
    lowest = max(f.latency_ms, whole[0]) if whole else f.latency_ms
    rep = {
        "schema": "edgeopt.report/refused",
        "refused": why,
        "target": target.name,
        "budget": {"latency_ms": target.budget.latency_ms, "model_size_mb": target.budget.model_size_mb},
        "floor": {
            "latency_ms": lowest,
            "table_ms": f.latency_ms,
            "top": [{"part": n, "ms": ms} for n, ms in f.top],
            "min_params": f.min_params,
        },
        "tables": tables.to_dict(),
    }
    atomic_write_text(out / "report.json", json.dumps(rep, indent=1, default=str))
    rows = "\n".join(f"| {n} | {ms:.4f} |" for n, ms in f.top)
    whole = (tables.additivity.get("graphs") or {}).get("fastest")
    measured = (
        f" The fastest plan measured as one graph: {whole['measured_ms']:.4f} ms (the isolated layers "
        f"summed: {whole['isolated_sum_ms']:.4f} ms)."
        if whole
        else ""
    )
    atomic_write_text(
        out / "report.md",
        f"# edgeopt: budget refused\n\n{why}\n\nNothing was trained or shipped "
        f"(tables built in {tables.build_s:.1f} s).{measured}\n\n| part of the fastest plan | ms |\n"
        f"|---|---|\n{rows}\n",
    )


__all__ = ["measured_floor", "refusal", "write_refusal"]
