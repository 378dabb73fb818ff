"""The frontier: at ½, ⅓ and ¼ of the dense p95, does edgeopt beat what a user would try first?

Per model (the bundled digits examples and the architectures) the alternatives are built once:
dense fp32, onnxruntime int8 of dense (``edgeopt.compiler.quantize``), uniform torch-pruning at a ladder
of ratios (issue 20's five and every ratio edgeopt's own alternatives try: decision 0119), each fp32
and int8, distilled like edgeopt's final fine-tune (the same helpers as ``edgeopt_vs_baselines``'s
uniform-pruning rows). Per budget, ``edgeopt.compile`` runs with its defaults
(one compile per seed). Every ONNX file of one (model, budget) cell is then timed interleaved in one
process that never imports torch (:mod:`benchmarks.interleaved`: one onnxruntime session per file,
host-1t's runtime, 1 thread, round-robin blocks in a rotating order, p50/p95 from the pooled samples).
Scores are on the test split; each
edgeopt seed is compared with the best alternative that meets the budget by McNemar's exact test on
the discordant test samples (``scipy.stats.binomtest``).

    flock /tmp/edgeopt-bench.lock python -m benchmarks frontier [--quick] [--set seeds=0,1]

Writes ``frontier.md`` / ``frontier.json`` and one plot per model under ``OUT/frontier/``. Models run in
separate invocations accumulate in one results file (``--set models=cnn1d`` replaces cnn1d's entry and
keeps the others, each with the commit and time of its own run), so the ~10 h run can be done in parts.
``--set same_budgets=1`` takes a model's budgets from its earlier row rather than from a dense p95 read
afresh (:func:`pinned_budget`), to compare two commits on the same cells. With it, ``--set reuse_edgeopt=1``
takes edgeopt's compiles from that row too, their artifacts from the work folder (:func:`reused_compile`),
and judges them again beside this run's alternatives: a longer user ladder (``--set ratios=...``) costs its
distillations, not the compiles again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from benchmarks.interleaved import time_interleaved
from benchmarks.suite import HOST_1T, Outcome, provenance
from edgeopt.compiler.metrics import mcnemar

MODELS = ("digits-mlp", "digits-cnn", "resnet8", "mobilenet", "vit", "cnn1d")
TOL, BETTER, SPEED = 0.003, 0.010, 1.3  # issue 20's goals: 0.3 pt, +1.0 pt, 1.3x lower p50
DENSE_LOSS = {"1/3": 0.010, "1/4": 0.020}  # score lost against dense allowed at these budgets
GOALS = ("never_worse", "clearly_better", "vs_dense")
REFUSAL_S = 60.0
# The alternatives' files carry how they were distilled, so that ``reuse_alternatives`` never takes a file of
# another recipe: "window", the weights of the epoch edgeopt's fine-tune would keep (decision 0119; the
# files of the runs before, named without it, kept their last epoch).
RECIPE = "window"

log = logging.getLogger("frontier")


def _csv(text: Any, cast: Any = str) -> list[Any]:
    return [cast(x.strip()) for x in str(text).split(",") if x.strip()]


def _frac_text(f: float) -> str:
    return str(Fraction(f).limit_denominator(16))


# --------------------------------------------------------------------------- building the files
def alternatives(task: Any, out: Path, ratios: list[float], epochs: int, reuse: bool = False) -> list[dict[str, Any]]:
    """Dense, its int8, and uniform torch-pruning at each ratio (distilled) fp32 and int8: (method, path).
    ``reuse``: a ratio whose two files an earlier run left in ``out`` is not distilled again (``reused``:
    what edgeopt's changes cannot move; their training is ``edgeopt_vs_baselines``', seeded)."""
    from benchmarks.edgeopt_vs_baselines import distill_and_export, torch_pruning_uniform
    from edgeopt.compiler.export import export_onnx
    from edgeopt.compiler.quantize import quantize_onnx

    dense = out / "dense.onnx"
    export_onnx(task.model, task.example_input, dense, verify=True, verify_inputs=task.X_val[:32])
    cal = task.X_train[:256]
    files = [{"method": "dense fp32", "path": dense}]
    files.append({"method": "ORT int8 (dense)", "path": quantize_onnx(dense, out / "dense-int8.onnx", calibration=cal)})
    for ratio in ratios:  # one ratio that torch-pruning or the quantizer cannot do is a row, not the end of the run
        t0 = time.perf_counter()
        fp32, int8 = {"method": f"uniform prune {ratio}"}, {"method": f"uniform prune {ratio} + int8"}
        kept = out / f"prune-{ratio}-{RECIPE}.onnx", out / f"prune-{ratio}-{RECIPE}-int8.onnx"
        if reuse and all(p.is_file() for p in kept):
            files += [{**fp32, "path": kept[0], "reused": True}, {**int8, "path": kept[1], "reused": True}]
            continue
        try:
            student = torch_pruning_uniform(task.model, task.example_input, ratio)
            fp32["path"] = distill_and_export(student, task, kept[0], epochs=epochs, seed=0)
            fp32["compile_s"] = round(time.perf_counter() - t0, 1)
            int8["path"] = quantize_onnx(fp32["path"], kept[1], calibration=cal)
        except Exception as exc:
            log.exception("%s failed", fp32["method"])
            for row in (fp32, int8):
                if "path" not in row:
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        files += [fp32, int8]
    return files


def compile_edgeopt(task: Any, budget_ms: float, seed: int, out: Path, args: SimpleNamespace) -> dict[str, Any]:
    """``edgeopt.compile`` with its defaults but for the benchmark's overrides; a refusal is a row too. A
    folder left by an earlier run is removed first: compile would resume its study and reuse its tables."""
    import shutil

    import edgeopt

    shutil.rmtree(out, ignore_errors=True)
    kwargs: dict[str, Any] = {"out": out, "seed": seed, "budget": {"latency_ms": budget_ms}, "progress": False}
    for key in ("trials", "trial_epochs", "final_epochs", "time_budget_s"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"method": f"edgeopt seed {seed}", "edgeopt": True, "seed": seed}
    try:
        res = edgeopt.compile(task, str(HOST_1T), **kwargs)
        row.update(path=Path(res.model_path), exit_code=res.exit_code, dtype=res.report["best"].get("dtype", "fp32"))
        # The compile's own release measurement (one file, its own window), beside the cell's interleaved one.
        row["release_p95_us"] = 1e3 * float((res.report["best"].get("latency_ms") or {}).get("p95", math.nan))
        row |= shipped(res.report)
    except SystemExit as exc:
        row["error"] = f"exit {exc.code}"
    except Exception as exc:  # a refused budget is an InputError naming the floor: recorded, not fatal
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    row["compile_s"] = round(time.perf_counter() - t0, 1)
    return row


def shipped(report: dict[str, Any]) -> dict[str, Any]:
    """What a compile shipped, from its report: the plan (``plan_str``), the trial, which of its own
    alternatives that trial was (``as_alternative``; None: a plan of the search, or dense), and the epoch
    its fine-tune kept (``finetune_epoch`` of ``finetune_epochs``). Where edgeopt ships the plan the user's
    pick also is, the difference between the two files is their distillations' alone."""
    from edgeopt.pipeline.record import plan_str
    from edgeopt.report.tables import shipped_alternative

    best = report.get("best") or {}
    ft, alt = best.get("finetune") or {}, shipped_alternative(report)
    return {
        "plan_str": plan_str(best.get("plan") or {}, best.get("dtype") or "fp32"),
        "trial": best.get("trial"),
        "as_alternative": alt["method"] if alt else None,
        "finetune_epoch": ft.get("epoch"),
        "finetune_epochs": ft.get("epochs"),
    }


