"""Are refusals, acceptances and shipped plans the same from run to run on a busy host?

For the whole run another process keeps one core busy (on top of whatever else the host runs). Each
model is compiled ``repeats`` times through the CLI, each time from scratch (its own output folder, so
its own per-layer tables and study):

- ``demo``: ``edgeopt demo`` (digits-mlp on ``rpi4-demo``, the demo's budgets and search settings);
- ``resnet8``, ``mobilenet``, ``vit``, ``cnn1d``: ``edgeopt compile --example NAME`` on
  ``benchmarks/host-1t.toml`` at half the dense p95 with the compile's own search (30 trials, 12 epochs
  each, 420 s: the search's share of the default time budget) and a final fine-tune of 10 epochs; the
  dense p95 is measured once, before the repeats, so every repeat gets the same budget. Until decision
  0123 the default was ``edgeopt_vs_baselines``'s shorter search (``--set settings=short``): cnn1d's 45 s
  of 6-epoch trials shipped five plans 19.9 % apart on the AMD host (037d38c), where the compile's own
  search, with the same search code and host (7cf3018), shipped one plan five times (0.5 %).

Per model: the verdict of every run (accepted: budgets met; failed: a plan shipped over a budget;
refused: the budget was refused, before the search on the tables' floor or after it when no finalist
was confirmed within it), and the shipped plans' p50. Each compile reports
the p50 it measured, at its own moment of the host's load; after the repeats, the accepted artifacts are
timed again side by side, interleaved in one fresh process without torch
(:func:`benchmarks.interleaved.time_interleaved`, 1 thread), which separates a difference between the
plans from the load of the moment. Goals: the same
verdict every time, and the accepted plans' side-by-side p50 within 10 % of each other (max / min); the
spread of the compiles' own p50 is stated beside it.

Beside the goals, how far one measurement carries to another window: a plan re-measured as a finalist
by several of the compiles (the same plan and precision), the max / min of its p50 and of its p95 over
them, the median over such plans (``same_plan``). Selection's headroom rests on the second (decision 0108).

The host's speed of the moment is recorded beside each compile: the dense model's p50 (the same file,
:data:`LEVEL_ROUNDS` short blocks in a fresh process without torch) right before and right after it. A
verdict that follows that level, not the plans, is the host's window, and the table says so.

Models run in separate invocations accumulate in one results file (``--set models=cnn1d`` replaces
cnn1d's entry and keeps the others); each entry names the commit and time of its own run. ``--set
same_budgets=1`` takes each model's budget from its earlier entry (:func:`pinned_budget`), to compare two
commits on one cell.

    flock /tmp/edgeopt-bench.lock python -m benchmarks plans_stable_under_load [--quick]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import edgeopt_vs_baselines as compare
from benchmarks.interleaved import time_interleaved
from benchmarks.suite import HOST_1T, ROOT, Outcome, host, one_core_busy, provenance

P50_SPREAD = 0.10  # accepted plans' p50, max / min - 1
RETIME_ROUNDS, RETIME_BLOCK = 30, 200  # side-by-side timing: rounds of one block per artifact
LEVEL_ROUNDS, LEVEL_BLOCK = 10, 100  # the host's level: the dense file's p50 before and after each compile


def dense_p95_ms(name: str, work: Path) -> float:
    """The dense model's p95 on host-1t, as ``edgeopt_vs_baselines`` measures it."""
    from edgeopt.runtime.bench import bench

    return float(bench(export_dense(name, work), str(HOST_1T), min_iters=2000, min_time_s=2.0).latency_ms["p95"])


def export_dense(name: str, work: Path) -> Path:
    """The dense model's ONNX file (:func:`dense_path`), exported from the example."""
    from edgeopt.compiler.export import export_onnx
    from edgeopt.models.examples import load_example

    task = load_example(name)
    return Path(export_onnx(task.model, task.example_input, dense_path(name, work), verify=False))


def dense_path(name: str, work: Path) -> Path:
    return work / f"{name}-dense.onnx"


def host_level_ms(dense: Path) -> float | None:
    """The host's speed of the moment: the dense file's p50 (ms) in a fresh process, or None without one."""
    if not dense.is_file():
        return None
    return round(time_interleaved([dense], rounds=LEVEL_ROUNDS, block=LEVEL_BLOCK)[0]["p50_us"] / 1e3, 6)


