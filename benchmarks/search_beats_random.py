"""Search efficiency: edgeopt's search against Optuna's RandomSampler at equal wall time.

Per model and seed: one ``compile(..., sampler="tpe")`` (TPE with the budget constraints and the
pre-training latency screen, as shipped) and one ``compile(..., sampler="random")`` (Optuna's
RandomSampler, same space, same screen, same pruner), each with the same search timeout and the
SAME warm start: compile enqueues its uniform warm-start plans only for TPE, so this benchmark
enqueues the very same plans (``uniform_warm_start``, same labels) first in the random study too;
the ratio then measures the search, not the warm start. Every run of a model also reads the same
per-layer table (``tables.json``, built by its first run): measured again per run, the same knobs gave
different plans. Models:

- ``digits-mlp`` on ``rpi4-demo`` (the demo's budgets), trials of 12 epochs (compile's default);
- ``resnet8`` (MLPerf Tiny's ResNet-8, 78K parameters) on ``benchmarks/host-1t.toml`` with a p95
  budget of half the dense model's (measured first), trials of ````resnet8_epochs```` epochs (2:
  ~6 s a trial on this host, so a search holds tens of trials), without the implicit quality floor.

The trials' completion times are read from the study (Optuna's ``datetime_complete`` relative to
the first trial's start), and for each sampler we find the wall time at which its best *feasible*
validation score first came within ``tolerance`` (0.5 point) of the best feasible score either
sampler found in that seed. Ratio = edgeopt time / random time (below 1: edgeopt is faster; the
goal is a median of at most 0.5). A sampler that never gets there is given the full timeout and
marked as censored (its ratio is then an upper bound for edgeopt).

    flock /tmp/edgeopt-bench.lock python -m benchmarks search_beats_random [--set seeds=0,1,2 --set timeout=40]
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.suite import HOST_1T, Outcome

MODELS = ("digits-mlp", "resnet8")
DEMO_TARGET = "rpi4-demo"  # rpi4 with the demo's tight budgets


def shared_warm_start() -> dict[str, int]:
    """Make every sampler's fresh study get compile's warm start (compile gives it to TPE only).

    Wraps ``open_study`` as the compile loop calls it: after the original, a fresh study whose sampler
    is not TPE gets the same ``warm_start()`` plans enqueued, with the same labels. Returns a counter
    of the plans so enqueued (0 after a run: the wrap did not apply, e.g. the loop changed)."""
    from edgeopt.pipeline import loop, study

    original = study.open_study
    counter = {"enqueued": 0}

    def open_study(config, *, task_name, target_name, warm_start=None, must_exist=False):
        handle = original(
            config, task_name=task_name, target_name=target_name, warm_start=warm_start, must_exist=must_exist
        )
        if (
            config.sampler != "tpe"
            and warm_start is not None
            and not handle.study.get_trials(deepcopy=False)
            and handle.claim_once("warm-start")
        ):
            for label, params in warm_start():
                handle.study.enqueue_trial(params, user_attrs={"warm_start": label})
                counter["enqueued"] += 1
        return handle

    loop.open_study = open_study
    return counter


def model_setup(name: str, args: SimpleNamespace) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    """(task, target, budget overrides, extra compile settings) of one model."""
    from edgeopt.compiler.export import export_onnx
    from edgeopt.models.examples import load_example
    from edgeopt.runtime.bench import bench

    task = load_example(name)
    if name == "digits-mlp":
        return task, DEMO_TARGET, {}, {}
    # the real architecture: half the dense p95 on this host at 1 thread (as benchmarks/compare.py --models)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = export_onnx(task.model, task.example_input, work / f"{name}-dense.onnx", verify=False)
    p95 = float(bench(path, str(HOST_1T), min_iters=300, min_time_s=1.0).latency_ms["p95"])
    # No implicit quality floor (max_quality_drop=None): after 2 epochs hardly a student is within 5 pt of
    # the teacher, so "feasible" would mean "trained longest", not "best under the budget".
    return (
        task,
        str(HOST_1T),
        {"latency_ms": 0.5 * p95, "dense_p95_ms": p95},
        {"trial_epochs": args.resnet8_epochs, "max_quality_drop": None},
    )


def trial_curve(out: Path, study_name: str) -> list[dict[str, Any]]:
    """Per finished trial: seconds since the study's first trial started, status, feasibility, val score."""
    import optuna

    from edgeopt.pipeline.record import TrialRecord
    from edgeopt.pipeline.storage import make_storage, storage_url

    study = optuna.load_study(study_name=study_name, storage=make_storage(storage_url(None, out)))
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    if not trials:
        return []
    t0 = min(t.datetime_start for t in trials if t.datetime_start is not None)
    rows = []
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        rec = TrialRecord.from_trial(t)
        rows.append(
            {
                "number": t.number,
                "t_s": (t.datetime_complete - t0).total_seconds(),
                "state": t.state.name,
                "status": rec.status.value,
                "feasible": bool(t.state.name == "COMPLETE" and rec.feasible),
                "score": rec.score,
                "latency_ms": rec.latency_ms,
                "plan": rec.plan,
                "warm_start": rec.warm_start,
            }
        )
    return rows


