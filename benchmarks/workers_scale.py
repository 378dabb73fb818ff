"""Many workers on one study: search throughput of 1 vs 2 workers, and the storage's per-trial overhead
on PostgreSQL against SQLite.

    flock /tmp/edgeopt-bench.lock .venv/bin/python -m benchmarks workers_scale [--set seconds=60]

1. Throughput: `edgeopt compile TASK --search-only --timeout S` with one worker, then
   `--workers 2`, on the tests' tiny digits MLP (``testkit/tiny_task.py``), same SQLite storage
   kind, same wall time of search; trials finished in that time are counted from the study, and the
   distinct plans evaluated (a repeat of an evaluated plan takes its result in milliseconds).
2. Overhead: a no-op objective that writes what an edgeopt trial writes (a plan, a record of a dozen
   user attributes, four constraints), N trials through Optuna on a SQLite file and on a real
   PostgreSQL 15 server started here (``testkit.pg``; loopback only), ms per trial.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna

from benchmarks.suite import Outcome
from edgeopt.pipeline.storage import make_storage
from testkit import pg, tiny_task

TASK = f"{Path(tiny_task.__file__).resolve()}:make_task"
TARGET = """name = "tinyhost"
description = "benchmark target: this host, one thread"
[device]
detect = true
[runtime]
intra_op_threads = 1
inter_op_threads = 1
allow_spinning = false
[budget]
model_size_mb = 0.05
"""


def throughput(workers: int, seconds: float, tmp: Path, env: dict[str, str]) -> dict[str, float]:
    out = tmp / f"w{workers}"
    target = tmp / "tinyhost.toml"
    target.write_text(TARGET)
    cmd = [
        sys.executable,
        "-m",
        "edgeopt",
        "-q",
        "compile",
        TASK,
        "--target",
        str(target),
        "--out",
        str(out),
        "--search-only",
        "--trials",
        "100000",
        "--timeout",
        str(seconds),
        "--epochs",
        "4",
        "--seed",
        "0",
    ]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name="tiny-mlp-tinyhost", storage=make_storage(f"sqlite:///{out / 'study.db'}"))
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    # A trial that samples a plan already evaluated takes its result in milliseconds: the work a
    # search gets done is the plans it evaluated (trained, pruned or screened out for the first time).
    new = [t for t in done if t.user_attrs.get("repeat_of") is None and t.user_attrs.get("status") != "failed"]
    return {
        "workers": workers,
        "search_s": seconds,
        "wall_s": round(wall, 1),
        "trials": len(done),
        "plans_evaluated": len(new),
    }


def overhead(url: str, n: int) -> float:
    """ms per trial of a no-op objective that writes what an edgeopt trial writes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=make_storage(url), study_name=f"overhead-{time.time_ns()}")

    def objective(trial: optuna.Trial) -> float:
        r = trial.suggest_int("fc1.rank", 1, 64, log=True)
        trial.set_user_attr("plan", {"fc1": {"format": "lowrank", "rank": r}})
        trial.set_user_attr(
            "record",
            dict.fromkeys(
                ("latency_ms", "p50", "size", "mem", "params", "macs", "f1", "acc", "prec", "rec", "score", "nodes"),
                0.0,
            ),
        )
        for name in ("latency", "peak_memory", "model_size", "min_f1"):
            trial.set_user_attr(f"constraint.{name}", -0.1)
        return 0.9

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - t0) / n * 1e3


def run(args: SimpleNamespace) -> Outcome:
    """Search throughput of 1 and 2 workers for ``seconds`` each; ms per no-op trial over ``trials``."""
    tmp = args.work
    teacher = tmp / "teacher.pt"
    tiny_task.train_teacher(teacher)
    env = {**os.environ, "EDGEOPT_TINY_MODEL": str(teacher)}
    runs = [throughput(w, args.seconds, tmp, env) for w in (1, 2)]
    speedup = runs[1]["plans_evaluated"] / max(runs[0]["plans_evaluated"], 1)
    ms = {"sqlite": overhead(f"sqlite:///{tmp / 'overhead.db'}", args.trials)}
    notes = []
    if pg.pg_bindir() is None:
        notes.append("PostgreSQL binaries not found (apt-get install -y postgresql): SQLite only")
    else:
        server = pg.start()
        try:
            ms["postgresql"] = overhead(server.url(server.create_database("overhead")), args.trials)
        finally:
            server.stop()
    load = os.getloadavg()
    result = {
        "throughput": runs,
        "speedup_2_vs_1": round(speedup, 2),
        "overhead_ms_per_trial": ms,
        "trials_overhead": args.trials,
        "loadavg": load,
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    md = [
        f"Measured {result['when']} on {os.cpu_count()} cores (load average at the end {load[0]:.2f}).",
        "",
        "| workers | search s | trials finished | distinct plans evaluated |",
        "|---:|---:|---:|---:|",
        *[f"| {r['workers']} | {r['search_s']:.0f} | {r['trials']} | {r['plans_evaluated']} |" for r in runs],
        "",
        f"2 workers evaluate **{speedup:.2f}×** the plans of 1 in the same search time (goal ≥ 1.6×); "
        "repeats of an evaluated plan take its result without training and are not counted.",
        "",
        "| storage | ms per no-op trial (what an edgeopt trial writes) |",
        "|---|---:|",
        *[f"| {k} | {v:.1f} |" for k, v in ms.items()],
        "",
    ]
    return Outcome(result, "\n".join(md), notes)
