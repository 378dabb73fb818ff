"""Per-layer tables, built before any training: for each decomposable layer and each candidate on a
ladder of formats and ranks, its latency on the target and its sensitivity (issue 9, item 1).

- latency: the decomposed layer alone, wrapped in a module with the layer's real input shape,
  exported and benched on the target (predicted or measured, like every bench); the cost of an
  empty graph of the same input (a ReLU) is subtracted, so that the layers add up to the graph;
- sensitivity: KL(teacher || model) on a calibration batch (at most 256 training samples) when only
  that layer is replaced (SVD / TT-SVD initialized by ``decompose``);
- additivity: isolated layers do not add up to a graph (fusions across layers, an attention module
  rebuilt when its projections are decomposed, dispatch between nodes), so two whole graphs are
  measured, dense and the fastest plan, and the table's prediction becomes
  ``rest + scale x sum(layers)`` through both; a third graph (each layer at its middle rung) is a
  held-out check, and its error is in the report (``Tables.additivity``);
- rest: what that fit leaves to the parts that cannot be decomposed.

Latencies first: a budget below the fastest plan (measured as a whole graph) is refused by the
``check`` callback before any sensitivity is computed. Sensitivities then get a time budget
(:data:`SENSITIVITY_BUDGET_S`): the calibration batch shrinks, down to :data:`MIN_CALIBRATION`
samples, on models whose forward pass is slow.

Cached in the out dir (``tables.json``), keyed by a hash of the model, the input and the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
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

SCHEMA = "edgeopt.tables/3"  # 3: prune rungs (measured in the whole graph)
TABLE_BENCH = {"min_iters": 20, "min_time_s": 0.05, "max_iters": 500}
GRAPH_BENCH = {"min_iters": 50, "min_time_s": 0.3, "max_iters": 5000}  # the whole graphs of the additivity fit
MAX_CANDIDATES = 6  # latencies measured per layer, dense included (a bench is a child process: ~0.15 s)
CALIBRATION = 256  # samples of the sensitivity batch at most ...
MIN_CALIBRATION = 48  # ... and at least
SENSITIVITY_BUDGET_S = 40.0  # the forward passes of the sensitivities take about this long at most
SCALE_RANGE = (0.25, 4.0)  # the additivity fit's scale is clipped to this range
GRAPH_LEVEL_MEASURED = 3  # rungs of a graph-level format (prune) whose KL is computed per layer (one graph traced each)


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
    additivity: dict[str, Any] = field(default_factory=dict)  # the whole graphs measured against the table
    calibration: int = 0  # samples the sensitivities were computed on
    timings: dict[str, float] = field(default_factory=dict)  # seconds: latencies, additivity, sensitivity

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "key": self.key,
            "dense_ms": self.dense_ms,
            "rest_ms": self.rest_ms,
            "build_s": self.build_s,
            "fixed_params": self.fixed_params,
            "notes": self.notes,
            "additivity": self.additivity,
            "calibration": self.calibration,
            "timings": self.timings,
            "layers": {n: [asdict(c) for c in cands] for n, cands in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tables:
        layers = {n: [Candidate(**c) for c in cands] for n, cands in d["layers"].items()}
        return cls(
            layers,
            float(d["dense_ms"]),
            float(d["rest_ms"]),
            float(d["build_s"]),
            d.get("key", ""),
            True,
            int(d.get("fixed_params", 0)),
            list(d.get("notes", [])),
            dict(d.get("additivity") or {}),
            int(d.get("calibration", 0)),
            dict(d.get("timings") or {}),
        )

    def summary(self) -> dict[str, Any]:
        """What the report shows of the tables: size, build time, the additivity check."""
        return {
            "layers": len(self.layers),
            "candidates": sum(map(len, self.layers.values())),
            "build_s": self.build_s,
            "cached": self.cached,
            "dense_ms": self.dense_ms,
            "rest_ms": self.rest_ms,
            "calibration_samples": self.calibration,
            "timings": self.timings,
            "additivity": self.additivity,
            "notes": self.notes,
        }

    def report(self, plan: dict[str, Any], measured_ms: float | None) -> dict[str, Any]:
        """:meth:`summary`, the shipped ``plan``'s table latency against ``measured_ms`` (one more
        additivity check, on the plan that matters; None: not comparable), and per layer the chosen
        rung and why, in the table's terms."""
        out = self.summary()
        predicted = self.latency_of(plan)
        if predicted is not None and measured_ms:
            out["shipped"] = {
                "table_ms": round(predicted, 5),
                "measured_ms": round(measured_ms, 5),
                "error_pct": round(100 * (predicted / measured_ms - 1), 2),
            }
        out["rows"] = []
        for name, cands in self.layers.items():
            hit = next((c for c in cands if c.entry == (plan.get(name) or {})), cands[0])
            out["rows"].append(
                {
                    "layer": name,
                    "candidates": len(cands),
                    "dense_ms": round(cands[0].latency_ms, 5),
                    "chosen": hit.label,
                    "chosen_ms": round(hit.latency_ms, 5),
                    "sensitivity": hit.sensitivity,
                    "why": _why(cands, hit),
                }
            )
        return out

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


