"""edgeopt against what a user would otherwise ship, side by side, in one run on one machine.

Per bundled example (digits-mlp, digits-cnn, imbalanced), six rows, every one scored with
onnxruntime on the same test split and measured on THIS host at batch 1, one onnxruntime thread
(``benchmarks/host-1t.toml``), with the rpi4 p50 edgeopt predicts from that measurement for context:

1. dense fp32 ONNX (the input model, exported as edgeopt exports it),
2. onnxruntime int8 dynamic quantization of the dense model (``quantize_dynamic``; static QDQ for Conv),
3. uniform-rank SVD: every decomposable layer low-rank at one rank r, r chosen with ``plan_cost`` so
   the parameter count is closest to edgeopt's fp32 artifact's, distilled for as many epochs as
   edgeopt's final fine-tune (layers where r would not save anything stay dense),
4. uniform-rank TT, likewise,
5. ``edgeopt.compile`` fp32 only (the demo's target and settings),
6. ``edgeopt.compile`` with int8 in the search.

Plus a wide model (a 4096-wide hidden layer on a synthetic make_classification task) where the
factorized formats are compared with dense at matched parameter counts.

Registered twice: ``edgeopt_vs_baselines_on_examples`` (the bundled examples and the wide model) and
``edgeopt_vs_baselines_on_architectures`` (the real architectures, with the refusal check):

    flock /tmp/edgeopt-bench.lock python -m benchmarks edgeopt_vs_baselines_on_examples [--quick]

The whole run should hold the benchmark lock: compile itself benchmarks (its latency screen), so every
timing in the run belongs under it. Artifacts (ONNX files, studies) go to ``--work``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.suite import HOST_1T, Outcome

EXAMPLES = ("digits-mlp", "digits-cnn", "imbalanced")
# The demo's target for every example. Its budgets are sized for digits-mlp; the other examples get
# budgets of the same kind sized to them (what a user would write for that model on that device).
TARGET = "rpi4-demo"  # rpi4 with the demo's tight budgets
BUDGETS: dict[str, dict[str, float]] = {
    "digits-mlp": {},  # rpi4-demo as shipped: p95 0.5 ms, 0.14 MiB, 32 MiB, min F1 0.90 (the demo)
    # dense CNN: 0.45-0.60 ms p50 predicted on rpi4, 1.2 MiB: a budget that needs the convs faster
    "digits-cnn": {"latency_ms": 0.45, "model_size_mb": 0.3, "min_f1": 0.95},
    "imbalanced": {"latency_ms": 0.15, "min_f1": 0.5},  # dense: 0.18 ms; binary F1 of the rare class is 0.69 on val
}
# Search settings: digits-mlp gets exactly the demo's (`edgeopt demo`: 60 trials, 120 s).
SEARCH = {"digits-mlp": (60, 120.0), "digits-cnn": (40, 75.0), "imbalanced": (40, 45.0)}
QUICK_SEARCH = (12, 25.0)
FINAL_LR = 3e-3  # compile()'s default distillation rate
PATIENCE = 10  # the wide model's students (early stopping on validation)

log = logging.getLogger("compare")


# --------------------------------------------------------------------------- measuring
def measure(path: Path, task: Any, *, quick: bool) -> dict[str, Any]:
    """Host 1-thread latency, predicted rpi4 p50, size, nodes and test metrics of one ONNX file."""
    from edgeopt.compiler.export import onnx_node_count
    from edgeopt.pipeline.evaluate import onnx_metrics
    from edgeopt.runtime.bench import bench

    host = bench(
        path, str(HOST_1T), min_iters=300 if quick else 2000, min_time_s=0.5 if quick else 2.0, max_iters=50000
    )
    rpi = bench(path, TARGET, min_iters=50 if quick else 200, min_time_s=0.2 if quick else 0.5)
    test = onnx_metrics(path, task.X_test, task.y_test, task.metric)
    return {
        "size_bytes": int(path.stat().st_size),
        "nodes": int(onnx_node_count(path)),
        "p50_ms": float(host.latency_ms["p50"]),
        "p95_ms": float(host.latency_ms["p95"]),
        "cv": float(host.cv),
        "iterations": int(host.iterations),
        "rpi4_p50_ms": float(rpi.latency_ms["p50"]),
        "rpi4_source": rpi.latency_source,
        "test_f1": float(test["f1"]),
        "test_accuracy": float(test["accuracy"]),
        "test_score": float(test["score"]),
    }


def _entry_text(entry: dict[str, Any]) -> str:
    """``lowrank 8``, ``dense``: a plan entry's format and rank, the rank from the format's handler."""
    from edgeopt.compiler.formats import get_handler

    rank = get_handler(entry["format"]).rank_of(entry)
    return entry["format"] + ("" if rank is None else f" {rank}")


def _plan_text(plan: dict[str, Any], limit: int = 8) -> str:
    """Every layer's entry for short plans; per format, the count and rank range for long ones."""
    if len(plan) <= limit:
        return ", ".join(f"{k}: {_entry_text(v)}" for k, v in plan.items())
    by: dict[str, list[int]] = {}
    for v in plan.values():
        fmt, _, rank = _entry_text(v).partition(" ")
        by.setdefault(fmt, []).append(int(rank) if rank else 0)
    parts = []
    for fmt, ranks in by.items():
        rng = (
            "" if not any(ranks) else (f" {min(ranks)}" if min(ranks) == max(ranks) else f" {min(ranks)}–{max(ranks)}")
        )
        parts.append(f"{len(ranks)}× {fmt}{rng}")
    return f"{len(plan)} layers: " + ", ".join(parts)