KEPT = ("method", "edgeopt", "seed", "path", "exit_code", "dtype", "release_p95_us", "compile_s", "error")
SHIPPED = ("plan_str", "trial", "as_alternative", "finetune_epoch", "finetune_epochs")  # :func:`shipped`'s keys


def reused_compile(earlier: list[dict[str, Any]] | None, frac: float, seed: int, budget_ms: float) -> dict | None:
    """With ``reuse_edgeopt`` (``earlier`` given): the earlier row's compile of this budget and seed, its
    artifact still in the work folder, as the cell's edgeopt row (``reused``), to time and score again beside
    alternatives the earlier run did not have, without compiling again. None when there is no such compile:
    it is compiled afresh. The earlier cell must have asked the same budget (``same_budgets``)."""
    if earlier is None:
        return None
    c = next((c for c in earlier if abs(c["fraction"] - frac) < 1e-9), None)
    if c is None or not math.isclose(c["budget_ms"], budget_ms, rel_tol=1e-9):
        return None
    row = next((r for r in c["rows"] if r.get("edgeopt") and r.get("seed") == seed), None)
    if row is None or (row.get("path") and not Path(row["path"]).is_file()):
        return None
    kept = {k: row[k] for k in KEPT if row.get(k) is not None} | {"reused": True}
    if kept.get("path"):
        kept["path"] = Path(kept["path"])
        report = kept["path"].parent / "report.json"
        if "as_alternative" not in row and report.is_file():  # rows before 7f82afa: what shipped, from the report
            kept |= shipped(json.loads(report.read_text()))
        else:
            kept |= {k: row.get(k) for k in SHIPPED}
    return kept


