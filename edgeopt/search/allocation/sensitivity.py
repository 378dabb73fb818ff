"""The tables' sensitivities: KL(teacher || model) on a calibration batch (at most :data:`CALIBRATION`
training samples, classes taken in turn) when only one layer is replaced (SVD / TT-SVD initialized by
``decompose``). They get a time budget (:data:`SENSITIVITY_BUDGET_S`): the batch shrinks, down to
:data:`MIN_CALIBRATION` samples, on models whose forward pass is slow.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from edgeopt.compiler.formats import precision_of, with_precision
from edgeopt.search.allocation.tables import Candidate, Tables, graph_level, power_of_two, rung_rank, spread

CALIBRATION = 256  # samples of the sensitivity batch at most ...
MIN_CALIBRATION = 48  # ... and at least
SENSITIVITY_BUDGET_S = 40.0  # the forward passes of the sensitivities take about this long at most
GRAPH_LEVEL_MEASURED = 3  # rungs of a graph-level format (prune) whose KL is computed per layer (one graph traced each)


def kl(teacher_logits: Any, logits: Any) -> float:
    import torch

    p = torch.log_softmax(teacher_logits, -1)
    q = torch.log_softmax(logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


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
    rungs = sum(len(_kl_measured([c for c in cs if precision_of(c.entry) == "fp32"])) for cs in tables.layers.values())
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
                fp32 = [c for c in cands if precision_of(c.entry) == "fp32"]
                for c in _kl_measured(fp32):
                    student = decompose(teacher, {name: c.entry}, example_input=task.example_input).eval()
                    c.sensitivity = max(0.0, kl(t_logits, student(X)))
                _between(fp32)
    finally:
        torch.set_num_threads(threads)
    tables.calibration = n
    if any(precision_of(c.entry) == "int8" for cs in tables.layers.values() for c in cs):
        int8_sensitivities(teacher, task, tables, X)


def int8_sensitivities(teacher: Any, task: Any, tables: Tables, X: Any) -> None:
    """The int8 rungs' KL, measured on the real thing: the teacher exported, only one layer quantized by
    onnxruntime (static QDQ, calibrated on training samples), run on the calibration batch against the
    fp32 export. A rung that is also narrowed or low-rank adds its fp32 twin's KL (small drifts add)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort

    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_layers

    x = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    calib = np.asarray(task.X_train[balanced_order(task.y_train, 64)], dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="edgeopt-q8-") as tmp:
        path = Path(tmp) / "teacher.onnx"
        export_onnx(teacher, task.example_input, path, verify=False)

        def run(p: Path) -> Any:
            sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            return torch_of(sess.run(None, {sess.get_inputs()[0].name: x})[0])

        ref = run(path)
        for name, cands in tables.layers.items():
            q = quantize_layers(path, Path(tmp) / "q.onnx", [name], calibration=calib)
            own = max(0.0, kl(ref, run(q)))
            twin = {json_key(c.entry): c.sensitivity for c in cands if precision_of(c.entry) == "fp32"}
            for c in cands:
                if precision_of(c.entry) == "int8":
                    c.sensitivity = own + twin.get(json_key(with_precision(c.entry, "fp32")), 0.0)


def torch_of(a: Any) -> Any:
    import torch

    return torch.as_tensor(a)


def json_key(entry: Any) -> str:
    import json

    return json.dumps(entry or {}, sort_keys=True)


def _kl_measured(cands: list[Candidate]) -> list[Candidate]:
    """The rungs whose KL is computed: powers of two of the per-layer formats; of a graph-level format
    (one dependency graph traced per rung) its first, middle and last. :func:`_between` fills the rest."""
    graph = [i for i, c in enumerate(cands) if graph_level(c.entry)]
    chosen = set(spread(graph, GRAPH_LEVEL_MEASURED))
    return [
        c
        for i, c in enumerate(cands)
        if c.entry and (i in chosen if graph_level(c.entry) else power_of_two(rung_rank(c.entry)))
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
        r, fmt = rung_rank(c.entry), c.entry["format"]
        known = {
            rung_rank(o.entry): o.sensitivity
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


__all__ = [
    "CALIBRATION",
    "MIN_CALIBRATION",
    "SENSITIVITY_BUDGET_S",
    "balanced_order",
    "fill_sensitivities",
    "int8_sensitivities",
    "kl",
]