# --------------------------------------------------------------------------- uniform baselines
def uniform_plan(layers: dict[str, Any], fmt: str, r: int) -> dict[str, Any]:
    """Every layer that allows ``fmt`` at rank ``r`` (and saves parameters there) in ``fmt``; the rest dense."""
    from edgeopt.compiler.formats import get_handler

    plan: dict[str, Any] = {}
    for name, spec in layers.items():
        cap = (spec.max_rank or {}).get(fmt, 0)
        if fmt in spec.formats and r < cap:
            plan[name] = get_handler(fmt).plan_entry(r)
    return plan


def match_rank(model: Any, example: Any, layers: dict[str, Any], fmt: str, params: int) -> tuple[int, dict, int]:
    """The uniform rank whose plan's parameter count is closest to ``params`` (plan_cost builds nothing)."""
    from edgeopt.compiler.decompose import plan_cost

    hi = max((spec.max_rank or {}).get(fmt, 0) for spec in layers.values())
    # plan_cost is monotone in r between the points where a layer drops back to dense, so scan all r
    # (cheap: shapes only) rather than bisect across those jumps.
    best = None
    for r in range(1, max(hi, 1) + 1):
        plan = uniform_plan(layers, fmt, r)
        if not plan:
            continue
        p = plan_cost(model, plan, example).params
        if best is None or abs(p - params) < abs(best[2] - params):
            best = (r, plan, int(p))
    if best is None:
        raise RuntimeError(f"no layer accepts {fmt}")
    return best