def command(name: str, args: SimpleNamespace, budget_ms: float | None, out: Path) -> list[str]:
    """The CLI call for one repeat; ``trials``, ``timeout`` and the epochs override the model's own."""
    if name == "demo":
        cmd = ["demo", "--out", str(out)]
        cmd += ["--trials", str(args.trials)] if args.trials else []
        return cmd + (["--timeout", str(args.timeout)] if args.timeout else [])
    s = settings_of(name, args)
    return [
        *("compile", "--example", name, "--target", str(HOST_1T), "--latency-ms", f"{budget_ms:.6f}"),
        *("--trials", str(s["trials"]), "--timeout", str(s["timeout"])),
        *("--epochs", str(s["epochs"]), "--final-epochs", str(s["final_epochs"])),
        *("--out", str(out)),
    ]


SETTINGS = ("trials", "timeout", "epochs", "final_epochs")  # the compile options a run may override
FINAL_EPOCHS = 10  # the final fine-tune's epochs in these compiles (compile's default: 80)
SEARCHES = ("compile", "short")  # ``--set settings=``: the compile's own search, or ARCH_SEARCH's shorter one


def compile_search() -> dict[str, Any]:
    """The search a user's ``edgeopt compile`` runs by default, written out: its trials and trial epochs, and
    the search's share of the default ``--time-budget`` as ``--timeout``; the final fine-tune shortened to
    :data:`FINAL_EPOCHS` (it trains the plan that was chosen, not which plan ships)."""
    from edgeopt.pipeline.config import TIME_BUDGET_S, TIME_SPLIT, CompileConfig

    d = CompileConfig.defaults()
    timeout = round(TIME_BUDGET_S * TIME_SPLIT["search"])
    return {"trials": d["trials"], "timeout": timeout, "epochs": d["trial_epochs"], "final_epochs": FINAL_EPOCHS}


def settings_of(name: str, args: SimpleNamespace) -> dict[str, Any]:
    """The search settings a compile of ``name`` runs with: the compile's own (:func:`compile_search`), each
    replaced by the run's option when given; ``--set settings=short``: ``edgeopt_vs_baselines``'s shorter
    ones (``ARCH_SEARCH``), which the entries before 0123 ran with. The demo's are its own (None: not
    overridden)."""
    if name not in compare.ARCH_SEARCH:
        own = {}
    elif getattr(args, "settings", None) == "short":
        own = dict(zip(SETTINGS, compare.ARCH_SEARCH[name]))
    else:
        own = compile_search()
    return {k: getattr(args, k, None) or own.get(k) for k in SETTINGS}


def finalists_of(out: Path) -> list[dict[str, Any]]:
    """The finalists a compile re-measured: ``compile.json``'s, or a refused compile's ``report.json``'s."""
    for name in ("compile.json", "report.json"):
        path = out / name
        if path.is_file():
            rows = json.loads(path.read_text()).get("finalists") or []
            if rows:
                return [r for r in rows if r.get("plan") is not None and r.get("trial") != "dense"]
    return []


