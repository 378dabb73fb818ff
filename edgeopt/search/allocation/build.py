"""Building the per-layer tables before any training (:class:`~.tables.Tables`): latencies first
(:mod:`.latency`, then the additivity fit :mod:`.additivity`), so that a budget below the fastest plan
is refused by the ``check`` callback before any sensitivity (:mod:`.sensitivity`) is computed.
Cached in the out dir (``tables.json``), keyed by a hash of the model, the input and the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_write_text
from edgeopt.search.allocation.additivity import fit_additivity, graph_ms
from edgeopt.search.allocation.latency import (
    Alone,
    bench_module,
    input_shapes,
    latency_rows,
    price_graph_rungs,
    quiet_bench,
    refusal_notes,
)
from edgeopt.search.allocation.sensitivity import fill_sensitivities
from edgeopt.search.allocation.tables import SCHEMA, Tables

log = logging.getLogger("edgeopt.compile")


def table_key(teacher: Any, example: Any, target: Any) -> str:
    import torch

    h = hashlib.sha256()
    buf = io.BytesIO()
    torch.save(teacher.state_dict(), buf)
    h.update(buf.getvalue())
    h.update(repr(teacher).encode())
    h.update(repr(tuple(example.shape)).encode())
    h.update(json.dumps(target.to_dict(), sort_keys=True, default=str).encode())
    h.update(SCHEMA.encode())
    return h.hexdigest()[:24]


def build_tables(
    teacher: Any, task: Any, target: Any, out: Path, layers: dict[str, Any], *, check: Any = None
) -> Tables:
    """The tables of ``teacher`` on ``target`` (read from ``out/tables.json`` when its key matches).
    ``check(tables)`` runs when the latencies are known, before the sensitivities (a refusal raises there)."""
    import torch

    key = table_key(teacher, torch.as_tensor(task.X_train[:1]), target)
    cached = _cached(Path(out) / "tables.json", key)
    if cached is not None:
        log.info("tables: read from %s (built in %.1f s)", Path(out) / "tables.json", cached.build_s)
        if check is not None:
            check(cached)
        return cached
    t0 = time.perf_counter()
    tables = _latencies(teacher.eval(), task, target, layers, key)
    t2 = time.perf_counter()
    log.info(
        "tables: %d layers, latencies in %.1f s; additivity scale %.2f, held-out error %+.1f%%",
        len(tables.layers),
        t2 - t0,
        tables.additivity["scale"],
        tables.additivity["graphs"]["middle"]["error_pct"],
    )
    if check is not None:
        tables.build_s = round(t2 - t0, 3)
        check(tables)
    fill_sensitivities(teacher, task, tables)
    tables.timings["sensitivity_s"] = round(time.perf_counter() - t2, 2)
    tables.build_s = round(time.perf_counter() - t0, 3)
    log.info(
        "tables: sensitivities of %d candidates on %d samples in %.1f s",
        sum(len(c) - 1 for c in tables.layers.values()),
        tables.calibration,
        tables.timings["sensitivity_s"],
    )
    with contextlib.suppress(OSError):  # the cache is an optimization
        atomic_write_text(Path(out) / "tables.json", json.dumps(tables.to_dict(), indent=1))
    return tables


def _latencies(teacher: Any, task: Any, target: Any, layers: dict[str, Any], key: str) -> Tables:
    """The tables' latencies, the rungs measured alone and fitted to the whole graphs; no sensitivity yet."""
    import torch

    from edgeopt.compiler.decompose import plan_cost

    t0 = time.perf_counter()
    shapes = input_shapes(teacher, torch.as_tensor(task.X_train[:1]), list(layers))
    with torch.no_grad(), quiet_bench(), tempfile.TemporaryDirectory(prefix="edgeopt-tables-") as tmpdir:
        ctx: dict[str, Any] = {
            "target": target,
            "tmp": Path(tmpdir),
            "pct": float(target.budget.latency_percentile or 95),
            "example": task.example_input,
            "floor": {},
        }
        for shape in set(shapes.values()):
            ctx["floor"][shape] = bench_module(Alone.make(torch.nn.ReLU()), shape, target, ctx["tmp"], ctx["pct"])
        ctx["widths"] = {name: int(spec.out_size) for name, spec in layers.items()}
        rows = {name: latency_rows(teacher, name, spec, shapes[name], ctx) for name, spec in layers.items()}
        price_graph_rungs(rows, ctx)
        t1 = time.perf_counter()
        dense_ms = graph_ms(teacher, {}, ctx, "dense")
        fixed = int(plan_cost(teacher, {}, task.example_input).params) - sum(int(s.params) for s in layers.values())
        notes = refusal_notes(ctx.get("refused", []), ctx.get("coupled", {}))
        tables = Tables(rows, dense_ms, 0.0, 0.0, key, False, fixed, notes=notes)
        fit_additivity(tables, teacher, ctx)
    tables.timings = {"latency_s": round(t1 - t0, 2), "additivity_s": round(time.perf_counter() - t1, 2)}
    return tables


def _cached(path: Path, key: str) -> Tables | None:
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key and cached.get("schema") == SCHEMA:
            return Tables.from_dict(cached)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


__all__ = ["build_tables", "table_key"]