def uniform_row(task: Any, fmt: str, target_params: int, out: Path, *, epochs: int, seed: int) -> tuple[Path, dict]:
    from edgeopt.compiler.decompose import decomposable_layers, decompose
    from edgeopt.compiler.distill import distill
    from edgeopt.compiler.export import export_onnx

    t0 = time.perf_counter()
    layers = decomposable_layers(task.model, task.example_input)
    r, plan, params = match_rank(task.model, task.example_input, layers, fmt, target_params)
    student = decompose(task.model, plan)
    # The same recipe as edgeopt's final fine-tune of its chosen plan (pipeline/ship.py): same epochs,
    # rate, cosine schedule, last-epoch weights.
    distill(
        student,
        task.model,
        (task.X_train, task.y_train),
        (task.X_val, task.y_val),
        epochs=epochs,
        lr=FINAL_LR,
        seed=seed,
        metric=task.metric,
        schedule="cosine",
        restore_best=False,
    )
    student.eval()
    path = out / f"uniform-{fmt}.onnx"
    export_onnx(student, task.example_input, path, verify=True, verify_inputs=task.X_val[:32])
    return path, {"rank": r, "plan": plan, "params": params, "compile_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------- one example
def run_example(name: str, args: SimpleNamespace, out_root: Path) -> dict[str, Any]:
    import edgeopt
    from edgeopt.compiler.decompose import plan_cost
    from edgeopt.compiler.quantize import quantize_onnx
    from edgeopt.models.examples import load_example

    task = load_example(name, seed=args.seed)
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    trials, timeout = QUICK_SEARCH if args.quick else SEARCH[name]
    trials = args.trials or trials
    timeout = args.timeout or timeout
    from edgeopt.pipeline.config import FINAL_EPOCHS

    final_epochs = 10 if args.quick else FINAL_EPOCHS
    dense_params = int(plan_cost(task.model, {}, task.example_input).params)
    rows: list[dict[str, Any]] = []

    # 5 and 6: edgeopt. Run first: the uniform baselines are sized to its artifact.
    compiled: dict[str, Any] = {}
    for label, int8 in (("edgeopt fp32", False), ("edgeopt +int8", True)):
        log.info("[%s] %s: %d trials / %.0f s", name, label, trials, timeout)
        t0 = time.perf_counter()
        res = edgeopt.compile(
            task,
            TARGET,
            trials=trials,
            timeout=timeout,
            out=out / ("edgeopt-int8" if int8 else "edgeopt-fp32"),
            seed=args.seed,
            int8=int8,
            budget=BUDGETS[name] or None,
            final_epochs=final_epochs,
            progress=False,
        )
        wall = time.perf_counter() - t0
        rep = res.report
        compiled[label] = {
            "path": res.model_path,
            "params": int(rep["best"]["params"]),
            "compile_s": wall,
            "detail": {
                "plan": res.best_plan,
                "dtype": rep["best"].get("dtype", "fp32"),
                "passed": res.passed,
                "reasons": res.reasons,
                "search": rep.get("search", {}),
                "gate_rpi4": [
                    {k: c.get(k) for k in ("name", "budget", "measured", "passed")}
                    for c in rep["best"]["budget"]["checks"]
                ],
            },
        }
    baseline = out / "edgeopt-fp32" / "baseline.onnx"

    # 1: dense fp32
    rows.append(
        {"method": "dense fp32", "params": dense_params, "compile_s": None, **measure(baseline, task, quick=args.quick)}
    )
    # 2: ORT int8 of dense
    t0 = time.perf_counter()
    q = quantize_onnx(baseline, out / "dense-int8.onnx", calibration=task.X_train[:256])
    rows.append(
        {
            "method": "ORT int8 (dense)",
            "params": dense_params,
            "compile_s": time.perf_counter() - t0,
            **measure(q, task, quick=args.quick),
        }
    )
    # 3, 4: uniform-rank SVD / TT at edgeopt's fp32 parameter count
    target_params = compiled["edgeopt fp32"]["params"]
    for fmt, label in (("lowrank", "uniform SVD"), ("tt", "uniform TT")):
        log.info("[%s] %s at ~%d params", name, label, target_params)
        try:
            path, info = uniform_row(task, fmt, target_params, out, epochs=final_epochs, seed=args.seed)
        except Exception as exc:
            rows.append({"method": label, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(
            {
                "method": f"{label} r={info['rank']}",
                "params": info["params"],
                "compile_s": info["compile_s"],
                "detail": {"plan": info["plan"]},
                **measure(path, task, quick=args.quick),
            }
        )
    for label in ("edgeopt fp32", "edgeopt +int8"):
        c = compiled[label]
        rows.append(
            {
                "method": label,
                "params": c["params"],
                "compile_s": c["compile_s"],
                "detail": c["detail"],
                **measure(c["path"], task, quick=args.quick),
            }
        )
    return {
        "example": name,
        "metric": task.metric,
        "target": TARGET,
        "budget_overrides": BUDGETS[name],
        "trials": trials,
        "timeout_s": timeout,
        "final_epochs": final_epochs,
        "rows": rows,
    }


# --------------------------------------------------------------------------- the wide model
def split(X: Any, y: Any, seed: int = 0) -> tuple[tuple[Any, Any], ...]:
    """60/20/20 train/val/test, stratified, as the bundled examples split their data."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=seed)
    X_val, X_te, y_val, y_te = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    parts = ((X_tr, y_tr), (X_val, y_val), (X_te, y_te))
    return tuple((np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.int64)) for a, b in parts)


def mlp(sizes: list[int]) -> Any:
    """Linear layers ``fc1``, ``fc2``, ... with a ReLU between (``act1``, ``act3``, ...), as the examples build."""
    from collections import OrderedDict

    from torch import nn

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers[f"fc{i + 1}"] = nn.Linear(a, b)
        if i < len(sizes) - 2:
            layers[f"act{2 * i + 1}"] = nn.ReLU()
    return nn.Sequential(layers)


def run_wide(args: SimpleNamespace, out_root: Path) -> dict[str, Any]:
    """A 4096-wide hidden layer: dense vs SVD vs TT of that layer at matched parameter counts."""
    import torch
    from sklearn.datasets import make_classification
    from sklearn.preprocessing import StandardScaler

    from edgeopt.compiler.decompose import decomposable_layers, decompose, layer_reports, plan_cost
    from edgeopt.compiler.distill import distill
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.formats import get_handler
    from edgeopt.compiler.train import train as train_model
    from edgeopt.pipeline.task import Task

    width = 4096
    out = out_root / "wide"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    X, y = make_classification(
        n_samples=4000,
        n_features=128,
        n_informative=48,
        n_redundant=16,
        n_classes=10,
        n_clusters_per_class=2,
        class_sep=2.5,
        random_state=3,
    )
    X = StandardScaler().fit_transform(X)
    train, val, test = split(X, y)
    torch.manual_seed(args.seed)
    model = mlp([128, width, width, 10])
    t0 = time.perf_counter()
    train_model(
        model, train, val, epochs=3 if args.quick else 4, lr=1e-3, seed=args.seed, patience=None, metric="f1_macro"
    )
    train_s = time.perf_counter() - t0
    task = Task(model, train=train, val=val, test=test, metric="f1_macro", name="wide-4096")
    layers = decomposable_layers(model, task.example_input)
    spec = layers["fc2"]
    epochs = 2 if args.quick else 4
    rows = []
    dense_path = out / "dense.onnx"
    export_onnx(model, task.example_input, dense_path, verify=True)
    rows.append(
        {
            "method": "dense fp32",
            "fc2": f"dense {width}x{width}",
            "params": int(plan_cost(model, {}, task.example_input).params),
            "compile_s": None,
            **measure(dense_path, task, quick=args.quick),
        }
    )
    # TT-matrix with three cores (4096 = 16x16x16 both ways) sets each parameter budget; SVD gets the
    # rank with the closest parameter count. The automatic modes (64x64, two cores) are shown too.
    modes = [16, 16, 16]
    specs = [(8, None), (8, modes)] if args.quick else [(8, modes), (16, modes)]
    for tt_rank, tt_modes in specs:
        tt_plan = {"fc2": get_handler("tt").plan_entry(tt_rank)}
        if tt_modes:
            tt_plan["fc2"].update(in_modes=tt_modes, out_modes=tt_modes)
        fc2_tt = plan_cost(model, tt_plan, task.example_input).layers["fc2"].params
        svd_rank = max(1, round((fc2_tt - spec.out_size) / (spec.in_size + spec.out_size)))
        for fmt, plan in (("tt", tt_plan), ("lowrank", {"fc2": get_handler("lowrank").plan_entry(svd_rank)})):
            t0 = time.perf_counter()
            student = decompose(model, plan)
            rel_err = next((r.rel_error for r in layer_reports(student) if r.name == "fc2"), None)
            distill(student, model, train, val, epochs=epochs, patience=PATIENCE, seed=args.seed, metric="f1_macro")
            student.eval()
            m = "x".join(map(str, tt_modes or spec.tt_in_modes))
            path = out / f"{fmt}-{tt_rank}-{m}.onnx"
            export_onnx(student, task.example_input, path, verify=True, verify_inputs=val[0][:32])
            cost = plan_cost(model, plan, task.example_input)
            label = f"TT ranks {tt_rank}, modes {m}" if fmt == "tt" else f"SVD rank {svd_rank}"
            rows.append(
                {
                    "method": label,
                    "fc2_params": int(cost.layers["fc2"].params),
                    "params": int(cost.params),
                    "fc2_macs": int(cost.layers["fc2"].macs or 0),
                    "init_rel_error": None if rel_err is None else float(rel_err),
                    "compile_s": time.perf_counter() - t0,
                    **measure(path, task, quick=args.quick),
                }
            )
    return {
        "example": "wide-4096",
        "description": f"MLP 128-{width}-{width}-10 on make_classification (10 classes)",
        "teacher_train_s": train_s,
        "distill_epochs": epochs,
        "rows": rows,
    }


# --------------------------------------------------------------------------- real architectures
MODELS = ("resnet8", "mobilenet", "vit", "cnn1d")
# edgeopt.compile on these runs with its defaults except what keeps the whole run near 30 minutes on
# 2 shared cores: (trials, search seconds, trial epochs, final fine-tune epochs). Defaults are 30
# trials, no timeout, 12 trial epochs and 80 final epochs; the uniform rows get the same final epochs.
# Per-epoch distillation cost on this host (1 torch thread, load ~2): cnn1d 1.2 s, resnet8 2.8 s, vit 1.5 s,
# mobilenet 11.7 s. (mobilenet: 1 trial epoch leaves every student below the implicit quality floor.)
ARCH_SEARCH: dict[str, tuple[int, float, int, int]] = {
    "resnet8": (30, 90.0, 3, 10),
    "mobilenet": (30, 240.0, 4, 12),
    "vit": (30, 90.0, 4, 15),
    "cnn1d": (30, 45.0, 6, 20),
}
ARCH_QUICK: dict[str, tuple[int, float, int, int]] = {
    "resnet8": (8, 40.0, 1, 2),
    "mobilenet": (4, 40.0, 1, 1),
    "vit": (6, 40.0, 1, 2),
    "cnn1d": (8, 20.0, 3, 5),
}
BUDGET_FRACTION = 0.5  # edgeopt's latency budget: half the dense model's p95 on host-1t
# a model whose floor is above half its dense p95 gets its own fraction here (none since the prune format)
BUDGET_FRACTIONS: dict[str, float] = {}
REFUSALS = (("resnet8", 0.05), ("mobilenet", 0.1))  # (model, fraction of dense p95): budgets below the floor
PROBE_BENCH = {"min_iters": 300, "min_time_s": 0.5, "max_iters": 20000}  # rank probes of the uniform rows


def _rank_ladder(hi: int) -> list[int]:
    """Ranks 1..hi on a roughly geometric ladder (1, 2, 3, 4, 6, 8, 12, 16, ...) ending at hi."""
    ladder, r = [], 1
    while r < hi:
        ladder.append(r)
        r = r + 1 if r < 4 else (r * 3 // 2 if (r & (r - 1)) == 0 else r * 4 // 3)
    return sorted(set(ladder + [hi]))


def _probe_p50(task: Any, plan: dict[str, Any], path: Path) -> float:
    """Host 1-thread p50 of the plan's structure (SVD/TT-SVD initialized, not trained)."""
    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    export_onnx(decompose(task.model, plan), task.example_input, path, verify=False)
    return float(bench(path, str(HOST_1T), **PROBE_BENCH).latency_ms["p50"])


def rank_at_latency(
    task: Any, layers: dict[str, Any], fmt: str, limit_ms: float, work: Path
) -> tuple[int, dict[str, Any], float, list[tuple[int, float]]]:
    """The highest uniform rank on the ladder whose measured p50 is at most ``limit_ms``; rank 1 when none
    is. Rungs are measured in ascending order until two in a row are over 1.3x the limit (on small
    models latency is nearly flat in the rank, and a bisection would follow the noise). Returns rank,
    plan, its probe p50, the probes."""
    hi = max((spec.max_rank or {}).get(fmt, 0) for spec in layers.values())
    ladder = [r for r in _rank_ladder(max(hi - 1, 1)) if uniform_plan(layers, fmt, r)]
    if not ladder:
        raise RuntimeError(f"no layer accepts {fmt}")
    probes: dict[int, float] = {}
    over = 0
    for r in ladder:  # ascending; stop once two rungs in a row are clearly (30%) over the limit
        probes[r] = _probe_p50(task, uniform_plan(layers, fmt, r), work / f"probe-{fmt}-{r}.onnx")
        over = over + 1 if probes[r] > 1.3 * limit_ms else 0
        if over >= 2:
            break
    ladder = sorted(probes)
    fits = [r for r in ladder if probes[r] <= limit_ms]
    r = max(fits) if fits else ladder[0]
    return r, uniform_plan(layers, fmt, r), probes[r], sorted(probes.items())


def distill_like_compile(student: Any, task: Any, *, epochs: int, seed: int, **options: Any) -> None:
    """``student`` distilled from the task's model at compile's rate on one torch thread, as ``compile()``
    trains; ``options`` as :func:`edgeopt.compiler.distill.distill`'s (none: a trial's constant rate, early
    stopping and best epoch)."""
    import torch

    from edgeopt.compiler.distill import distill

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as compile() trains: one torch thread
    try:
        distill(
            student,
            task.model,
            (task.X_train, task.y_train),
            (task.X_val, task.y_val),
            epochs=epochs,
            lr=FINAL_LR,
            seed=seed,
            metric=task.metric,
            **options,
        )
    finally:
        torch.set_num_threads(threads)


def distill_like_final(student: Any, task: Any, *, epochs: int, seed: int, callback: Any = None) -> None:
    """``student`` distilled like edgeopt's final fine-tune's schedule (cosine, ending with its last epoch);
    ``callback(epoch, val score)`` after each."""
    distill_like_compile(
        student, task, epochs=epochs, seed=seed, schedule="cosine", restore_best=False, callback=callback
    )


def distill_like_shipped(student: Any, task: Any, *, epochs: int, seed: int) -> Any:
    """``student`` distilled like edgeopt's final fine-tune (:func:`distill_like_final`) and ending, as that
    fine-tune does, with the weights of the epoch whose window of epochs scores best on validation
    (``edgeopt.pipeline.finetune.Peak``, decision 0115): the same distillation and the same choice of
    weights as the file edgeopt ships. Until 0119 the alternatives kept their last epoch; where a student
    overfits late, that alone put edgeopt's artifact ahead of the same plan's (mobilenet at 1/2 of its
    dense p95: edgeopt shipped its uniform keep-1/2 alternative, fine-tune epoch 14 of 80, +2.77 pt over
    the user's uniform 0.5 at its last epoch). Returns the ``Tuned`` record (``kept``, ``kept_epoch``)."""
    from edgeopt.pipeline.finetune import Peak, Tuned, half_window, keep_weights

    peak, history = Peak(half_window(epochs)), []

    def on_epoch(epoch: int, score: float) -> None:
        history.append(float(score))
        peak.update(student, float(score), epoch + 1)

    distill_like_final(student, task, epochs=epochs, seed=seed, callback=on_epoch)
    tuned = Tuned(student, history=history)
    peak.finish()
    keep_weights(tuned, peak, task)
    return tuned


def distill_and_export(student: Any, task: Any, path: Path, *, epochs: int, seed: int) -> Path:
    """``student`` distilled from the task's model as edgeopt's final fine-tune distills and chooses its
    weights (:func:`distill_like_shipped`), then exported and verified against torch in onnxruntime."""
    from edgeopt.compiler.export import export_onnx

    distill_like_shipped(student, task, epochs=epochs, seed=seed)
    student.eval()
    export_onnx(student, task.example_input, path, verify=True, verify_inputs=task.X_val[:32])
    return path


def uniform_at_latency(task: Any, fmt: str, limit_ms: float, out: Path, *, epochs: int, seed: int) -> tuple[Path, dict]:
    """The best uniform ``fmt`` plan at edgeopt's latency, distilled like edgeopt's final fine-tune."""
    from edgeopt.compiler.decompose import decomposable_layers, decompose, plan_cost

    t0 = time.perf_counter()
    layers = decomposable_layers(task.model, task.example_input)
    r, plan, probe_ms, probes = rank_at_latency(task, layers, fmt, limit_ms, out)
    probe_s = time.perf_counter() - t0
    path = distill_and_export(decompose(task.model, plan), task, out / f"uniform-{fmt}.onnx", epochs=epochs, seed=seed)
    return path, {
        "rank": r,
        "plan": plan,
        "params": int(plan_cost(task.model, plan, task.example_input).params),
        "probe_p50_ms": probe_ms,
        "probes": probes,
        "limit_ms": limit_ms,
        "fits": probe_ms <= limit_ms,
        "probe_s": probe_s,
        "compile_s": time.perf_counter() - t0,
    }


PRUNE_RATIOS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)  # uniform pruning ratios tried (torch-pruning alone)


def _output_layer(model: Any, example: Any) -> Any:
    """The last Linear/Conv the forward pass runs: its width is the model's output."""
    import torch
    from torch import nn

    order: list[Any] = []
    hooks = [
        m.register_forward_hook(lambda mod, a, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1]


def torch_pruning_uniform(model: Any, example: Any, ratio: float) -> Any:
    """What torch-pruning alone gives: its MetaPruner at one ``ratio`` for every group (magnitude
    importance), the output layer and the attention modules (whose heads it would break) ignored."""
    import copy
    import warnings

    import torch
    import torch_pruning as tp

    from edgeopt.compiler.attention import LinearAttention, swap_attention

    m = copy.deepcopy(model).eval()
    swap_attention(m)
    x = torch.as_tensor(example)[:1]
    ignored = [_output_layer(m, x)] + [a for a in m.modules() if isinstance(a, LinearAttention)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(
            m, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio, ignored_layers=ignored
        )
        pruner.step()
    return m


def uniform_prune_at_latency(task: Any, limit_ms: float, out: Path, *, epochs: int, seed: int) -> tuple[Path, dict]:
    """The least uniform pruning (torch-pruning's MetaPruner) whose measured p50 is at most ``limit_ms``
    (the strongest ratio when none is), distilled like edgeopt's final fine-tune."""
    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    t0 = time.perf_counter()
    probes: dict[float, float] = {}
    for ratio in PRUNE_RATIOS:  # ascending pruning: stop at the first that meets the latency
        path = out / f"probe-prune-{ratio}.onnx"
        export_onnx(
            torch_pruning_uniform(task.model, task.example_input, ratio), task.example_input, path, verify=False
        )
        probes[ratio] = float(bench(path, str(HOST_1T), **PROBE_BENCH).latency_ms["p50"])
        if probes[ratio] <= limit_ms:
            break
    ratio = next((r for r in probes if probes[r] <= limit_ms), max(probes))
    probe_s = time.perf_counter() - t0
    student = torch_pruning_uniform(task.model, task.example_input, ratio)
    path = distill_and_export(student, task, out / "uniform-prune.onnx", epochs=epochs, seed=seed)
    return path, {
        "rank": ratio,
        "plan": {"pruning_ratio": ratio},
        "params": sum(p.numel() for p in student.parameters()),
        "probe_p50_ms": probes[ratio],
        "probes": sorted(probes.items()),
        "limit_ms": limit_ms,
        "fits": probes[ratio] <= limit_ms,
        "probe_s": probe_s,
        "compile_s": time.perf_counter() - t0,
    }


def _compile_kwargs() -> set[str]:
    import inspect

    import edgeopt

    return set(inspect.signature(edgeopt.compile).parameters)


def run_architecture(name: str, args: SimpleNamespace, out_root: Path) -> dict[str, Any]:
    """Dense, ORT int8, uniform SVD / TT at edgeopt's latency, and edgeopt at half the dense p95."""
    import edgeopt
    from edgeopt.compiler.decompose import plan_cost
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx
    from edgeopt.models.examples import load_example

    t_model = time.perf_counter()
    task = load_example(name, seed=args.seed)
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    trials, timeout, trial_epochs, final_epochs = (ARCH_QUICK if args.quick else ARCH_SEARCH)[name]
    trials = args.trials or trials
    timeout = args.timeout or timeout
    dense_params = int(plan_cost(task.model, {}, task.example_input).params)
    rows: list[dict[str, Any]] = []

    # 1: dense fp32, which sets edgeopt's budget
    dense_path = out / "dense.onnx"
    export_onnx(task.model, task.example_input, dense_path, verify=True, verify_inputs=task.X_val[:32])
    dense = {
        "method": "dense fp32",
        "params": dense_params,
        "compile_s": None,
        **measure(dense_path, task, quick=args.quick),
    }
    rows.append(dense)
    fraction = BUDGET_FRACTIONS.get(name, BUDGET_FRACTION)
    budget_ms = fraction * dense["p95_ms"]

    # 5: edgeopt, with defaults but for the settings above
    kwargs: dict[str, Any] = {
        "trials": trials,
        "timeout": timeout,
        "trial_epochs": trial_epochs,
        "final_epochs": final_epochs,
        "out": out / "edgeopt",
        "seed": args.seed,
        "budget": {"latency_ms": budget_ms},
        "progress": False,
    }
    known = _compile_kwargs()
    for key in ("time_budget_s", "time_budget"):  # the name compile() takes, once it takes one
        if key in known and args.time_budget:
            kwargs[key] = args.time_budget
            break
    log.info(
        "[%s] edgeopt: budget p95 %.3f ms (dense p95 %.3f ms), %s",
        name,
        budget_ms,
        dense["p95_ms"],
        {k: v for k, v in kwargs.items() if k not in ("out", "progress")},
    )
    t0 = time.perf_counter()
    edge: dict[str, Any]
    try:
        res = edgeopt.compile(task, str(HOST_1T), **kwargs)
        rep = res.report
        edge = {
            "method": "edgeopt",
            "params": int(rep["best"]["params"]),
            "compile_s": time.perf_counter() - t0,
            "detail": {
                "plan": res.best_plan,
                "dtype": rep["best"].get("dtype", "fp32"),
                "passed": res.passed,
                "reasons": res.reasons,
                "search": rep.get("search", {}),
            },
            **measure(Path(res.model_path), task, quick=args.quick),
        }
    except SystemExit as exc:  # a refused budget may exit
        edge = {"method": "edgeopt", "error": f"exit {exc.code}", "compile_s": time.perf_counter() - t0}
    except Exception as exc:
        log.exception("[%s] edgeopt failed", name)
        edge = {
            "method": "edgeopt",
            "error": f"{type(exc).__name__}: {exc}"[:300],
            "compile_s": time.perf_counter() - t0,
        }

    # 2: ORT int8 of dense (static QDQ for Conv, calibrated; dynamic for MatMul/Gemm)
    t0 = time.perf_counter()
    try:
        q = quantize_onnx(dense_path, out / "dense-int8.onnx", calibration=task.X_train[:256])
        rows.append(
            {
                "method": "ORT int8 (dense)",
                "params": dense_params,
                "compile_s": time.perf_counter() - t0,
                **measure(q, task, quick=args.quick),
            }
        )
    except Exception as exc:
        rows.append({"method": "ORT int8 (dense)", "error": f"{type(exc).__name__}: {exc}"[:300]})

    # 3, 4: highest uniform rank at edgeopt's measured p50 (the budget if edgeopt shipped nothing)
    limit_ms = edge.get("p50_ms", budget_ms)
    for fmt, label in (("lowrank", "uniform SVD"), ("tt", "uniform TT"), ("prune", "uniform pruning (torch-pruning)")):
        log.info("[%s] %s at p50 <= %.3f ms", name, label, limit_ms)
        try:
            if fmt == "prune":
                path, info = uniform_prune_at_latency(task, limit_ms, out, epochs=final_epochs, seed=args.seed)
            else:
                path, info = uniform_at_latency(task, fmt, limit_ms, out, epochs=final_epochs, seed=args.seed)
        except Exception as exc:
            log.exception("[%s] %s failed", name, label)
            rows.append({"method": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        knob = f"ratio={info['rank']}" if fmt == "prune" else f"r={info['rank']}"
        rows.append(
            {
                "method": f"{label} {knob}" + ("" if info["fits"] else " (slower than edgeopt even at the strongest)"),
                "params": info["params"],
                "compile_s": info["compile_s"],
                "detail": {k: info[k] for k in ("plan", "probe_p50_ms", "probes", "limit_ms", "fits", "probe_s")},
                **measure(path, task, quick=args.quick),
            }
        )
    rows.append(edge)
    return {
        "example": name,
        "metric": task.metric,
        "target": HOST_1T.stem,
        "budget_fraction": fraction,
        "budget_overrides": {"latency_ms": round(budget_ms, 4)},
        "dense_p95_ms": dense["p95_ms"],
        "trials": trials,
        "timeout_s": timeout,
        "trial_epochs": trial_epochs,
        "final_epochs": final_epochs,
        "compile_kwargs": {k: v for k, v in kwargs.items() if k not in ("out", "progress")},
        "rows": rows,
        "wall_s": time.perf_counter() - t_model,
    }


def refusal_check(name: str, args: SimpleNamespace, out_root: Path, fraction: float = 0.05) -> dict[str, Any]:
    """A budget far below the floor (``fraction`` of the dense p95): is it refused within 60 s, floor stated?

    Capped at 5 trials of 1 epoch and 60 s of search so that a compile that does not refuse ends soon
    (its wall time then says nothing about a refusal's)."""
    import edgeopt
    from edgeopt.compiler.export import export_onnx
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.bench import bench

    task = load_example(name, seed=args.seed)
    out = out_root / f"{name}-refusal"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dense = export_onnx(task.model, task.example_input, out / "dense.onnx", verify=False)
    p95 = float(bench(dense, str(HOST_1T), min_iters=300, min_time_s=0.5).latency_ms["p95"])
    budget = fraction * p95
    t0 = time.perf_counter()
    outcome: dict[str, Any] = {"model": name, "dense_p95_ms": p95, "budget_ms": budget}
    try:
        res = edgeopt.compile(
            task,
            str(HOST_1T),
            trials=5,
            timeout=60.0,
            trial_epochs=1,
            final_epochs=1,
            out=out / "edgeopt",
            seed=args.seed,
            budget={"latency_ms": budget},
            progress=False,
        )
        outcome.update(refused=False, passed=res.passed, message="; ".join(res.reasons)[:400])
    except SystemExit as exc:
        outcome.update(refused=True, message=f"exit {exc.code}")
    except Exception as exc:
        outcome.update(refused=True, error=type(exc).__name__, message=str(exc)[:600])
    outcome["wall_s"] = time.perf_counter() - t0
    floor_stated = outcome["refused"] and "floor" in outcome["message"].lower()
    outcome["floor_stated"] = floor_stated
    if outcome["refused"] and floor_stated and outcome["wall_s"] <= 60:
        verdict = "met"
    elif outcome["refused"]:
        verdict = f"**missed**: refused in {outcome['wall_s']:.0f} s" + ("" if floor_stated else ", no floor stated")
    else:
        verdict = "**missed**: not refused (searched and shipped)"
    outcome["verdict"] = verdict
    outcome["note"] = (
        f"{name}, p95 budget {budget * 1e3:.0f} µs ({fraction:.0%} of dense {p95 * 1e3:.0f} µs): "
        f"{'refused' if outcome['refused'] else 'not refused'} after {outcome['wall_s']:.1f} s: "
        + outcome["message"].replace("|", "/").replace("\n", " ")[:300]
    )
    return outcome


# --------------------------------------------------------------------------- output
def _frac(f: float) -> str:
    return "½" if f == 0.5 else f"{f:g}×"


def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), onnxruntime {env['onnxruntime']}, "
        f"torch {env['torch']}: batch 1, **1 onnxruntime thread on this host** (p50/p95, `benchmarks/host-1t.toml`); "
        f"rpi4 p50 is edgeopt's prediction from this host's per-node profile (not measured on a Pi). "
        f"Test split, onnxruntime predictions. Compile = wall seconds to produce the row's artifact "
        f"(edgeopt: the whole `compile`, search + fine-tune + release bench).",
        "",
    ]
    if results.get("floor"):
        f = results["floor"]
        lines += [f"Per-run floor on this host (one 64×10 Gemm, 1 thread): p50 {f['p50_ms'] * 1e3:.1f} µs.", ""]
    if results.get("load_average"):
        la = results["load_average"]
        lines += [
            f"Load average (1 min) at the start / end of the run: {la.get('start', '?')} / {la.get('end', '?')}.",
            "",
        ]
    for ex in results["examples"] + results.get("architectures", []):
        dense = next(r for r in ex["rows"] if r["method"] == "dense fp32")
        if "dense_p95_ms" in ex:  # a real architecture: edgeopt at half the dense p95 on host-1t
            lines += [
                f"### {ex['example']} ({ex['metric']}; edgeopt: budget p95 ≤ "
                f"{ex['budget_overrides']['latency_ms'] * 1e3:.0f} µs "
                f"= {_frac(ex.get('budget_fraction', 0.5))} dense p95 on `{ex['target']}`; "
                f"{ex['trials']} trials / {ex['timeout_s']:.0f} s, "
                f"{ex['trial_epochs']} trial epochs, {ex['final_epochs']} final epochs; run {ex['wall_s']:.0f} s)",
                "",
            ]
        else:
            lines += [
                f"### {ex['example']} ({ex['metric']}; edgeopt: {ex['trials']} trials / {ex['timeout_s']:.0f} s on "
                f"`{ex['target']}`{' + ' + json.dumps(ex['budget_overrides']) if ex['budget_overrides'] else ''})",
                "",
            ]
        lines += [
            (
                "| method | params | size KiB | nodes | p50 µs | p95 µs | vs dense p50 | rpi4 p50 µs (pred.) "
                "| test F1 | accuracy | compile s |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ex["rows"]:
            if "error" in r:
                lines.append(f"| {r['method']} | failed: {r['error']} |||||||||{_fmt(r.get('compile_s'), '.1f')} |")
                continue
            lines.append(
                f"| {r['method']} | {r['params']:,} | {r['size_bytes'] / 1024:.1f} | {r['nodes']} | "
                f"{r['p50_ms'] * 1e3:.1f} | "
                f"{r['p95_ms'] * 1e3:.1f} | {dense['p50_ms'] / r['p50_ms']:.1f}× | {r['rpi4_p50_ms'] * 1e3:.0f} | "
                f"{r['test_f1']:.4f} | {r['test_accuracy']:.4f} | {_fmt(r['compile_s'], '.1f')} |"
            )
        for r in ex["rows"]:
            if r["method"].startswith("edgeopt") and "detail" in r:
                d = r["detail"]
                plan = _plan_text(d["plan"])
                lines.append(
                    f"\n{r['method']}: plan {{{plan or 'dense'}}}, dtype {d.get('dtype', d.get('precision'))}, budgets "
                    f"{'met' if d['passed'] else 'NOT met: ' + '; '.join(d['reasons'])}; "
                    f"{d['search'].get('trials', '?')} trials ({d['search'].get('feasible', '?')} feasible) "
                    f"in {d['search'].get('wall_s', 0):.0f} s."
                )
        if "dense_p95_ms" in ex:
            lines.append(goals_line(ex["rows"]))
        lines.append("")
    for ref in results.get("refusals") or ([results["refusal"]] if results.get("refusal") else []):
        lines += [f"Budget below the floor: {ref['note']}", ""]
    if results.get("wide"):
        w = results["wide"]
        dense = w["rows"][0]
        lines += [
            f"### {w['example']}: {w['description']}, {w['distill_epochs']} distillation epochs per student",
            "",
            (
                "| fc2 format | params (model) | fc2 params | fc2 MACs | init rel. error | size KiB | nodes "
                "| p50 µs | p95 µs | vs dense p50 | test F1 | accuracy |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in w["rows"]:
            lines.append(
                f"| {r['method']} | {r['params']:,} | {_fmt(r.get('fc2_params'), ',')} | "
                f"{_fmt(r.get('fc2_macs'), ',')} | {_fmt(r.get('init_rel_error'), '.3f')} | "
                f"{r['size_bytes'] / 1024:.0f} | {r['nodes']} | {r['p50_ms'] * 1e3:.1f} | {r['p95_ms'] * 1e3:.1f} | "
                f"{dense['p50_ms'] / r['p50_ms']:.0f}× | {r['test_f1']:.4f} | {r['test_accuracy']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


def goals_line(rows: list[dict[str, Any]]) -> str:
    """The goals for one architecture: edgeopt's p50 ≥ 3× lower than dense and ≥ 2× lower than
    ORT int8, at ≤ 1 pt of test F1 lost against dense; and what uniform pruning gives beside it."""
    by = {r["method"].split(" ratio=")[0].split(" r=")[0]: r for r in rows if "error" not in r}
    edge, dense, int8 = by.get("edgeopt"), by.get("dense fp32"), by.get("ORT int8 (dense)")
    if not (edge and dense):
        return "\nGoals: edgeopt shipped nothing here."
    parts = [f"{dense['p50_ms'] / edge['p50_ms']:.2f}× dense p50 (goal ≥ 3×)"]
    if int8:
        parts.append(f"{int8['p50_ms'] / edge['p50_ms']:.2f}× ORT int8 (goal ≥ 2×)")
    drop = 100 * (dense["test_f1"] - edge["test_f1"])
    parts.append(f"test F1 {-drop:+.2f} pt against dense (goal: at most 1 pt lost)")
    met = dense["p50_ms"] / edge["p50_ms"] >= 3 and (not int8 or int8["p50_ms"] / edge["p50_ms"] >= 2) and drop <= 1
    prune = by.get("uniform pruning (torch-pruning)")
    tail = ""
    if prune:
        tail = (
            f" Uniform pruning beside it: {dense['p50_ms'] / prune['p50_ms']:.2f}× dense p50, "
            f"test F1 {prune['test_f1']:.4f} against edgeopt's {edge['test_f1']:.4f}."
        )
    return f"\nGoals: {', '.join(parts)}: {'met' if met else '**missed**'}.{tail}"


def dispatch_floor(work: Path, quick: bool) -> dict[str, Any]:
    """p50 of the smallest real model (one 64->10 Gemm) at 1 thread: the per-run floor no artifact goes below."""
    import torch

    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    torch.manual_seed(0)
    path = work / "floor-gemm.onnx"
    export_onnx(torch.nn.Linear(64, 10), torch.zeros(1, 64), path, verify=False)
    r = bench(path, str(HOST_1T), min_iters=300 if quick else 2000, min_time_s=0.5 if quick else 2.0, max_iters=50000)
    return {"model": "one Gemm 64x10", "p50_ms": float(r.latency_ms["p50"]), "p95_ms": float(r.latency_ms["p95"])}


def environment() -> dict[str, Any]:
    import onnxruntime
    import torch

    from edgeopt.runtime.host import host_facts

    h = host_facts()
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": h.get("cpu"),
        "cores": os.cpu_count(),
        "arch": h.get("arch"),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run(args: SimpleNamespace) -> Outcome:
    """The bundled examples (``examples``) and the real architectures (``models``), side by side."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("edgeopt").setLevel(logging.WARNING)
    models = list(MODELS) if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    examples = [e.strip() for e in args.examples.split(",") if e.strip()]
    unknown = sorted(set(models) - set(MODELS)) + sorted(set(examples) - set(EXAMPLES))
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)} (expected {', '.join(EXAMPLES + tuple(MODELS))} or all)")
    work = args.work
    results: dict[str, Any] = {
        "environment": environment(),
        "load_average": {"start": round(os.getloadavg()[0], 2)},
        "examples": [],
        "architectures": [],
        "wide": None,
    }
    prev_wide = (args.previous or {}).get("wide")
    results["floor"] = dispatch_floor(work, args.quick)
    t0 = time.perf_counter()
    for name in examples:
        results["examples"].append(run_example(name, args, work))
        args.save(results, markdown(results))
    for name in models:
        results["architectures"].append(run_architecture(name, args, work))
        results["load_average"]["end"] = round(os.getloadavg()[0], 2)
        args.save(results, markdown(results))
    if models and args.refusal:
        results["refusals"] = [refusal_check(m, args, work, f) for m, f in REFUSALS if m in models]
        args.save(results, markdown(results))
    if not examples:
        results["wide"] = None
    elif args.wide:
        results["wide"] = run_wide(args, work)
    else:  # keep the wide model's rows from the last run (they do not depend on the search)
        results["wide"] = prev_wide
    results["wall_s"] = time.perf_counter() - t0
    results["load_average"]["end"] = round(os.getloadavg()[0], 2)
    return Outcome(results, markdown(results))
