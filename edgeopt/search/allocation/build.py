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
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_write_text
from edgeopt.search.allocation.additivity import fit_additivity
from edgeopt.search.allocation.latency import (
    input_shapes,
    latency_rows,
    layer_inputs,
    price_graph_rungs,
    quiet_bench,
    refusal_notes,
)
from edgeopt.search.allocation.pending import Pending
from edgeopt.search.allocation.sensitivity import balanced_order, fill_sensitivities
from edgeopt.search.allocation.tables import SCHEMA, Tables

log = logging.getLogger("edgeopt.compile")


INT8_CALIBRATION = 64  # training samples an int8 rung is calibrated on (MinMax)


def int8_pays(target: Any) -> bool:
    """Whether int8 rungs are worth measuring on ``target``: its ISA has an int8 dot product faster than
    fp32 FMA (``int8_speedup`` > 1; AVX2 and up on x86, dot product on Arm). Where it does not, the
    tables stay fp32 and their build time with them."""
    from edgeopt.runtime.perf import int8_speedup

    return int8_speedup(tuple(getattr(target.device, "isa", ()) or ())) > 1.0


def table_key(teacher: Any, example: Any, target: Any, int8: bool = False) -> str:
    import torch

    h = hashlib.sha256()
    buf = io.BytesIO()
    torch.save(teacher.state_dict(), buf)
    h.update(buf.getvalue())
    h.update(repr(teacher).encode())
    h.update(repr(tuple(example.shape)).encode())
    # What decides the measurements (device, runtime, budget), not where the profile lives or what it is called.
    measured = {k: v for k, v in target.to_dict().items() if k not in ("name", "description", "source")}
    h.update(json.dumps(measured, sort_keys=True, default=str).encode())
    h.update(SCHEMA.encode())
    h.update(b"int8" if int8 else b"fp32")
    return h.hexdigest()[:24]


def build_tables(
    teacher: Any,
    task: Any,
    target: Any,
    out: Path,
    layers: dict[str, Any],
    *,
    check: Any = None,
    int8: bool | None = None,
) -> Tables:
    """The tables of ``teacher`` on ``target`` (read from ``out/tables.json`` when its key matches).
    ``check(tables)`` runs when the latencies are known, before the sensitivities (a refusal raises there).
    ``int8``: each rung also in static int8 (None: where the target's CPU runs int8 well, :func:`int8_pays`)."""
    import torch

    int8 = int8_pays(target) if int8 is None else bool(int8)
    key = table_key(teacher, torch.as_tensor(task.X_train[:1]), target, int8)
    cached = _cached(Path(out) / "tables.json", key)
    if cached is not None:
        log.info("tables: read from %s (built in %.1f s)", Path(out) / "tables.json", cached.build_s)
        if check is not None:
            check(cached)
        return cached
    t0 = time.perf_counter()
    tables = _latencies(teacher.eval(), task, target, layers, key, int8)
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
    rungs = tables.timings.get("sensitivity_rungs") or {}
    log.info(
        "tables: sensitivities of %d candidates (%d measured%s, the rest interpolated) on %d samples in %.1f s",
        sum(len(c) - 1 for c in tables.layers.values()),
        rungs.get("measured", 0),
        ", every other power of two: the model's forward pass is costly" if rungs.get("coarse") else "",
        tables.calibration,
        tables.timings["sensitivity_s"],
    )
    with contextlib.suppress(OSError):  # the cache is an optimization
        atomic_write_text(Path(out) / "tables.json", json.dumps(tables.to_dict(), indent=1))
    return tables


def _latencies(teacher: Any, task: Any, target: Any, layers: dict[str, Any], key: str, int8: bool) -> Tables:
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
            "int8": int8,
        }
        ctx["pending"] = Pending(target, ctx["tmp"])
        if int8:
            X = task.X_train[balanced_order(task.y_train, INT8_CALIBRATION)]
            ctx["calibration"] = layer_inputs(teacher, X, list(layers)).__getitem__
            ctx["model_calibration"] = X
        ctx["widths"] = {name: int(spec.out_size) for name, spec in layers.items()}
        pending = {name: latency_rows(teacher, name, spec, shapes[name], ctx) for name, spec in layers.items()}
        ms = ctx["pending"].measure()  # every rung side by side, in rounds
        rows = {name: finish(ms) for name, finish in pending.items()}
        price_graph_rungs(rows, ctx)
        t1 = time.perf_counter()
        fixed = int(plan_cost(teacher, {}, task.example_input).params) - sum(int(s.params) for s in layers.values())
        notes = refusal_notes(ctx.get("refused", []), ctx.get("coupled", {}))
        tables = Tables(rows, math.nan, 0.0, 0.0, key, False, fixed, notes=notes)  # dense_ms: by the fit
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


__all__ = ["INT8_CALIBRATION", "build_tables", "int8_pays", "table_key"]
