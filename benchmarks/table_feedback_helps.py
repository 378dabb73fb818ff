"""The screens correcting the per-layer table during the search (``edgeopt.search.allocation.knobs.table_correction``),
against the same search without it, side by side in one run.

Per model, two compiles with the same seed, settings and per-layer table (built once by the first and
copied to the second, so only the correction differs): ``off`` (``FEEDBACK_MIN`` set out of reach: every
allocation is capped by the table as built) and ``on`` (as shipped). For each: trials screened out over
the latency budget before training, feasible trials, how far each trial's measured latency was from the
cap it was allocated under (the table's error as the allocation saw it, corrected or not), what the
budget's fraction bought (measured p95 / budget of the trained trials), and what shipped (budgets met,
test F1, p95).

- Real architectures (``resnet8``, ``vit``, ``cnn1d``, ``mobilenet``) on ``benchmarks/host-1t.toml`` at
  half the dense p95 (mobilenet 0.7), with ``edgeopt_vs_baselines``'s search settings;
- ``digits-cnn`` on ``rpi4-demo`` with its budgets (the example whose table breaks there).

    flock /tmp/edgeopt-bench.lock python -m benchmarks table_feedback_helps [--set models=cnn1d,digits-cnn]
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import edgeopt_vs_baselines as compare  # the same budgets and search settings
from benchmarks.suite import Outcome, provenance

log = logging.getLogger("table_feedback")
MODELS = ("cnn1d", "digits-cnn", "resnet8", "vit")


def setting(name: str, task: Any, tmp: Path) -> tuple[str, dict[str, float], dict[str, Any]]:
    """(target, budget, compile keywords) as ``edgeopt_vs_baselines`` runs the model."""
    if name in compare.BUDGETS:
        trials, timeout = compare.SEARCH[name]
        return compare.TARGET, compare.BUDGETS[name], {"trials": trials, "timeout": timeout}
    from edgeopt.compiler.export import export_onnx
    from edgeopt.runtime.bench import bench

    dense = tmp / f"{name}-dense.onnx"
    export_onnx(task.model, task.example_input, dense, verify=False)
    p95 = float(bench(dense, str(compare.HOST_1T), min_iters=2000, min_time_s=2.0).latency_ms["p95"])
    trials, timeout, trial_epochs, final_epochs = compare.ARCH_SEARCH[name]
    fraction = compare.BUDGET_FRACTIONS.get(name, compare.BUDGET_FRACTION)
    return (
        str(compare.HOST_1T),
        {"latency_ms": fraction * p95},
        {"trials": trials, "timeout": timeout, "trial_epochs": trial_epochs, "final_epochs": final_epochs},
    )


def summarize(out: Path, budget_ms: float, rep: dict[str, Any], wall: float) -> dict[str, Any]:
    """What the search did and what shipped, from the study and the report."""
    import optuna

    from edgeopt.pipeline.record import DType, Status, TrialRecord

    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}")
    study = optuna.load_study(study_name=storage.get_all_studies()[0].study_name, storage=storage)
    errors, use, corrected, points = [], [], 0, []
    counts = {"trials": 0, "screened_out": 0, "feasible": 0}
    for t in study.get_trials(deepcopy=False):
        rec, alloc = TrialRecord.from_trial(t), t.user_attrs.get("allocation") or {}
        counts["trials"] += 1
        counts["screened_out"] += rec.status is Status.SCREENED_OUT
        counts["feasible"] += rec.feasible
        if rec.screen is None or rec.repeat_of is not None or rec.dtype is not DType.FP32 or not alloc:
            continue
        offset = (alloc.get("fit") or {}).get("offset_ms", 0.0)
        corrected += offset != 0.0
        predicted = alloc["table_latency_ms"] + offset  # what the cap assumed this plan measures
        errors.append(100 * (rec.screen.latency_ms / predicted - 1))
        points.append(
            [t.number, alloc["table_latency_ms"], round(predicted, 5), rec.screen.latency_ms, rec.status.value]
        )
        if rec.status is Status.TRAINED:
            use.append(rec.screen.latency_ms / budget_ms)
    best = rep["best"]
    return {
        **counts,
        "corrected_trials": corrected,
        "wall_s": round(wall, 1),
        "median_abs_error_pct": round(statistics.median(abs(e) for e in errors), 1) if errors else None,
        "median_error_pct": round(statistics.median(errors), 1) if errors else None,
        "median_budget_use": round(statistics.median(use), 3) if use else None,
        "final_fit": (rep.get("tables") or {}).get("screens"),
        "points": points,  # trial, table ms, predicted (the fit in force), measured (screen), status
        "shipped": {
            "passed": bool(best["budget"]["passed"]),
            "plan": best.get("plan"),
            "test_f1": best["metrics"]["test"]["score"],
            "val_f1": best["metrics"]["val"]["score"],
            "p95_ms": best["latency_ms"]["p95"],
            "budget_ms": budget_ms,
        },
    }


def one(name: str, seed: int, root: Path, search: dict[str, Any] | None = None) -> dict[str, Any]:
    import edgeopt
    import edgeopt.search.allocation.knobs as knobs
    from edgeopt.models.examples import load_example

    task = load_example(name, seed=seed)
    target, budget, kw = setting(name, task, root)
    kw.update(search or {})  # a quick run's fewer trials and epochs
    row: dict[str, Any] = {"model": name, "target": Path(target).stem, "budget": budget}
    shipped_min = knobs.FEEDBACK_MIN
    for variant in ("off", "on"):
        out = root / name / variant
        if variant == "on":  # the same table, not a second measurement of it
            out.mkdir(parents=True)
            shutil.copy(root / name / "off" / "tables.json", out / "tables.json")
        knobs.FEEDBACK_MIN = 10**9 if variant == "off" else shipped_min
        log.info("[%s] %s: %s", name, variant, kw)
        t0 = time.perf_counter()
        try:
            res = edgeopt.compile(task, target, out=out, seed=seed, budget=budget or None, progress=False, **kw)
        finally:
            knobs.FEEDBACK_MIN = shipped_min
        row[variant] = summarize(out, budget["latency_ms"], res.report, time.perf_counter() - t0)
        log.info("[%s] %s: %s", name, variant, {k: v for k, v in row[variant].items() if k != "shipped"})
    return row


def _cell(v: Any, fmt: str = "") -> str:
    return "—" if v is None else format(v, fmt)


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"edgeopt at commit {doc['commit']}. Measured {doc['date']} on {doc['host']} ({doc['cores']} cores); "
        f"load average (1 min) start / end: {doc['load'][0]:.2f} / {doc['load'][1]:.2f}. One run per variant, "
        "the same seed and the same per-layer table for both.",
        "",
        "Table error = measured screen latency against what the cap assumed (the table through the fit "
        "in force; `off`: the table as built), fp32 allocations. "
        "Budget use = measured p95 / budget of the trained trials.",
        "",
        "| model (target) | variant | trials | screened out | feasible | corrected | table error, median abs "
        "(signed) | budget use, median | final offset ms (screens) | shipped: budgets / test F1 / p95 ms (budget) |",
        "|---|---|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for r in doc["rows"]:
        for v in ("off", "on"):
            s = r[v]
            fc = s.get("final_fit") or {}
            sh = s["shipped"]
            lines.append(
                f"| {r['model']} ({r['target']}) | {v} | {s['trials']} | {s['screened_out']} | {s['feasible']} | "
                f"{s['corrected_trials']} | {_cell(s['median_abs_error_pct'])} % "
                f"({_cell(s['median_error_pct'], '+')} %) | "
                f"{_cell(s['median_budget_use'])} | {_cell(fc.get('offset_ms'))} ({_cell(fc.get('count'))}) | "
                f"{'met' if sh['passed'] else 'NOT met'} / {sh['test_f1']:.4f} / {sh['p95_ms']:.4f} "
                f"({sh['budget_ms']:.4f}) |"
            )
    return "\n".join(lines) + "\n"


def run(args: SimpleNamespace) -> Outcome:
    """Per model in ``models``: the search with the table's correction off, then on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    load0 = os.getloadavg()[0]
    commit = provenance()["commit"]
    with tempfile.TemporaryDirectory(prefix="edgeopt-feedback-") as tmp:
        rows = [one(m, args.seed, Path(tmp), args.search) for m in args.models.split(",")]
    doc = {
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load": [load0, os.getloadavg()[0]],
        "rows": rows,
    }
    return Outcome(doc, markdown(doc))
