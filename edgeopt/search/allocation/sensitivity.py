"""The tables' sensitivities: KL(teacher || model) on a calibration batch (at most :data:`CALIBRATION`
training samples, classes taken in turn) when only one layer is replaced (SVD / TT-SVD initialized by
``decompose``). They get a budget of work (:data:`SENSITIVITY_WORK` multiply-adds of forward passes,
about 30-40 s on a 2-core host): the batch shrinks, down to :data:`MIN_CALIBRATION` samples, on models
whose forward pass is costly, and below that the per-layer formats are measured at every other power of
two (:func:`calibration_plan`). A count of work, not a timing: a busy host builds the same tables as a
quiet one (timed, the batch of one ViT came out at 219, 235 and 249 samples in three compiles under load,
and each gave other sensitivities).
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
SENSITIVITY_WORK = 1.0e12  # multiply-adds per sample x samples x rungs measured, at most (above: a smaller batch)
GRAPH_LEVEL_MEASURED = 3  # rungs of a graph-level format (prune) whose KL is computed per layer (one graph traced each)


def kl(teacher_logits: Any, logits: Any) -> float:
    import torch

    p = torch.log_softmax(teacher_logits, -1)
    q = torch.log_softmax(logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def calibration_plan(rungs: int, coarse_rungs: int, macs: int, work: float = SENSITIVITY_WORK) -> tuple[int, bool]:
    """(samples in the batch, whether to measure the coarse rungs only) for ``rungs`` rungs to measure
    (``coarse_rungs`` of them coarse) on a model of ``macs`` multiply-adds per sample: as many samples as
    ``work`` allows, between :data:`MIN_CALIBRATION` and :data:`CALIBRATION`; the coarse rungs only (on
    the smallest batch) when even the smallest batch would exceed it."""
    per_batch = max(1, rungs) * max(1, int(macs))
    n = int(min(CALIBRATION, max(MIN_CALIBRATION, work // per_batch)))
    return n, n * per_batch > work and coarse_rungs < rungs


def fill_sensitivities(teacher: Any, task: Any, tables: Tables, work: float = SENSITIVITY_WORK) -> None:
    """KL(teacher || model with one layer replaced) for every candidate, on as many calibration samples
    (``MIN_CALIBRATION``..``CALIBRATION``) as ``work`` multiply-adds allow (:func:`calibration_plan`),
    on all cores. The rungs not measured are interpolated (:func:`_between`)."""
    import os

    import torch

    from edgeopt.compiler.decompose import OneLayerStudents, decompose, plan_cost

    X = torch.as_tensor(task.X_train[balanced_order(task.y_train, CALIBRATION)])
    fp32 = {name: [c for c in cs if precision_of(c.entry) == "fp32"] for name, cs in tables.layers.items()}
    rungs = sum(len(_kl_measured(cs)) for cs in fp32.values())
    coarse_rungs = sum(len(_kl_measured(cs, coarse=True)) for cs in fp32.values())
    macs = int(plan_cost(teacher, {}, task.example_input).macs)
    n, coarse = calibration_plan(rungs, coarse_rungs, macs, work)
    X = X[:n]
    threads = torch.get_num_threads()
    cores = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    measured = 0
    try:
        with torch.no_grad():
            use = fastest_threads(teacher, X, cores)
            torch.set_num_threads(use)
            t_logits = teacher(X)
            students = OneLayerStudents(teacher, task.example_input)
            for name, cands in fp32.items():
                for c in _kl_measured(cands, coarse=coarse):
                    measured += 1
                    if students.supports(c.entry):
                        with students.replaced(name, c.entry) as student:
                            c.sensitivity = max(0.0, kl(t_logits, student(X)))
                    else:  # a graph-level format (prune) narrows its consumers too: a whole copy
                        student = decompose(teacher, {name: c.entry}, example_input=task.example_input).eval()
                        c.sensitivity = max(0.0, kl(t_logits, student(X)))
                _between(cands)
    finally:
        torch.set_num_threads(threads)
    tables.calibration = n
    tables.timings["sensitivity_rungs"] = {"measured": measured, "of": rungs, "coarse": coarse, "threads": use}
    if any(precision_of(c.entry) == "int8" for cs in tables.layers.values() for c in cs):
        int8_sensitivities(teacher, task, tables, X, threads=use)


def fastest_threads(model: Any, X: Any, cores: int) -> int:
    """1 or ``cores`` torch threads, whichever runs ``model`` on ``X`` faster now (the least of two passes
    each). On a busy host every parallel region waits for its slowest thread, and a thread whose core is
    taken waits a whole time slice: MobileNetV3 on 48 samples with one of two cores busy ran in 170-185 ms
    on 1 thread and 230-296 ms (one pass 964 ms) on 2, and its sensitivities took 339 s under load against
    77 s quiet. Only the speed depends on it, not the sensitivities."""
    import torch

    if cores <= 1:
        return 1
    took = {}
    for th in (cores, 1):
        torch.set_num_threads(th)
        model(X[:2])
        took[th] = min(_seconds(model, X) for _ in range(2))
    return min(took, key=took.__getitem__)


def _seconds(model: Any, X: Any) -> float:
    t0 = time.perf_counter()
    model(X)
    return time.perf_counter() - t0


def int8_sensitivities(teacher: Any, task: Any, tables: Tables, X: Any, threads: int = 0) -> None:
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

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)  # 0: onnxruntime's default (every core)

        def run(p: Path) -> Any:
            sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
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


def _kl_measured(cands: list[Candidate], coarse: bool = False) -> list[Candidate]:
    """The rungs whose KL is computed: powers of two of the per-layer formats (``coarse``: every other
    one, counted down from each format's largest); of a graph-level format (one dependency graph traced
    per rung) its first, middle and last. :func:`_between` fills the rest."""
    graph = [i for i, c in enumerate(cands) if graph_level(c.entry)]
    chosen = set(spread(graph, GRAPH_LEVEL_MEASURED))
    out = [
        c
        for i, c in enumerate(cands)
        if c.entry and (i in chosen if graph_level(c.entry) else power_of_two(rung_rank(c.entry)))
    ]
    if coarse:
        kept = set()
        for fmt in {c.entry["format"] for c in out if not graph_level(c.entry)}:
            same = sorted((c for c in out if c.entry["format"] == fmt), key=lambda c: -rung_rank(c.entry))
            kept.update(id(c) for c in same[::2])
        out = [c for c in out if graph_level(c.entry) or id(c) in kept]
    return out


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
    "SENSITIVITY_WORK",
    "balanced_order",
    "calibration_plan",
    "fill_sensitivities",
    "int8_sensitivities",
    "kl",
]
