"""Search efficiency: edgeopt's search against Optuna's RandomSampler at equal wall time.

On digits-mlp for rpi4 (the demo), per seed: one ``compile(..., sampler="tpe")`` (TPE with the
budget constraints and the pre-training latency screen, as shipped) and one
``compile(..., sampler="random")`` (Optuna's RandomSampler, same space, same screen, same pruner),
each with the same search timeout. The trials' completion times are read from the study (Optuna's
``datetime_complete`` relative to the first trial's start), and for each sampler we find the wall
time at which its best *feasible* validation score first came within ``--tolerance`` (0.5 point)
of the best feasible score either sampler found in that seed. Ratio = edgeopt time / random time
(below 1: edgeopt is faster; the goal is at most 0.5). A sampler that never gets there is given
the full timeout and marked as censored (its ratio is then an upper bound for edgeopt).

    flock /tmp/edgeopt-bench.lock python benchmarks/search_efficiency.py [--seeds 0,1,2] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = "rpi4-demo"  # rpi4 with the demo's tight budgets
EXAMPLE = "digits-mlp"


def trial_curve(out: Path, study_name: str) -> list[dict[str, Any]]:
    """Per finished trial: seconds since the study's first trial started, status, feasibility, val score."""
    import optuna

    from edgeopt.search.record import TrialRecord
    from edgeopt.search.storage import make_storage, storage_url

    study = optuna.load_study(study_name=study_name, storage=make_storage(storage_url(None, out)))
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    if not trials:
        return []
    t0 = min(t.datetime_start for t in trials if t.datetime_start is not None)
    rows = []
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        rec = TrialRecord.from_trial(t)
        rows.append({
            "number": t.number, "t_s": (t.datetime_complete - t0).total_seconds(), "state": t.state.name,
            "status": rec.status.value, "feasible": bool(t.state.name == "COMPLETE" and rec.feasible),
            "score": rec.score, "latency_ms": rec.latency_ms, "plan": rec.plan,
        })
    return rows


def time_to(curve: list[dict[str, Any]], threshold: float) -> float | None:
    for r in curve:
        if r["feasible"] and r["score"] is not None and r["score"] >= threshold:
            return r["t_s"]
    return None


def best_feasible(curve: list[dict[str, Any]]) -> float | None:
    scores = [r["score"] for r in curve if r["feasible"] and r["score"] is not None]
    return max(scores) if scores else None


def main(argv: list[str] | None = None) -> int:
    import edgeopt
    from edgeopt.search.examples import load_example

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--timeout", type=float, default=60.0, help="search seconds per sampler per seed (equal for both)")
    p.add_argument("--tolerance", type=float, default=0.005, help="within this of the best feasible score (0.005 = 0.5 pt)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--work", default="runs/benchmarks/search-efficiency")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("edgeopt").setLevel(logging.WARNING)
    log = logging.getLogger("search_efficiency")
    seeds = [int(s) for s in args.seeds.split(",")]
    task = load_example(EXAMPLE)
    work = Path(args.work)
    per_seed = []
    t_all = time.perf_counter()
    for seed in seeds:
        curves, walls = {}, {}
        for sampler in ("tpe", "random"):
            out = work / f"{sampler}-seed{seed}"
            if out.exists():
                shutil.rmtree(out)
            log.info("seed %d, %s: %.0f s of search", seed, sampler, args.timeout)
            t0 = time.perf_counter()
            res = edgeopt.compile(task, TARGET, trials=10_000, timeout=args.timeout, out=out, seed=seed, sampler=sampler,
                                  final_epochs=1, final_bench={"min_iters": 20, "min_time_s": 0.05, "max_iters": 200},
                                  progress=False)
            walls[sampler] = time.perf_counter() - t0
            curves[sampler] = trial_curve(out, res.report.get("study") or f"{task.name}-{TARGET}")
        bests = {s: best_feasible(c) for s, c in curves.items()}
        top = max((b for b in bests.values() if b is not None), default=None)
        entry: dict[str, Any] = {"seed": seed, "best_feasible": bests, "top": top, "threshold": None, "time_to_s": {},
                                 "censored": {}, "trials": {s: len(c) for s, c in curves.items()},
                                 "feasible_trials": {s: sum(r["feasible"] for r in c) for s, c in curves.items()},
                                 "screened_out": {s: sum(r["status"] == "screened-out" for r in c) for s, c in curves.items()},
                                 "pruned": {s: sum(r["state"] == "PRUNED" for r in c) for s, c in curves.items()},
                                 "search_end_s": {s: (c[-1]["t_s"] if c else None) for s, c in curves.items()},
                                 "curves": curves}
        if top is not None:
            thr = top - args.tolerance
            entry["threshold"] = thr
            for s, c in curves.items():
                t = time_to(c, thr)
                entry["censored"][s] = t is None
                entry["time_to_s"][s] = t if t is not None else (c[-1]["t_s"] if c else args.timeout)
            entry["ratio"] = entry["time_to_s"]["tpe"] / max(entry["time_to_s"]["random"], 1e-9)
        per_seed.append(entry)
        log.info("seed %d: best %s, time to within %.3f: %s", seed, bests, args.tolerance, entry["time_to_s"])
    ratios = [e["ratio"] for e in per_seed if "ratio" in e]
    result = {"schema": "edgeopt.search-efficiency/1", "example": EXAMPLE, "target": TARGET, "timeout_s": args.timeout,
              "tolerance": args.tolerance, "seeds": per_seed, "median_ratio": statistics.median(ratios) if ratios else None,
              "wall_s": time.perf_counter() - t_all}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "search_efficiency.json").write_text(json.dumps(result, indent=2, default=str))
    md = markdown(result)
    (out / "search_efficiency.md").write_text(md + "\n")
    print(md)
    return 0


def markdown(r: dict[str, Any]) -> str:
    lines = [f"digits-mlp for {TARGET}, {r['timeout_s']:.0f} s of search per sampler per seed; time (s since the first "
             f"trial started) until the best feasible validation macro-F1 is within {r['tolerance'] * 100:.1f} pt of the "
             f"best feasible either sampler found in that seed. `>` = never got there (censored at the end of its search).",
             "",
             "| seed | best feasible F1 edgeopt / random | edgeopt s | random s | ratio | trials (feasible / screened / pruned) edgeopt | random |",
             "|---:|---|---:|---:|---:|---|---|"]
    for e in r["seeds"]:
        if "ratio" not in e:
            lines.append(f"| {e['seed']} | no feasible trial | | | | | |")
            continue
        b = e["best_feasible"]

        def t(s: str, e: dict[str, Any] = e) -> str:
            return ("> " if e["censored"][s] else "") + f"{e['time_to_s'][s]:.1f}"

        def c(s: str, e: dict[str, Any] = e) -> str:
            return f"{e['trials'][s]} ({e['feasible_trials'][s]} / {e['screened_out'][s]} / {e['pruned'][s]})"

        def fb(v: float | None) -> str:
            return "—" if v is None else f"{v:.4f}"

        lines.append(f"| {e['seed']} | {fb(b['tpe'])} / {fb(b['random'])} | {t('tpe')} | {t('random')} | {e['ratio']:.2f} | "
                     f"{c('tpe')} | {c('random')} |")
    mr = r["median_ratio"]
    lines += ["", f"Median ratio (edgeopt / random): **{'—' if mr is None else f'{mr:.2f}'}** (goal: ≤ 0.50)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