def same_plan(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Plans re-measured by more than one compile: the median over them of max / min of their p50 and p95."""
    seen: dict[str, list[tuple[int, float, float]]] = {}
    for i, r in enumerate(runs):
        for f in r.get("finalists") or []:
            key = json.dumps([f["plan"], f.get("dtype")], sort_keys=True)
            seen.setdefault(key, []).append((i, float(f["latency_p50_ms"]), float(f["latency_ms"])))
    shared = [v for v in seen.values() if len({i for i, _, _ in v}) > 1]
    if not shared:
        return None

    def ratio(xs: list[float]) -> float:
        return max(xs) / min(xs)

    return {
        "plans": len(shared),
        "p50_max_over_min": round(statistics.median(ratio([x[1] for x in v]) for v in shared), 3),
        "p95_max_over_min": round(statistics.median(ratio([x[2] for x in v]) for v in shared), 3),
    }


def shipped_finalist(finalists: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the shipped plan stood among its compile's finalists: val F1 points below the best finalist
    (how many tiers selection went down for a confirmed plan), and its own p95 / p50 (what a p95 budget
    leaves of its p50: the same budget ships plans whose p50 differ by as much as that ratio does)."""
    shipped = next((f for f in finalists if f.get("shipped")), None)
    if shipped is None or shipped.get("val_score") is None:
        return None
    best = max(float(f["val_score"]) for f in finalists if f.get("val_score") is not None)
    return {
        "pt_below_best": round(100 * (best - float(shipped["val_score"])), 2),
        "p95_over_p50": round(float(shipped["latency_ms"]) / float(shipped["latency_p50_ms"]), 3),
    }


def trials_of(out: Path) -> dict[str, int] | None:
    """What the compile's study ran, by kind: the strategy's warm start, the seeded alternatives, the steps
    down the tier's speed (decision 0122) and the sampler's own trials; how many of those were pruned."""
    import optuna

    db = out / "study.db"
    if not db.is_file():
        return None
    url = f"sqlite:///{db}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = [
        t
        for s in optuna.get_all_study_summaries(url)
        for t in optuna.load_study(study_name=s.study_name, storage=url).trials
    ]
    kinds = {"warm_start": "warm_start", "alternatives": "alternative", "steps": "descent"}
    counts = {k: sum(attr in t.user_attrs for t in trials) for k, attr in kinds.items()}
    own = [t for t in trials if not any(attr in t.user_attrs for attr in kinds.values())]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in own)
    return {"total": len(trials), **counts, "own": len(own), "own_pruned": pruned}


def one_run(cmd: list[str], out: Path) -> dict[str, Any]:
    """Run one compile; its verdict, shipped plan and p50 from its report (none when it was refused)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "edgeopt", *cmd], cwd=ROOT, capture_output=True, text=True)
    row: dict[str, Any] = {"exit": p.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    finalists = [
        {k: f[k] for k in ("plan", "dtype", "latency_p50_ms", "latency_ms", "val_score", "shipped") if k in f}
        for f in finalists_of(out)
    ]
    row["finalists"] = finalists
    row["shipped_finalist"] = shipped_finalist(finalists)
    row["trials"] = trials_of(out)
    report = out / "report.json"
    doc = json.loads(report.read_text()) if report.exists() else {}
    if "best" not in doc:  # refused (report.json says why), or stopped before any report
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        return {**row, "verdict": "refused", "reason": (doc.get("refused") or (lines[-1] if lines else ""))[:300]}
    best = doc["best"]
    return {
        **row,
        "verdict": "accepted" if best["budget"]["passed"] else "failed",
        "p50_ms": best["latency_ms"]["p50"],
        "p95_ms": best["latency_ms"]["p95"],
        "plan": best.get("plan"),
        "artifact": str(out / "model.onnx"),
        # the shipped file's own scores: a trial's val figure (3 epochs) is not what the fine-tune ships
        **{f"{split}_score": (best.get("metrics") or {}).get(split, {}).get("score") for split in ("val", "test")},
    }


def retime(runs: list[dict[str, Any]]) -> None:
    """Time the accepted runs' artifacts side by side (interleaved, one process); ``retimed_p50_ms`` on each."""
    accepted = [r for r in runs if r["verdict"] == "accepted" and r.get("artifact") and Path(r["artifact"]).is_file()]
    if not accepted:
        return
    timed = time_interleaved([Path(r["artifact"]) for r in accepted], rounds=RETIME_ROUNDS, block=RETIME_BLOCK)
    for r, t in zip(accepted, timed):
        r["retimed_p50_ms"] = round(t["p50_us"] / 1e3, 6)


def _spread(values: list[float]) -> float | None:
    return max(values) / min(values) - 1 if len(values) > 1 else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Same verdict every time; the accepted plans' p50 spread (max / min - 1) against the goal: the
    side-by-side one when the artifacts were re-timed, else the compiles' own."""
    verdicts = sorted({r["verdict"] for r in runs})
    accepted = [r for r in runs if r["verdict"] == "accepted"]
    reported = _spread([r["p50_ms"] for r in accepted])
    retimed = [r["retimed_p50_ms"] for r in accepted if "retimed_p50_ms" in r]
    spread = _spread(retimed) if retimed and len(retimed) == len(accepted) else reported
    return {
        "verdicts": {v: sum(r["verdict"] == v for r in runs) for v in verdicts},
        "same_verdict": len(verdicts) == 1,
        "reported_p50_spread": reported,
        "side_by_side": bool(retimed) and len(retimed) == len(accepted),
        "p50_spread": spread,
        "p50_within_goal": spread is None or spread <= P50_SPREAD,
        "distinct_plans": len({json.dumps(r.get("plan"), sort_keys=True) for r in runs}),
        "same_plan": same_plan(runs),
    }