# --------------------------------------------------------------------------- timing and scoring
def score(path: Path, task: Any) -> tuple[float, np.ndarray, float]:
    """Test score (the task's metric), the per-sample correctness vector McNemar pairs, and the
    validation score (what a user, who has no test labels, picks an alternative by)."""
    from edgeopt.compiler.metrics import compute_metrics
    from edgeopt.pipeline.evaluate import onnx_predict

    pred = onnx_predict(path, task.X_test)
    val = float(compute_metrics(task.y_val, onnx_predict(path, task.X_val), metric=task.metric).score)
    return float(compute_metrics(task.y_test, pred, metric=task.metric).score), pred == np.asarray(task.y_test), val


def decidable(n: int, alpha: float = 0.05) -> tuple[int, float]:
    """The fewest discordant samples (all one way) McNemar calls significant, and that as points of accuracy."""
    from scipy.stats import binomtest

    k = next(k for k in range(1, 64) if binomtest(k, k, 0.5).pvalue < alpha)
    return k, 100.0 * k / n


# --------------------------------------------------------------------------- one cell
def _rank(row: dict[str, Any]) -> tuple[float, float, float]:
    """The alternative a user picks: the highest validation score, then the fastest p50 (then test, for
    rows scored before val was: older results)."""
    return row.get("val_score", row["test_score"]), -row["p50_us"], row["test_score"]


