"""Per-layer tables, built before any training: for each decomposable layer and each candidate on a
ladder of formats and ranks, its latency on the target and its sensitivity (issue 9, item 1).

- latency: the decomposed layer alone, wrapped in a module with the layer's real input shape,
  exported and benched on the target (predicted or measured, like every bench); the cost of an
  empty graph of the same input (a ReLU) is subtracted, so that the layers add up to the graph;
- sensitivity: KL(teacher || model) on a calibration batch (at most 256 training samples) when only
  that layer is replaced (SVD / TT-SVD initialized by ``decompose``);
- rest: the whole dense graph's latency less the sum of the dense layers' latencies (the parts that
  cannot be decomposed, and what the isolated measurements miss).

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_write_text

log = logging.getLogger("edgeopt.compile")

SCHEMA = "edgeopt.tables/1"
TABLE_BENCH = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}
MAX_CANDIDATES = 6  # latencies measured per layer, dense included (a bench is a child process: ~0.5 s)
CALIBRATION = 256


@dataclass
class Candidate:
    """One way to build one layer: its plan entry (``{}`` is dense), params, latency (ms) and sensitivity."""

    label: str
    entry: dict[str, Any]
    params: int
    latency_ms: float
    sensitivity: float


@dataclass
class Tables:
    layers: dict[str, list[Candidate]]
    dense_ms: float  # the whole dense graph
    rest_ms: float  # dense graph less the dense layers
    build_s: float
    key: str = ""
    cached: bool = False
    fixed_params: int = 0  # parameters outside the decomposable layers
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "key": self.key, "dense_ms": self.dense_ms, "rest_ms": self.rest_ms,
                "build_s": self.build_s, "fixed_params": self.fixed_params, "notes": self.notes,
                "layers": {n: [asdict(c) for c in cands] for n, cands in self.layers.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tables:
        layers = {n: [Candidate(**c) for c in cands] for n, cands in d["layers"].items()}
        return cls(layers, float(d["dense_ms"]), float(d["rest_ms"]), float(d["build_s"]), d.get("key", ""),
                   True, int(d.get("fixed_params", 0)), list(d.get("notes", [])))

    def plan_of(self, choice: dict[str, int]) -> dict[str, Any]:
        """The plan of an allocation (layer -> candidate index); dense layers are left out."""
        return {n: dict(self.layers[n][i].entry) for n, i in choice.items() if self.layers[n][i].entry}

    def latency_of(self, plan: dict[str, Any]) -> float | None:
        """The table's prediction for ``plan`` (rest included), None when a layer's entry is not in the table."""
        total = self.rest_ms
        for name, cands in self.layers.items():
            entry = plan.get(name) or {}
            if entry.get("format") == "dense":
                entry = {}
            hit = next((c for c in cands if c.entry == entry), None)
            if hit is None:
                return None
            total += hit.latency_ms
        return total


def ladder(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """Dense, then for each registered format with a rank the ranks 1, 2, 4, ... up to its
    ``max_search_rank`` (the layer's own format list permitting)."""
    from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler, registered_handlers

    allowed = getattr(spec, "formats", None)
    out: list[tuple[str, dict[str, Any]]] = [("dense", {})]
    for h in registered_handlers():
        if h.name == DEFAULT_FORMAT or not h.has_rank or (allowed is not None and h.name not in allowed):
            continue
        hi = h.max_search_rank(spec)
        out += [(f"{h.name} {2 ** k}", get_handler(h.name).plan_entry(2 ** k)) for k in range(20) if 2 ** k <= hi]
    return out


def measured_subset(rungs: list[tuple[str, dict[str, Any]]], limit: int = MAX_CANDIDATES) -> set[int]:
    """Which rungs get their latency measured: dense, and per format the smallest and largest ranks
    and log-evenly spaced ones between, ``limit`` in all; the others are interpolated in rank."""
    by_fmt: dict[str, list[int]] = {}
    for i, (_, entry) in enumerate(rungs):
        if entry:
            by_fmt.setdefault(entry["format"], []).append(i)
    room = max(2, (limit - 1) // max(1, len(by_fmt)))
    keep = {0}
    for idx in by_fmt.values():
        if len(idx) <= room:
            keep.update(idx)
        else:
            step = (len(idx) - 1) / (room - 1)
            keep.update(idx[round(j * step)] for j in range(room))
    return keep


def _interpolate(rows: list[Candidate], measured: set[int]) -> None:
    """Latency of the rungs not measured: linear in rank between the measured neighbours of its format."""
    for i, c in enumerate(rows):
        if i in measured:
            continue
        fmt, r = c.entry["format"], _rank(c.entry)
        same = [(_rank(rows[j].entry), rows[j].latency_ms) for j in sorted(measured) if rows[j].entry.get("format") == fmt]
        lo = max((p for p in same if p[0] <= r), default=same[0])
        hi = min((p for p in same if p[0] >= r), default=same[-1])
        w = 0.0 if hi[0] == lo[0] else (r - lo[0]) / (hi[0] - lo[0])
        c.latency_ms = lo[1] + w * (hi[1] - lo[1])


def _rank(entry: dict[str, Any]) -> int:
    from edgeopt.compiler.formats import get_handler

    r = get_handler(entry["format"]).rank_of(entry)
    return int(max(r) if isinstance(r, (list, tuple)) else r)


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


def input_shapes(teacher: Any, example: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Each layer's input shape at batch 1 (first call), on the model as ``decompose`` sees it."""
    import torch

    from edgeopt.compiler.decompose import decompose

    model = decompose(teacher, {}).eval()
    mods = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        def hook(mod: Any, args: Any, out: Any, name: str = name) -> None:
            shapes.setdefault(name, (1, *tuple(args[0].shape[1:])))
        handles.append(mods[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hd in handles:
            hd.remove()
    return shapes


class _Alone:
    """A module holding one layer (or a ReLU) to export with a fixed input."""

    @staticmethod
    def make(layer: Any) -> Any:
        from torch import nn

        class Alone(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.layer = layer

            def forward(self, x: Any) -> Any:
                return self.layer(x)

        return Alone().eval()


def bench_module(module: Any, shape: tuple[int, ...], target: Any, tmp: Path, pct: float) -> float:
    """``module`` exported at ``shape`` and benched on ``target``: its latency (ms) at the budget's percentile."""
    import torch

    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    path = tmp / "layer.onnx"
    export_onnx(module, torch.randn(*shape), path, verify=False)
    return float(bench(path, target, **TABLE_BENCH).latency_at(pct))


def kl(teacher_logits: Any, logits: Any) -> float:
    import torch

    p = torch.log_softmax(teacher_logits, -1)
    q = torch.log_softmax(logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _layer_rows(teacher: Any, name: str, spec: Any, shape: tuple[int, ...], ctx: dict[str, Any]) -> list[Candidate]:
    import torch

    from edgeopt.compiler.decompose import decompose, plan_cost

    rungs = ladder(spec)
    measured = measured_subset(rungs)
    rows = []
    for i, (label, entry) in enumerate(rungs):
        student = decompose(teacher, {name: entry} if entry else {}).eval()
        with torch.no_grad():
            sens = kl(ctx["t_logits"], student(ctx["X"])) if entry else 0.0
        lat = math.nan
        if i in measured:
            alone = _Alone.make(student.get_submodule(name))
            lat = max(0.0, bench_module(alone, shape, ctx["target"], ctx["tmp"], ctx["pct"]) - ctx["floor"][shape])
        params = int(plan_cost(teacher, {name: entry}, ctx["example"]).layers[name].params) if entry else int(spec.params)
        rows.append(Candidate(label, entry, params, lat, max(0.0, sens)))
    _interpolate(rows, measured)
    return rows


def build_tables(teacher: Any, task: Any, target: Any, out: Path, layers: dict[str, Any]) -> Tables:
    """The tables of ``teacher`` on ``target`` (read from ``out/tables.json`` when its key matches)."""
    import torch

    from edgeopt.compiler.decompose import plan_cost
    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    example = torch.as_tensor(task.X_train[:1])
    key = table_key(teacher, example, target)
    path = Path(out) / "tables.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key and cached.get("schema") == SCHEMA:
            return Tables.from_dict(cached)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    t0 = time.perf_counter()
    teacher = teacher.eval()
    pct = float(target.budget.latency_percentile or 95)
    X = torch.as_tensor(task.X_train[:CALIBRATION])
    shapes = input_shapes(teacher, example, list(layers))
    with torch.no_grad(), _quiet_bench(), tempfile.TemporaryDirectory(prefix="edgeopt-tables-") as tmpdir:
        tmp = Path(tmpdir)
        ctx: dict[str, Any] = {"t_logits": teacher(X), "X": X, "target": target, "tmp": tmp, "pct": pct,
                               "example": task.example_input, "floor": {}}
        for shape in set(shapes.values()):
            ctx["floor"][shape] = bench_module(_Alone.make(torch.nn.ReLU()), shape, target, tmp, pct)
        rows = {name: _layer_rows(teacher, name, spec, shapes[name], ctx) for name, spec in layers.items()}
        export_onnx(teacher, task.example_input, tmp / "dense.onnx", verify=False)
        dense_ms = float(bench(tmp / "dense.onnx", target, **TABLE_BENCH).latency_at(pct))
    rest = dense_ms - sum(cands[0].latency_ms for cands in rows.values())
    base = plan_cost(teacher, {}, task.example_input)
    fixed = int(base.params) - sum(int(spec.params) for spec in layers.values())
    tables = Tables(rows, dense_ms, max(0.0, rest), round(time.perf_counter() - t0, 3), key, False, fixed)
    if rest < 0:
        tables.notes.append(f"the isolated layers add up to {dense_ms - rest:.4f} ms, more than the whole graph's "
                            f"{dense_ms:.4f} ms; rest taken as 0")
    log.info("tables: %d layers, %d candidates in %.1f s", len(rows), sum(map(len, rows.values())), tables.build_s)
    with contextlib.suppress(OSError):  # the cache is an optimization
        atomic_write_text(path, json.dumps(tables.to_dict(), indent=1))
    return tables


@contextlib.contextmanager
def _quiet_bench() -> Iterator[None]:
    """The short table measurements are noisy by design: their warnings are not printed one by one."""
    bench_log = logging.getLogger("edgeopt.bench")
    level = bench_log.level
    bench_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bench_log.setLevel(level)


def top_contributors(items: dict[str, float], n: int = 3) -> list[tuple[str, float]]:
    return sorted(items.items(), key=lambda kv: -kv[1])[:n]


def fmt_ms(ms: float) -> str:
    return f"{ms:.3f}" if math.isfinite(ms) else "inf"


__all__ = ["Candidate", "TABLE_BENCH", "Tables", "build_tables", "fmt_ms", "kl", "ladder", "table_key",
           "measured_subset", "top_contributors"]