def run(args: SimpleNamespace) -> Outcome:
    """Every model in ``models``, ``repeats`` times, with one core busy throughout."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if getattr(args, "settings", "compile") not in SEARCHES:
        raise ValueError(f"settings: expected one of {', '.join(SEARCHES)}, found {args.settings!r}")
    unknown = sorted(set(models) - {"demo", *compare.ARCH_SEARCH})
    if unknown:
        raise ValueError(f"models: unknown {', '.join(unknown)} (expected demo, {', '.join(compare.ARCH_SEARCH)})")
    kept = {k: v for k, v in ((args.previous or {}).get("models") or {}).items() if k not in models}
    results: dict[str, Any] = {"models": kept}
    with one_core_busy():
        for name in models:
            pinned = pinned_budget(name, args)
            fresh = None if name == "demo" or pinned else compare.BUDGET_FRACTION * dense_p95_ms(name, args.work)
            budget = pinned["budget_ms"] if pinned else fresh
            entry: dict[str, Any] = {"budget_ms": budget, "runs": [], **_provenance(name, args)}
            if pinned:
                entry["budget_from"] = pinned
                export_dense(name, args.work)  # the file the host's level is read from, not timed
            before = host_level_ms(dense_path(name, args.work))
            for i in range(args.repeats):
                out = args.work / name / f"run{i}"
                row = one_run(command(name, args, budget, out), out)
                after = host_level_ms(dense_path(name, args.work))  # also the next compile's "before"
                row["level_ms"], before = [before, after], after
                entry["runs"].append(row)
                shown = {k: v for k, v in row.items() if k != "finalists"}
                print(f"{name} run {i + 1}/{args.repeats}: {shown}", file=sys.stderr, flush=True)
                entry.update(summarize(entry["runs"]))
                results["models"][name] = entry
                args.save(results, markdown(results))
            retime(entry["runs"])
            entry.update(summarize(entry["runs"]))
            args.save(results, markdown(results))
    return Outcome(results, markdown(results))


def pinned_budget(name: str, args: SimpleNamespace) -> dict[str, Any] | None:
    """With ``same_budgets``, the budget of the model's earlier entry and the commit and start it was read
    at, rather than half a dense p95 read afresh with the core busy (it moved 0.205-0.311 ms for resnet8
    between three invocations, so their rows were different cells). None without it; an error without an
    earlier entry, or with one from another CPU."""
    if not getattr(args, "same_budgets", None) or name == "demo":
        return None
    earlier = ((args.previous or {}).get("models") or {}).get(name)
    if not earlier or earlier.get("budget_ms") is None:
        raise ValueError(f"plans_stable_under_load: same_budgets: expected an earlier entry of {name}")
    here = host().get("cpu")
    if earlier.get("cpu") != here:  # a budget read on another machine is another cell (vit's, at d979b30: AMD)
        found = earlier.get("cpu") or "a host it did not record"
        raise ValueError(f"plans_stable_under_load: same_budgets: {name}'s earlier entry ran on {found}, not {here}")
    origin = earlier.get("budget_from") or {"commit": earlier.get("commit"), "started": earlier.get("started")}
    return origin | {"budget_ms": earlier["budget_ms"]}


def _provenance(name: str, args: SimpleNamespace) -> dict[str, Any]:
    """What an entry needs to stand alone in a file that accumulates runs: commit, start, the settings
    its compiles ran with (:func:`settings_of`, whether given or the model's own), and its host's CPU."""
    return {
        "commit": provenance().get("commit"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": host().get("cpu"),  # the file's header names the last run's host only
        "repeats": args.repeats,
        **settings_of(name, args),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | budget | verdicts | same verdict | accepted p50, side by side (ms) | p50 spread (goal ≤ 10 %) "
        "| compiles' own p50 (ms) | their spread | distinct plans | run |",
        "|---|---:|---|---|---|---:|---|---:|---:|---|",
    ]
    for name, e in results["models"].items():
        budget = "rpi4-demo's" if e["budget_ms"] is None else f"{e['budget_ms']:.4f} ms"
        if e.get("budget_from"):
            budget += f" (pinned: {e['budget_from'].get('commit')}'s)"
        accepted = [r for r in e["runs"] if r["verdict"] == "accepted"]
        side = ", ".join(f"{r['retimed_p50_ms']:.4f}" for r in accepted if "retimed_p50_ms" in r) or "-"
        own = ", ".join(f"{r['p50_ms']:.4f}" for r in accepted) or "-"
        spread = "-" if e["p50_spread"] is None else f"{e['p50_spread']:.1%}"
        reported = e.get("reported_p50_spread", e["p50_spread"])
        verdicts = ", ".join(f"{v} {n}" for v, n in e["verdicts"].items())
        settings = ", ".join(f"{k}={e[k]}" for k in SETTINGS if e.get(k))
        run_of = f"{str(e.get('commit') or '?')[:7]}, {e.get('started', '?')[:16]}"
        run_of += f", {e['cpu']}" if e.get("cpu") else ""
        run_of += f"; {settings}" if settings else ""
        lines.append(
            f"| {name} | {budget} | {verdicts} | {'yes' if e['same_verdict'] else '**no**'} | {side} | "
            f"{spread}{'' if e['p50_within_goal'] else ' **over**'} | {own} | "
            f"{'-' if reported is None else f'{reported:.1%}'} | {e['distinct_plans']} | {run_of} |"
        )
    refused = [(n, r["reason"]) for n, e in results["models"].items() for r in e["runs"] if r["verdict"] == "refused"]
    lines += ["", *(f"- {n} refused: {why}" for n, why in refused)]
    shared = [(n, e["same_plan"]) for n, e in results["models"].items() if e.get("same_plan")]
    if shared:
        lines += [
            "",
            "The same plan re-measured as a finalist by several compiles (median over the plans of max / min):",
            "",
        ]
        lines += [
            f"- {n}: {x['plans']} plans, p50 {x['p50_max_over_min']:.3f}, p95 {x['p95_max_over_min']:.3f}"
            for n, x in shared
        ]
    stood = [(n, e["runs"]) for n, e in results["models"].items() if any(r.get("shipped_finalist") for r in e["runs"])]
    if stood:
        lines += [
            "",
            "Where each shipped plan stood: its trial's val F1 pt below its compile's best finalist's; its p95 / "
            "p50; the shipped file's test score (after the final fine-tune).",
            "",
        ]
        lines += [f"- {n}: " + "; ".join(stood_text(r) for r in runs) for n, runs in stood]
    counted = [(n, e["runs"]) for n, e in results["models"].items() if any(r.get("trials") for r in e["runs"])]
    if counted:
        head = "Each compile's trials: total (warm start / alternatives / steps of the walk / the sampler's own"
        lines += ["", head + ", of them pruned).", ""]
        lines += [f"- {n}: " + "; ".join(trials_text(r) for r in runs) for n, runs in counted]
    levels = [(n, e["runs"]) for n, e in results["models"].items() if any(r.get("level_ms") for r in e["runs"])]
    if levels:
        lines += ["", "The host's level beside each compile: the dense model's p50 right before and after it (ms).", ""]
        lines += [f"- {n}: " + "; ".join(_level_text(i, r) for i, r in enumerate(runs)) for n, runs in levels]
    return "\n".join(lines).rstrip() + "\n"


def stood_text(r: dict[str, Any]) -> str:
    x = r.get("shipped_finalist")
    test = f", test {r['test_score']:.4f}" if r.get("test_score") is not None else ""
    return "-" if not x else f"{x['pt_below_best']:.1f} pt, {x['p95_over_p50']:.2f}x{test}"


def trials_text(r: dict[str, Any]) -> str:
    t = r.get("trials")
    if not t:
        return "-"
    kinds = " / ".join(str(t[k]) for k in ("warm_start", "alternatives", "steps", "own"))
    return f"{t['total']} ({kinds}, {t['own_pruned']} pruned)"


def _level_text(i: int, r: dict[str, Any]) -> str:
    levels = list(r.get("level_ms") or [])[:2]
    shown = "/".join("-" if v is None else f"{v:.4f}" for v in levels + [None] * (2 - len(levels)))
    return f"run {i + 1} {r['verdict']} at {shown}"