def _why(cands: list[Candidate], hit: Candidate) -> str:
    """Why a layer ships as it does, in the table's terms."""
    if hit.entry:
        return f"saves {cands[0].latency_ms - hit.latency_ms:+.4f} ms against dense in the table"
    if min(c.latency_ms for c in cands) >= cands[0].latency_ms:
        return "dense: no rank of any format is faster than dense here"
    return "dense: under this budget its cheaper rungs cost more sensitivity than elsewhere"


def ladder_ranks(hi: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to ``hi``: powers of two and the rungs half way between
    (in log rank), so that an allocation can fit its budget more closely than a factor of two."""
    ranks = {r for k in range(20) for r in (2**k, 3 * 2**k // 2) if 1 <= r <= hi}
    return sorted(ranks)


def _power_of_two(r: int) -> bool:
    return r & (r - 1) == 0


def ladder(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """Dense, then for each registered format with a rank the ranks of :func:`ladder_ranks` up to its
    ``max_search_rank`` (the layer's own format list permitting)."""
    from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler, registered_handlers

    allowed = getattr(spec, "formats", None)
    out: list[tuple[str, dict[str, Any]]] = [("dense", {})]
    for h in registered_handlers():
        if h.name == DEFAULT_FORMAT or not h.has_rank or (allowed is not None and h.name not in allowed):
            continue
        hi = h.max_search_rank(spec)
        ranks = h.search_ranks(spec) if hi >= 1 else None
        out += [(f"{h.name} {r}", get_handler(h.name).plan_entry(r)) for r in (ranks or ladder_ranks(hi))]
    return out


def _graph_level(entry: dict[str, Any]) -> bool:
    from edgeopt.compiler.formats import get_handler

    return bool(entry) and get_handler(entry["format"]).graph_level


def _spread(idx: list[int], room: int) -> list[int]:
    """``room`` of ``idx``: the first, the last and evenly spaced ones between."""
    if len(idx) <= room:
        return list(idx)
    step = (len(idx) - 1) / (room - 1)
    return [idx[round(j * step)] for j in range(room)]


def measured_subset(rungs: list[tuple[str, dict[str, Any]]], limit: int = MAX_CANDIDATES) -> set[int]:
    """Which rungs get their latency measured: dense, and per format the smallest and largest ranks
    and log-evenly spaced ones between, ``limit`` in all; the others are interpolated in rank."""
    by_fmt: dict[str, list[int]] = {}
    for i, (_, entry) in enumerate(rungs):
        if entry:
            by_fmt.setdefault(entry["format"], []).append(i)
    room = max(2, (limit - 1) // max(1, len(by_fmt)))
    keep = {0}
    for idx in by_fmt.values():  # a graph-level format's rungs are priced from the others (price_graph_rungs)
        keep.update(idx if _graph_level(rungs[idx[0]][1]) else _spread(idx, room))
    return keep


def _interpolate(rows: list[Candidate], measured: set[int]) -> None:
    """Latency of the rungs not measured: linear in rank between the measured neighbours of its format."""
    for i, c in enumerate(rows):
        if i in measured:
            continue
        fmt, r = c.entry["format"], _rank(c.entry)
        same = [
            (_rank(rows[j].entry), rows[j].latency_ms) for j in sorted(measured) if rows[j].entry.get("format") == fmt
        ]
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


def _latency_rows(teacher: Any, name: str, spec: Any, shape: tuple[int, ...], ctx: dict[str, Any]) -> list[Candidate]:
    """The layer's rungs with their params and latencies (measured or interpolated); sensitivity not yet."""
    from edgeopt.compiler.decompose import decompose, plan_cost

    rungs = _buildable(teacher, name, ladder(spec), ctx)
    measured = measured_subset(rungs)
    rows: list[Candidate] = []
    for i, (label, entry) in enumerate(rungs):
        lat = math.nan
        if _graph_level(entry):
            pass  # priced once every layer's dense latency is known (price_graph_rungs)
        elif i in measured:
            student = decompose(teacher, {name: entry} if entry else {}).eval()
            alone = _Alone.make(student.get_submodule(name))
            lat = max(0.0, bench_module(alone, shape, ctx["target"], ctx["tmp"], ctx["pct"]) - ctx["floor"][shape])
        params = (
            int(plan_cost(teacher, {name: entry}, ctx["example"]).layers[name].params) if entry else int(spec.params)
        )
        rows.append(Candidate(label, entry, params, lat, math.nan if entry else 0.0))
    _interpolate(rows, measured)
    return rows


def _buildable(
    teacher: Any, name: str, rungs: list[tuple[str, dict[str, Any]]], ctx: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """``rungs`` less those of a graph-level format that cannot be applied to this layer (pruning the
    classifier changes the output; an attention projection's heads break): tried once, at its
    smallest rank; the reason goes to the tables' notes."""
    from edgeopt.compiler.decompose import decompose
    from edgeopt.errors import ModelError

    out, refused = [], set()
    coupled = ctx.setdefault("coupled", {})  # layer -> the earlier layer whose pruning already prunes it
    for label, entry in rungs:
        fmt = entry.get("format")
        if fmt in refused:
            continue
        if _graph_level(entry) and name in coupled:
            refused.add(fmt)  # one choice per dependency group: the group's first layer carries it
            continue
        if _graph_level(entry) and fmt not in ctx.setdefault("tried", {}).setdefault(name, set()):
            ctx["tried"][name].add(fmt)
            try:
                student = decompose(teacher, {name: entry}, example_input=ctx["example"])
            except ModelError as exc:
                refused.add(fmt)
                ctx.setdefault("refused", []).append(f"{name}: no {fmt}: {exc}")
                continue
            narrowed, consumers = _narrowed(teacher, student, name)
            for other in narrowed:
                coupled.setdefault(other, name)
            ctx.setdefault("affected", {})[name] = [name, *narrowed, *consumers]
        out.append((label, entry))
    return out


def _narrowed(teacher: Any, student: Any, name: str) -> tuple[list[str], list[str]]:
    """The layers other than ``name`` whose output channels ``student`` lost (its dependency group),
    and those that lost input channels only (its consumers)."""

    def width(m: Any, which: str) -> int:
        return int(getattr(m, f"{which}_features", 0) or getattr(m, f"{which}_channels", 0))

    mods = dict(teacher.named_modules())
    out, cons = [], []
    for n, m in student.named_modules():
        if n == name or n not in mods or not width(m, "out"):
            continue
        if width(m, "out") < width(mods[n], "out"):
            out.append(n)
        elif width(m, "in") < width(mods[n], "in"):
            cons.append(n)
    return out, cons


def price_graph_rungs(rows: dict[str, list[Candidate]], ctx: dict[str, Any]) -> None:
    """A prune rung's latency in the table's terms, from the dense latencies measured alone: keeping a
    share ``r`` of the layer's channels scales the layer and every layer it narrows (its dependency
    group's outputs, its consumers' inputs) by ``r``, so the rung is
    ``r * own - (1 - r) * sum(others)`` (negative when the consumers save more than the layer costs).
    Measuring each rung as a whole graph instead (dense graph less pruned graph) was tried first: on
    mobilenet a layer saves 1-3 % of a 1 ms graph, below the noise of two short benches, and the
    knapsack picked the rungs whose noise looked best (its plans measured 0.3 ms over the table).
    Depthwise convs and BatchNorm, which are not in the table, shrink too: a saving not counted, so
    the price errs slow; the additivity fit and the screens correct the scale."""
    dense = {n: cands[0].latency_ms for n, cands in rows.items()}
    for name, cands in rows.items():
        others = sum(dense.get(m, 0.0) for m in ctx.get("affected", {}).get(name, [name]) if m != name)
        for c in cands:
            if _graph_level(c.entry):
                r = int(c.entry["rank"]) / ctx["widths"][name]
                c.latency_ms = r * dense[name] - (1 - r) * others


def _refusal_notes(refused: list[str], coupled: dict[str, str]) -> list[str]:
    """One note for the layers a graph-level format could not be applied to (vit: 17 of them), one
    for the layers pruned only with their group's first layer."""
    out = []
    if refused:
        names = [r.split(": ", 1)[0] for r in refused]
        out.append(
            f"{len(refused)} layer(s) cannot be pruned ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); "
            f"the first: {refused[0]}"
        )
    if coupled:
        out.append(
            "pruned only with their dependency group's first layer: "
            + ", ".join(f"{n} (with {root})" for n, root in coupled.items())
        )
    return out


def _graph_ms(teacher: Any, plan: dict[str, Any], ctx: dict[str, Any], name: str, repeats: int = 2) -> float:
    """The whole graph of ``plan`` exported and benched (longer than a layer's bench), the least of
    ``repeats`` runs: noise on a shared host only ever adds to a percentile, and the fastest plan's
    figure decides a refusal (vit's measured 97 µs in one run and 116 µs in the next)."""
    import torch

    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    path = ctx["tmp"] / f"{name}.onnx"
    export_onnx(
        decompose(teacher, plan, example_input=ctx["example"]).eval(),
        torch.as_tensor(ctx["example"]),
        path,
        verify=False,
    )
    return min(float(bench(path, ctx["target"], **GRAPH_BENCH).latency_at(ctx["pct"])) for _ in range(repeats))


def _at(tables: Tables, pick: Any) -> dict[str, int]:
    """Layer -> candidate index chosen by ``pick(list of latencies)``."""
    return {n: pick([c.latency_ms for c in cands]) for n, cands in tables.layers.items()}


def fit_additivity(tables: Tables, teacher: Any, ctx: dict[str, Any]) -> None:
    """Measure the dense graph, the fastest plan and a middle plan whole; scale the layers' latencies
    and set the rest so that the table gives the first two exactly; the third is the held-out check."""
    fastest = _at(tables, lambda lats: min(range(len(lats)), key=lats.__getitem__))
    middle = _at(tables, lambda lats: sorted(range(len(lats)), key=lats.__getitem__)[len(lats) // 2])
    sums = {
        k: sum(tables.layers[n][i].latency_ms for n, i in choice.items())
        for k, choice in (("dense", dict.fromkeys(tables.layers, 0)), ("fastest", fastest), ("middle", middle))
    }
    measured = {
        "dense": tables.dense_ms,
        "fastest": _graph_ms(teacher, tables.plan_of(fastest), ctx, "fastest"),
        "middle": _graph_ms(teacher, tables.plan_of(middle), ctx, "middle"),
    }
    span = sums["dense"] - sums["fastest"]
    scale, fit = 1.0, "none: the fastest plan is no faster than dense, or the layers barely differ"
    if span > 0.02 * measured["dense"] and measured["dense"] > measured["fastest"]:
        exact = (measured["dense"] - measured["fastest"]) / span
        scale = min(max(exact, SCALE_RANGE[0]), SCALE_RANGE[1])
        fit = "through both graphs" if scale == exact else f"scale clipped to {scale} (fitted {exact:.3g})"
    if measured["fastest"] >= measured["dense"]:
        tables.notes.append(
            f"the fastest plan by the table measures {measured['fastest']:.4f} ms as one graph, no faster than dense "
            f"({measured['dense']:.4f} ms): the isolated layers' latencies do not hold in this graph on this target, "
            "so the allocation's latency is a guess and the screen decides"
        )
        log.warning("tables: %s", tables.notes[-1])
    rest = measured["dense"] - scale * sums["dense"]
    if rest < 0:  # the layers alone take longer than the graph: no rest, the scale fits both graphs in ratio
        ratios = [sums[k] / measured[k] for k in ("dense", "fastest") if measured[k] > 0 and sums[k] > 0]
        scale = sum(ratios) / sum(r * r for r in ratios) if ratios else 1.0
        scale, rest = min(max(scale, SCALE_RANGE[0]), SCALE_RANGE[1]), 0.0
        fit = "in ratio, no rest: the isolated layers take longer than the graph"
    if scale != 1.0:
        for cands in tables.layers.values():
            for c in cands:
                c.latency_ms *= scale
    before = {k: measured["dense"] - sums["dense"] + sums[k] for k in sums}  # isolated sums plus the dense rest
    after = {k: rest + scale * sums[k] for k in sums}
    tables.rest_ms = rest
    tables.additivity = {
        "scale": round(scale, 4),
        "rest_ms": round(rest, 5),
        "fit": fit,
        "graphs": {
            k: {
                "measured_ms": round(measured[k], 5),
                "isolated_sum_ms": round(before[k], 5),
                "table_ms": round(after[k], 5),
                "error_pct": round(100 * (after[k] / measured[k] - 1), 2),
            }
            for k in sums
        },
        "held_out": "middle",
    }


def _forward_s(model: Any, X: Any) -> float:
    import torch

    with torch.no_grad():
        model(X[:2])
        t0 = time.perf_counter()
        model(X)
    return time.perf_counter() - t0


def fill_sensitivities(teacher: Any, task: Any, tables: Tables, budget_s: float = SENSITIVITY_BUDGET_S) -> None:
    """KL(teacher || model with one layer replaced) for every candidate, on as many calibration samples
    (``MIN_CALIBRATION``..``CALIBRATION``) as fit ``budget_s`` of forward passes, on all cores."""
    import os

    import torch

    from edgeopt.compiler.decompose import decompose

    X = torch.as_tensor(task.X_train[balanced_order(task.y_train, CALIBRATION)])
    rungs = sum(len(_kl_measured(cs)) for cs in tables.layers.values())
    threads = torch.get_num_threads()
    torch.set_num_threads(
        max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )
    try:
        probe = min(32, len(X))
        per_sample = _forward_s(teacher, X[:probe]) / probe
        n = int(min(len(X), max(MIN_CALIBRATION, budget_s / max(1, rungs) / max(per_sample, 1e-9))))
        X = X[:n]
        with torch.no_grad():
            t_logits = teacher(X)
            for name, cands in tables.layers.items():
                for c in _kl_measured(cands):
                    student = decompose(teacher, {name: c.entry}, example_input=task.example_input).eval()
                    c.sensitivity = max(0.0, kl(t_logits, student(X)))
                _between(cands)
    finally:
        torch.set_num_threads(threads)
    tables.calibration = n


def _kl_measured(cands: list[Candidate]) -> list[Candidate]:
    """The rungs whose KL is computed: powers of two of the per-layer formats; of a graph-level format
    (one dependency graph traced per rung) its first, middle and last. :func:`_between` fills the rest."""
    graph = [i for i, c in enumerate(cands) if _graph_level(c.entry)]
    spread = set(_spread(graph, GRAPH_LEVEL_MEASURED))
    return [
        c
        for i, c in enumerate(cands)
        if c.entry and (i in spread if _graph_level(c.entry) else _power_of_two(_rank(c.entry)))
    ]


def balanced_order(y: Any, n: int) -> Any:
    """Indices of up to ``n`` training samples, the classes taken in turn (then the rest in order):
    KL averaged over the training distribution is the majority class's drift, while F1 weighs every
    class (imbalanced, 5 % positives: the allocation put fc3 at rank 1 and lost 4.6 pt of F1)."""
    import numpy as np

    y = np.asarray(y).reshape(len(y), -1)[:, 0] if np.ndim(y) > 1 else np.asarray(y)
    if y.dtype.kind not in "iub" or len(y) == 0:
        return np.arange(min(n, len(y)))
    per_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    order = [int(i) for row in itertools.zip_longest(*per_class) for i in row if i is not None]
    return np.asarray(order[:n])


def _between(cands: list[Candidate]) -> None:
    """Sensitivity of the rungs between two powers of two: log-linear in log rank between them (the
    drift of a truncated SVD falls about geometrically with rank); linear where one of them is 0."""
    for c in cands:
        if not c.entry or not math.isnan(c.sensitivity):
            continue
        r, fmt = _rank(c.entry), c.entry["format"]
        known = {
            _rank(o.entry): o.sensitivity
            for o in cands
            if o.entry and o.entry["format"] == fmt and not math.isnan(o.sensitivity)
        }
        lo = max((k for k in known if k < r), default=None)
        hi = min((k for k in known if k > r), default=None)
        if lo is None or hi is None:
            c.sensitivity = known[lo if hi is None else hi]
            continue
        w = math.log(r / lo) / math.log(hi / lo)
        a, b = known[lo], known[hi]
        c.sensitivity = math.exp((1 - w) * math.log(a) + w * math.log(b)) if a > 0 and b > 0 else (1 - w) * a + w * b


def build_tables(
    teacher: Any, task: Any, target: Any, out: Path, layers: dict[str, Any], *, check: Any = None
) -> Tables:
    """The tables of ``teacher`` on ``target`` (read from ``out/tables.json`` when its key matches).
    ``check(tables)`` runs when the latencies are known, before the sensitivities (a refusal raises there)."""
    import torch

    from edgeopt.compiler.decompose import plan_cost

    example = torch.as_tensor(task.X_train[:1])
    key = table_key(teacher, example, target)
    cached = _cached(Path(out) / "tables.json", key)
    if cached is not None:
        log.info("tables: read from %s (built in %.1f s)", Path(out) / "tables.json", cached.build_s)
        if check is not None:
            check(cached)
        return cached
    t0 = time.perf_counter()
    teacher = teacher.eval()
    shapes = input_shapes(teacher, example, list(layers))
    with torch.no_grad(), _quiet_bench(), tempfile.TemporaryDirectory(prefix="edgeopt-tables-") as tmpdir:
        ctx: dict[str, Any] = {
            "target": target,
            "tmp": Path(tmpdir),
            "pct": float(target.budget.latency_percentile or 95),
            "example": task.example_input,
            "floor": {},
        }
        for shape in set(shapes.values()):
            ctx["floor"][shape] = bench_module(_Alone.make(torch.nn.ReLU()), shape, target, ctx["tmp"], ctx["pct"])
        ctx["widths"] = {name: int(spec.out_size) for name, spec in layers.items()}
        rows = {name: _latency_rows(teacher, name, spec, shapes[name], ctx) for name, spec in layers.items()}
        price_graph_rungs(rows, ctx)
        t1 = time.perf_counter()
        dense_ms = _graph_ms(teacher, {}, ctx, "dense")
        fixed = int(plan_cost(teacher, {}, task.example_input).params) - sum(int(s.params) for s in layers.values())
        tables = Tables(
            rows,
            dense_ms,
            0.0,
            0.0,
            key,
            False,
            fixed,
            notes=_refusal_notes(ctx.get("refused", []), ctx.get("coupled", {})),
        )
        fit_additivity(tables, teacher, ctx)
    t2 = time.perf_counter()
    tables.timings = {"latency_s": round(t1 - t0, 2), "additivity_s": round(t2 - t1, 2)}
    log.info(
        "tables: %d layers, latencies in %.1f s; additivity scale %.2f, held-out error %+.1f%%",
        len(rows),
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
        sum(len(c) - 1 for c in rows.values()),
        tables.calibration,
        tables.timings["sensitivity_s"],
    )
    with contextlib.suppress(OSError):  # the cache is an optimization
        atomic_write_text(Path(out) / "tables.json", json.dumps(tables.to_dict(), indent=1))
    return tables


def _cached(path: Path, key: str) -> Tables | None:
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key and cached.get("schema") == SCHEMA:
            return Tables.from_dict(cached)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


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


__all__ = [
    "Candidate",
    "TABLE_BENCH",
    "Tables",
    "build_tables",
    "fill_sensitivities",
    "fit_additivity",
    "fmt_ms",
    "kl",
    "ladder",
    "measured_subset",
    "table_key",
    "top_contributors",
]