def pick(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The user's pick: of the alternatives that meet the budget, the one :func:`_rank` puts first."""
    return max((r for r in rows if r.get("meets") and not r.get("edgeopt")), key=_rank, default=None)


def _oracle(row: dict[str, Any]) -> tuple[float, float]:
    """The best alternative by test score: what no user can pick (test labels), shown beside the goals."""
    return row["test_score"], -row["p50_us"]


def cell(
    task: Any,
    alts: list[dict[str, Any]],
    frac: float,
    dense_p95_ms: float,
    args: SimpleNamespace,
    out: Path,
    earlier: list[dict[str, Any]] | None = None,
):
    """One (model, budget): edgeopt per seed, every file timed interleaved and scored, the goals judged.
    ``earlier``: the model's cells of the results' earlier row, whose compiles ``reuse_edgeopt`` takes."""
    budget_ms = frac * dense_p95_ms
    edges = [
        reused_compile(earlier, frac, s, budget_ms)
        or compile_edgeopt(task, budget_ms, s, out / f"edgeopt-{frac:.3f}-s{s}", args)
        for s in args.seeds
    ]
    rows = [dict(a) for a in alts] + edges
    timed = [r for r in rows if "path" in r]
    for r, t in zip(timed, time_interleaved([r["path"] for r in timed], rounds=args.rounds, block=args.block)):
        r.update(t)
    right: dict[str, np.ndarray] = {}
    for r in timed:
        r["test_score"], right[r["method"]], r["val_score"] = score(r["path"], task)
        r["meets"] = r["p95_us"] <= budget_ms * 1e3
    best = pick(timed)
    oracle = max((r for r in timed if r["meets"] and not r.get("edgeopt")), key=_oracle, default=None)
    for r in timed:
        if best is not None and r is not best:
            r["delta_pt"] = round(100.0 * (r["test_score"] - best["test_score"]), 6) + 0.0  # no "-0.00"
            r["b_right_a_wrong"], r["a_right_b_wrong"], r["mcnemar_p"] = mcnemar(
                right[r["method"]], right[best["method"]]
            )
        if oracle is not None and r.get("edgeopt"):
            r["delta_oracle_pt"] = round(100.0 * (r["test_score"] - oracle["test_score"]), 6) + 0.0
    dense = rows[0]
    goals = [judge(e, best, dense, frac) for e in edges]
    for r in rows:
        r["path"] = str(r["path"]) if "path" in r else None
    best_method = best["method"] if best else None
    level = dense.get("p95_us", 0.0) / (dense_p95_ms * 1e3)  # the host in this cell's window against the start's
    return {
        "fraction": frac,
        "budget_ms": budget_ms,
        "dense_p95_here_over_start": round(level, 3),
        "best_alternative": best_method,
        "best_by_test": oracle["method"] if oracle else None,
        "rows": rows,
        "goals": goals,
    }


def judge(edge: dict[str, Any], best: dict[str, Any] | None, dense: dict[str, Any], frac: float) -> dict[str, Any]:
    """Issue 20's goals for one edgeopt compile in one cell (None: the goal does not apply)."""
    ftext = _frac_text(frac)
    g: dict[str, Any] = {"method": edge["method"], "never_worse": None, "clearly_better": None, "vs_dense": None}
    if "error" in edge:
        refused_fast = edge["compile_s"] <= REFUSAL_S
        g["never_worse"] = False if best is not None else None
        g["vs_dense"] = refused_fast if ftext == "1/4" else (False if ftext == "1/3" else None)
        return g
    if best is not None:
        ok_score = edge["test_score"] >= best["test_score"] - TOL
        g["never_worse"] = bool(ok_score and edge["meets"])
        faster = best["p50_us"] / edge["p50_us"] >= SPEED and ok_score
        g["clearly_better"] = bool(edge["meets"] and (edge["test_score"] >= best["test_score"] + BETTER or faster))
    if ftext in DENSE_LOSS:
        g["vs_dense"] = bool(edge["meets"] and dense["test_score"] - edge["test_score"] <= DENSE_LOSS[ftext])
    return g


# --------------------------------------------------------------------------- one model
def run_model(name: str, args: SimpleNamespace) -> dict[str, Any]:
    """The alternatives once, then one cell per budget fraction; the plot at the end."""
    from edgeopt.models.examples import load_example

    t0 = time.perf_counter()
    pinned = pinned_budget(name, args)
    before = None  # the earlier row, whose compiles ``reuse_edgeopt`` judges again beside this run's alternatives
    if getattr(args, "reuse_edgeopt", 0):
        if not pinned:
            raise ValueError(f"frontier: reuse_edgeopt: expected same_budgets=1 and an earlier row of {name}")
        before = next(m for m in args.previous["models"] if m["model"] == name)
    task = load_example(name, seed=0)
    out = args.work / name
    out.mkdir(parents=True, exist_ok=True)
    epochs = args.final_epochs if args.final_epochs is not None else 80  # compile()'s final fine-tune default
    alts = alternatives(task, out, args.ratios, epochs, reuse=bool(getattr(args, "reuse_alternatives", 0)))
    # The budgets' dense p95 timed the way the cells are (a fresh torch-free process, rounds of blocks, beside
    # the alternatives' files). The cells' own dense p95 read 0.69-0.88x an in-process bench's beside torch
    # (5baed22, cnn1d) and 1.32-1.48x dense's timed alone in a fresh process (5d7052a, cnn1d).
    built = [a["path"] for a in alts if "path" in a]
    dense_p95_ms = time_interleaved(built, rounds=args.rounds, block=args.block)[0]["p95_us"] / 1e3
    start_p95_ms = dense_p95_ms
    dense_p95_ms = pinned["dense_p95_ms"] if pinned else dense_p95_ms
    n = len(task.y_test)
    k, pts = decidable(n)
    res: dict[str, Any] = {"model": name, "metric": task.metric, "test_samples": n, "dense_p95_ms": dense_p95_ms}
    if pinned:  # this run's own start value beside it: how far the host's level moved
        res["budgets_from"] = {**pinned, "start_dense_p95_ms": start_p95_ms}
    res |= {"commit": provenance().get("commit"), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    keys = ("fractions", "ratios", "seeds", "trials", "final_epochs", "reuse_alternatives", "same_budgets")
    keys += ("reuse_edgeopt",)
    res["parameters"] = {k: getattr(args, k, None) for k in keys}
    res |= {"mcnemar_min_discordant": k, "mcnemar_min_pt": pts, "cells": []}
    if before is not None:  # the compiles' own run: an earlier re-judged row names it
        res["edgeopt_from"] = before.get("edgeopt_from") or pinned.get("commit")
    for frac in args.fractions:
        res["cells"].append(cell(task, alts, frac, dense_p95_ms, args, out, before and before["cells"]))
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        args.save_partial(res)
    res["plot"] = plot(res, args.out / "frontier" / f"{name}.png")
    return res


def pinned_budget(name: str, args: SimpleNamespace) -> dict[str, Any] | None:
    """With ``same_budgets``: the dense p95 the budgets were taken from in the results' earlier row of
    ``name`` (its commit beside it), so that two commits are compared on the same cells. Taken afresh, it
    read 39.5-55.4 µs for cnn1d in four runs of one day, and each run's cells asked for other budgets.
    None without the option or an earlier row."""
    if not getattr(args, "same_budgets", 0):
        return None
    for m in (getattr(args, "previous", None) or {}).get("models") or []:
        if m.get("model") == name and m.get("dense_p95_ms"):
            return {"dense_p95_ms": float(m["dense_p95_ms"]), "commit": m.get("commit")}
    return None


def plot(res: dict[str, Any], path: Path) -> str:
    """Latency (p50, µs) against test score: every method of every cell, each budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(res["cells"]):
        color = colors[i % len(colors)]
        timed = [r for r in c["rows"] if r.get("p50_us") is not None]
        for r in timed:
            marker = "*" if r.get("edgeopt") else ("s" if "int8" in r["method"] else "o")
            ax.scatter(r["p50_us"], 100 * r["test_score"], marker=marker, s=90 if r.get("edgeopt") else 30, color=color)
            if i == 0 and not r.get("edgeopt"):
                ax.annotate(
                    r["method"].replace("uniform prune ", "p"), (r["p50_us"], 100 * r["test_score"]), fontsize=6
                )
        ax.axvline(c["budget_ms"] * 1e3, color=color, ls="--", lw=1, label=f"budget {_frac_text(c['fraction'])} (p95)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("p50 µs (1 onnxruntime thread, interleaved); ★ edgeopt, ■ int8, ● fp32")
    ax.set_ylabel(f"test {res['metric']} (%)")
    ax.set_title(f"{res['model']}: latency against test score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"frontier/{path.name}"


# --------------------------------------------------------------------------- the report
def _f(v: Any, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def cell_table(c: dict[str, Any]) -> list[str]:
    lines = [
        f"**budget {_frac_text(c['fraction'])} of the dense p95 = {c['budget_ms'] * 1e3:.0f} µs p95**; "
        f"best alternative meeting it (by val, as a user picks): {c['best_alternative'] or 'none'}; "
        f"by test (no user can pick so): {c.get('best_by_test') or '-'}; the dense p95 timed in this cell is "
        f"{c.get('dense_p95_here_over_start', float('nan')):.2f}x the one the budget was taken from",
        "",
        "| method | p50 µs | p95 µs | meets budget | val score | test score | Δ vs best alternative (pt) | McNemar p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in c["rows"]:
        if r.get("error"):
            lines.append(f"| {r['method']} | — | — | — | — | {r['error']} ({r.get('compile_s', '?')} s) | — | — |")
            continue
        meets = "yes" if r["meets"] else "no"
        if r.get("edgeopt"):
            release = f"; release p95 {r['release_p95_us']:.1f}" if r.get("release_p95_us") else ""
            what = f"; shipped {r['as_alternative']}" if r.get("as_alternative") else ""
            epoch = f"; fine-tune epoch {r['finetune_epoch']}/{r['finetune_epochs']}" if r.get("finetune_epoch") else ""
            r = r | {
                "method": f"{r['method']} ({r['dtype']}, exit {r['exit_code']}, {r['compile_s']:.0f} s{release}{what}"
                f"{epoch})"
            }
        val = _f(None if r.get("val_score") is None else 100 * r["val_score"], ".2f")
        oracle = f" ({r['delta_oracle_pt']:+.2f} vs the best by test)" if r.get("delta_oracle_pt") is not None else ""
        lines.append(
            f"| {r['method']} | {r['p50_us']:.1f} | {r['p95_us']:.1f} | {meets} | {val} | "
            f"{100 * r['test_score']:.2f} | {_f(r.get('delta_pt'), '+.2f')}{oracle} | {_f(r.get('mcnemar_p'), '.3f')} |"
        )
    return lines + [""]


def _verdict(v: Any) -> str:
    return {True: "met", False: "**not met**", None: "n/a"}[v]


def goals_table(models: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | budget | compile | never worse | clearly better | vs dense |", "|---|---|---|---|---|---|"]
    for m in models:
        for c in m["cells"]:
            for g in c["goals"]:
                verdicts = " | ".join(_verdict(g[k]) for k in GOALS)
                lines.append(f"| {m['model']} | {_frac_text(c['fraction'])} | {g['method']} | {verdicts} |")
    return lines + [""]


def _tally(goals: list[list[dict[str, Any]]], key: str) -> dict[str, int]:
    """Cells (each judged on all its seeds) that meet ``key``, out of those where it applies."""
    applies = [v for v in ([g[key] for g in cell] for cell in goals) if any(x is not None for x in v)]
    return {"met": sum(all(x is not False for x in v) for v in applies), "of": len(applies)}


def goals_against_the_cells_dense(c: dict[str, Any]) -> list[dict[str, Any]]:
    """The cell's goals judged again with the budget taken as its fraction of the dense p95 timed in the cell
    itself, beside every other file, rather than at the run's start in another window: a ratio measured side
    by side. Both windows' judgments are reported; the goals are the first's."""
    rows = [dict(r) for r in c["rows"]]
    dense = rows[0]  # the cell's first row is the dense file (``alternatives``)
    if not dense.get("p95_us") or dense.get("edgeopt"):
        return []
    for r in rows:
        if r.get("p95_us") and "meets" in r:
            r["meets"] = r["p95_us"] <= c["fraction"] * dense["p95_us"]
    best = pick(rows)
    return [judge(e, best, dense, c["fraction"]) for e in rows if e.get("edgeopt")]


def summary(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Per goal: cells (each judged on all its seeds) met out of those where it applies; the same judged
    against the dense p95 of each cell's own window (``against_the_cells_dense``)."""
    cells = [c for m in models for c in m["cells"]]
    out: dict[str, Any] = {key: _tally([c["goals"] for c in cells], key) for key in GOALS}
    out["clearly_better_goal"] = out["clearly_better"]["met"] * 2 >= out["clearly_better"]["of"]
    # edgeopt's compiles against the user's pick of their cell, at p50 (timed side by side)
    picks = [(pick(c["rows"]), c) for c in cells]
    pairs = [(p, r) for p, c in picks if p for r in c["rows"] if r.get("edgeopt") and r.get("p50_us")]
    out["faster_than_pick"] = {"met": sum(r["p50_us"] < p["p50_us"] for p, r in pairs), "of": len(pairs)}
    here = [goals_against_the_cells_dense(c) for c in cells]
    out["against_the_cells_dense"] = {key: _tally(here, key) for key in GOALS}
    # How the cell's window compares with the compile's own release measurement, which selection's headroom
    # (5 % of the bound) is sized for: edgeopt's p95 in the cell over its release p95.
    ratios = [
        r["p95_us"] / r["release_p95_us"]
        for m in models
        for c in m["cells"]
        for r in c["rows"]
        if r.get("edgeopt") and r.get("p95_us") and r.get("release_p95_us")
    ]
    if ratios:
        out["cell_over_release_p95"] = {
            "n": len(ratios),
            "median": round(float(np.median(ratios)), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        }
    return out


def markdown(models: list[dict[str, Any]]) -> str:
    lines = [
        "Timings: every ONNX file of a cell timed interleaved in one fresh process without torch "
        "(round-robin blocks, pooled samples, 1 onnxruntime thread); meets budget = p95 ≤ budget. "
        "Δ and McNemar: against the best alternative meeting the budget, picked by its validation score as a "
        "user without test labels would (McNemar on per-sample correctness of the test split); edgeopt's rows "
        "also give Δ against the alternative with the best test score, which no user can pick (decision 0110).",
        "",
    ]
    for m in models:
        lines += [f"### {m['model']}", ""]
        lines += [
            f"{m['test_samples']} test samples: McNemar (p < 0.05) needs ≥ {m['mcnemar_min_discordant']} discordant "
            f"samples all one way, so the smallest difference it can decide is {m['mcnemar_min_pt']:.2f} pt of "
            f"accuracy. Dense p95 {m['dense_p95_ms'] * 1e3:.0f} µs. Run at {m.get('commit', '?')}, "
            f"{str(m.get('started', '?'))[:16]}."
            + (
                f" edgeopt's compiles are the run's at {m['edgeopt_from']}, on the same budgets, timed and scored "
                "again beside this run's alternatives (`reuse_edgeopt`)."
                if m.get("edgeopt_from")
                else ""
            ),
            "",
        ]
        if m.get("plot"):
            lines += [f"![{m['model']} frontier]({m['plot']})", ""]
        for c in m["cells"]:
            lines += cell_table(c)
    s = summary(models)
    lines += ["### Goals per cell", "", *goals_table(models)]
    lines += [
        f"Summary: never worse in {s['never_worse']['met']} of {s['never_worse']['of']} cells; clearly better in "
        f"{s['clearly_better']['met']} of {s['clearly_better']['of']} (goal: at least half: "
        f"{'met' if s['clearly_better_goal'] else 'not met'}); against dense at 1/3 and 1/4: "
        f"{s['vs_dense']['met']} of {s['vs_dense']['of']}; faster than the user's pick (p50) in "
        f"{s['faster_than_pick']['met']} of {s['faster_than_pick']['of']} compiles.",
    ]
    h = s["against_the_cells_dense"]
    lines += [
        "",
        f"Judged against each cell's own dense p95 (the budget as its fraction of the dense file timed beside the "
        f"others, not at the run's start): never worse in {h['never_worse']['met']} of {h['never_worse']['of']}, "
        f"clearly better in {h['clearly_better']['met']} of {h['clearly_better']['of']}, against dense "
        f"{h['vs_dense']['met']} of {h['vs_dense']['of']}.",
    ]
    if s.get("cell_over_release_p95"):
        r = s["cell_over_release_p95"]
        lines += [
            "",
            f"edgeopt's p95 in the cell over its compile's release p95 ({r['n']} artifacts): median {r['median']}, "
            f"{r['min']}–{r['max']} (selection confirms a plan with 5 % headroom over its bound).",
        ]
    return "\n".join(lines) + "\n"


def parameters(args: SimpleNamespace) -> list[str]:
    """Check and parse the comma lists in place (ValueError, one line naming the parameter); the model names."""
    names = _csv(args.models)
    if not names or set(names) - set(MODELS):
        raise ValueError(f"frontier: models: expected some of {', '.join(MODELS)}, found {args.models!r}")
    for key, cast in (("fractions", lambda x: float(Fraction(x))), ("ratios", float), ("seeds", int)):
        try:
            values = _csv(getattr(args, key), cast)
        except (ValueError, ZeroDivisionError):
            values = []
        if not values or (key != "seeds" and not all(0 < v < 1 for v in values)):
            want = {"seeds": "integers", "ratios": "numbers in (0, 1)"}.get(key, "fractions in (0, 1) such as 1/3")
            raise ValueError(f"frontier: {key}: expected comma-separated {want}, found {getattr(args, key)!r}")
        setattr(args, key, values)
    return names


def run(args: SimpleNamespace) -> Outcome:
    """Every model of ``models``, every fraction of ``fractions``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("edgeopt").setLevel(logging.WARNING)
    names = parameters(args)
    models: list[dict[str, Any]] = [m for m in (args.previous or {}).get("models") or [] if m["model"] not in names]
    args.save_partial = lambda res: args.save({"models": [*models, res]}, markdown([*models, res]))
    load0 = os.getloadavg()[0]
    for name in names:
        log.info("[%s] building the alternatives and compiling at %s", name, args.fractions)
        models.append(run_model(name, args))
    results = {"models": models, "summary": summary(models), "load_average": [round(load0, 2), os.getloadavg()[0]]}
    notes = [
        "McNemar pairs per-sample correctness; the score column is the task's metric (macro-F1), so a Δ in "
        "score and the discordant counts can differ in sign on imbalanced classes.",
        "A cell's goal counts as met only when it holds for every edgeopt seed.",
    ]
    return Outcome(results, markdown(models), notes)