def time_to(curve: list[dict[str, Any]], threshold: float) -> float | None:
    for r in curve:
        if r["feasible"] and r["score"] is not None and r["score"] >= threshold:
            return r["t_s"]
    return None


def best_feasible(curve: list[dict[str, Any]]) -> float | None:
    scores = [r["score"] for r in curve if r["feasible"] and r["score"] is not None]
    return max(scores) if scores else None


def run(args: SimpleNamespace) -> Outcome:
    """TPE against random search at equal wall time, per model and seed."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("edgeopt").setLevel(logging.WARNING)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        raise ValueError(f"models: expected some of {', '.join(MODELS)}, got {args.models!r}")
    counter = shared_warm_start() if args.shared_warm_start else None
    seeds = [int(s) for s in str(args.seeds).split(",")]
    t_all = time.perf_counter()
    result: dict[str, Any] = {
        "timeout_s": args.timeout,
        "tolerance": args.tolerance,
        "shared_warm_start": counter is not None,
        "load_average": {"start": round(os.getloadavg()[0], 2)},
        "models": [],
    }
    for name in models:
        result["models"].append(run_model(name, seeds, args, counter))
        result["load_average"]["end"] = round(os.getloadavg()[0], 2)
        args.save(result, markdown(result))
    result["wall_s"] = time.perf_counter() - t_all
    return Outcome(result, markdown(result))


def run_model(name: str, seeds: list[int], args: SimpleNamespace, counter: dict[str, int] | None) -> dict[str, Any]:
    import edgeopt

    log = logging.getLogger("search_efficiency")
    task, target, budget, extra = model_setup(name, args)
    budget_kw = {k: v for k, v in budget.items() if k != "dense_p95_ms"}
    work = Path(args.work) / name
    per_seed = []
    t_model = time.perf_counter()
    tables = work / "tables.json"  # one table for every run: the same knobs then give the same plan
    if tables.exists():
        tables.unlink()
    for seed in seeds:
        curves, walls = {}, {}
        for sampler in ("tpe", "random"):
            out = work / f"{sampler}-seed{seed}"
            if out.exists():
                shutil.rmtree(out)
            if tables.exists():
                out.mkdir(parents=True)
                shutil.copy(tables, out / "tables.json")
            log.info("%s seed %d, %s: %.0f s of search", name, seed, sampler, args.timeout)
            before = counter["enqueued"] if counter else 0
            t0 = time.perf_counter()
            res = edgeopt.compile(
                task,
                target,
                trials=10_000,
                timeout=args.timeout,
                out=out,
                seed=seed,
                sampler=sampler,
                final_epochs=1,
                final_bench={"min_iters": 20, "min_time_s": 0.05, "max_iters": 200},
                budget=budget_kw or None,
                progress=False,
                **extra,
            )
            walls[sampler] = time.perf_counter() - t0
            if not tables.exists() and (out / "tables.json").exists():
                shutil.copy(out / "tables.json", tables)
            curves[sampler] = trial_curve(out, res.report.get("study") or f"{task.name}-{Path(target).stem}")
            if sampler == "random" and counter is not None and counter["enqueued"] == before:
                log.warning(
                    "%s seed %d: the random study got no warm start (the wrap of open_study did not apply)", name, seed
                )
        bests = {s: best_feasible(c) for s, c in curves.items()}
        top = max((b for b in bests.values() if b is not None), default=None)
        entry: dict[str, Any] = {
            "seed": seed,
            "best_feasible": bests,
            "top": top,
            "threshold": None,
            "time_to_s": {},
            "censored": {},
            "trials": {s: len(c) for s, c in curves.items()},
            "warm_start_trials": {s: sum(bool(r.get("warm_start")) for r in c) for s, c in curves.items()},
            "feasible_trials": {s: sum(r["feasible"] for r in c) for s, c in curves.items()},
            "screened_out": {s: sum(r["status"] == "screened-out" for r in c) for s, c in curves.items()},
            "pruned": {s: sum(r["state"] == "PRUNED" for r in c) for s, c in curves.items()},
            "search_end_s": {s: (c[-1]["t_s"] if c else None) for s, c in curves.items()},
            "compile_wall_s": walls,
            "curves": curves,
        }
        if top is not None:
            thr = top - args.tolerance
            entry["threshold"] = thr
            for s, c in curves.items():
                t = time_to(c, thr)
                entry["censored"][s] = t is None
                entry["time_to_s"][s] = t if t is not None else (c[-1]["t_s"] if c else args.timeout)
            entry["ratio"] = entry["time_to_s"]["tpe"] / max(entry["time_to_s"]["random"], 1e-9)
            entry["best_is_warm_start"] = {s: _best_is_warm(c, thr) for s, c in curves.items()}
        per_seed.append(entry)
        log.info("%s seed %d: best %s, time to within %.3f: %s", name, seed, bests, args.tolerance, entry["time_to_s"])
    ratios = [e["ratio"] for e in per_seed if "ratio" in e]
    times = {s: [e["time_to_s"][s] for e in per_seed if "ratio" in e] for s in ("tpe", "random")}
    return {
        "model": name,
        "target": Path(target).stem if target.endswith(".toml") else target,
        "budget": budget,
        "extra": extra,
        "seeds": per_seed,
        "median_ratio": statistics.median(ratios) if ratios else None,
        "median_time_s": {s: (statistics.median(v) if v else None) for s, v in times.items()},
        "ratio_of_medians": (
            statistics.median(times["tpe"]) / max(statistics.median(times["random"]), 1e-9) if ratios else None
        ),
        "wall_s": time.perf_counter() - t_model,
    }


def _best_is_warm(curve: list[dict[str, Any]], threshold: float) -> bool:
    """Whether the first trial to reach the threshold was a warm-start plan."""
    for r in curve:
        if r["feasible"] and r["score"] is not None and r["score"] >= threshold:
            return bool(r.get("warm_start"))
    return False


def markdown(r: dict[str, Any]) -> str:
    la = r.get("load_average", {})
    lines = [
        f"{r['timeout_s']:.0f} s of search per sampler per seed; time (s since the first trial started) until the best "
        f"feasible validation score is within {r['tolerance'] * 100:.1f} pt of the best feasible either sampler found "
        f"in that seed. `>` = never got there (censored at the end of its search). Warm start: "
        f"{'the same uniform plans enqueued first for both samplers' if r.get('shared_warm_start') else 'TPE only'}; "
        f"w = the first trial to get there was a warm-start plan. One per-layer table per model, built by its "
        f"first run and copied to the others, so the same knobs give the same plan. Load average (1 min) start / end: "
        f"{la.get('start', '?')} / {la.get('end', '?')}.",
        "",
    ]
    for m in r["models"]:
        b = m["budget"]
        where = f"`{m['target']}`" + (
            f", p95 ≤ {b['latency_ms'] * 1e3:.0f} µs (½ dense p95 {b['dense_p95_ms'] * 1e3:.0f} µs)"
            if b.get("latency_ms")
            else " (the demo's budgets)"
        )
        epochs = m["extra"].get("trial_epochs")
        lines += [
            f"#### {m['model']} on {where}{f', {epochs} epochs a trial' if epochs else ''}",
            "",
            (
                "| seed | best feasible edgeopt / random | edgeopt s | random s | ratio "
                "| trials (warm / feasible / screened / pruned) edgeopt | random |"
            ),
            "|---:|---|---:|---:|---:|---|---|",
        ]
        for e in m["seeds"]:
            if "ratio" not in e:
                lines.append(f"| {e['seed']} | no feasible trial | | | | | |")
                continue
            bf = e["best_feasible"]

            def t(s: str, e: dict[str, Any] = e) -> str:
                w = " w" if e.get("best_is_warm_start", {}).get(s) else ""
                return ("> " if e["censored"][s] else "") + f"{e['time_to_s'][s]:.1f}{w}"

            def c(s: str, e: dict[str, Any] = e) -> str:
                return (
                    f"{e['trials'][s]} ({e.get('warm_start_trials', {}).get(s, '?')} / {e['feasible_trials'][s]} / "
                    f"{e['screened_out'][s]} / {e['pruned'][s]})"
                )

            def fb(v: float | None) -> str:
                return "—" if v is None else f"{v:.4f}"

            lines.append(
                f"| {e['seed']} | {fb(bf['tpe'])} / {fb(bf['random'])} | {t('tpe')} | {t('random')} | "
                f"{e['ratio']:.2f} | "
                f"{c('tpe')} | {c('random')} |"
            )
        mr, mt = m["median_ratio"], m["median_time_s"]
        lines += [
            "",
            f"Median ratio (edgeopt / random): **{'—' if mr is None else f'{mr:.2f}'}**; median time edgeopt "
            f"{_s(mt.get('tpe'))} s, random {_s(mt.get('random'))} s (ratio of medians "
            f"{_s(m.get('ratio_of_medians'), '.2f')}; goal: ≤ 0.50).",
            "",
        ]
    return "\n".join(lines).rstrip()


def _s(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)
