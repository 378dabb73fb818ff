"""CLI commands of the compiler half: compile, demo, report.

Registering them imports nothing heavy; each command imports torch & co. when it runs, and says
how to install the compiler half when it is missing.
"""

from __future__ import annotations

import argparse
import json
import logging

from edgeopt.search.config import FINAL_EPOCHS, MAX_QUALITY_DROP, TIME_BUDGET_S, TRIAL_EPOCHS

log = logging.getLogger("edgeopt")
DEMO_TARGET = "rpi4-demo"  # rpi4 with the demo's tight budgets (the dense MLP must shrink 30x)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="search per-layer formats and ranks under a target's budgets; ship the best",
                       description="Compile a trained model for a target: TT / low-rank / dense per layer, searched "
                       "by Optuna under the target's budgets. Exit 0 when the artifact meets every budget, 1 when "
                       "none did (best effort written, with the reasons), 2 on bad input.")
    p.add_argument("task", nargs="?", help="path/to/file.py:function returning an edgeopt.Task")
    p.add_argument("--example", help="a bundled example instead of TASK: digits-mlp, digits-cnn, imbalanced")
    _common(p, default_out=None)
    p.set_defaults(func=cmd_compile)

    d = sub.add_parser("demo", help=f"compile the bundled digits-mlp example for {DEMO_TARGET} (minutes)",
                       description="Compile the bundled seed-size example (digits-mlp, about 1.2M parameters) "
                       f"for the {DEMO_TARGET} profile, whose budgets the dense model does not meet.")
    d.add_argument("--out", default="runs/demo", help="output dir (default: runs/demo)")
    d.add_argument("--trials", type=int, default=60, help="search trials (default: 60)")
    d.add_argument("--timeout", type=float, default=120.0, help="stop the search after S seconds (default: 120)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--target", default=DEMO_TARGET, help=f"target profile (default: {DEMO_TARGET})")
    d.add_argument("--json", help="also write the report JSON to this file")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("report", help="rebuild report.json/md/html and plots from an output dir's study")
    r.add_argument("dir", help="an edgeopt compile output dir")
    r.set_defaults(func=cmd_report)


def _common(p: argparse.ArgumentParser, default_out: str | None) -> None:
    p.add_argument("--target", "-t", required=True, help="target profile name or path")
    p.add_argument("--out", "-o", required=default_out is None, default=default_out, help="output dir")
    p.add_argument("--trials", type=int, default=30, help="trials to run now (re-running with the same --out resumes)")
    p.add_argument("--timeout", type=float, help="stop the search after S seconds")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help=f"seconds for the whole compile: tables and baseline, search (to 70%%), final fine-tune "
                   f"(default {TIME_BUDGET_S:.0f}; 0: no limit)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite study.db in --out), for many workers")
    p.add_argument("--study", help="study name (default: TASK-TARGET)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N local worker processes on the study (one torch thread each), then ship the best "
                   "(default: 1, this process)")
    p.add_argument("--search-only", action="store_true",
                   help="run the trials and stop without shipping: a worker of a search that another run ships "
                   "(--trials 0 with the same --storage and --study)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--objective", choices=("f1", "pareto"), default="f1",
                   help="f1: best F1 under the budgets; pareto: F1 vs target latency as two objectives")
    p.add_argument("--int8", action="store_true", help="add onnxruntime int8 quantization to the search")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=f"distillation epochs per trial (default: {TRIAL_EPOCHS})")
    p.add_argument("--train-device", choices=("auto", "cpu", "cuda"),
                   help="where distillation runs (default: auto, CUDA when torch sees one)")
    p.add_argument("--final-epochs", type=int, help=f"fine-tuning epochs for the chosen plan (default: {FINAL_EPOCHS})")
    p.add_argument("--latency-ms", type=float, help="override the target's latency budget")
    p.add_argument("--memory-mb", type=float, help="override the target's peak-memory budget")
    p.add_argument("--size-mb", type=float, help="override the target's model-size budget")
    p.add_argument("--min-f1", type=float, help="override the target's quality floor (compared with the task's metric)")
    p.add_argument("--max-quality-drop", type=float, metavar="D",
                   help=f"without --min-f1 or a min_f1 in the profile, the artifact must score at least the input "
                   f"model's score less D on the same split, or exit 1 (default {MAX_QUALITY_DROP}, i.e. "
                   f"{100 * MAX_QUALITY_DROP:.0f} pt; 1 turns it off)")
    p.add_argument("--json", help="also write the report JSON to this file")
    p.add_argument("--remote", metavar="HOST", help="measure every trial on the device at HOST over ssh "
                   "(sets the target's [remote] host)")
    p.add_argument("--on-device", action="store_true", help="this machine is the target: measure, do not predict")


def _target(args: argparse.Namespace) -> object:
    """--target, measured on --remote HOST or (--on-device) on this machine."""
    if not getattr(args, "remote", None) and not getattr(args, "on_device", False):
        return args.target
    from edgeopt.runtime.targets import Target

    t = Target.load(args.target).with_remote(getattr(args, "remote", None))
    return t.as_host() if getattr(args, "on_device", False) else t


def _budget(args: argparse.Namespace) -> dict:
    return {"latency_ms": getattr(args, "latency_ms", None), "peak_memory_mb": getattr(args, "memory_mb", None),
            "model_size_mb": getattr(args, "size_mb", None), "min_f1": getattr(args, "min_f1", None)}


def cmd_compile(args: argparse.Namespace) -> int:
    from edgeopt._deps import require_compile_stack
    from edgeopt.errors import InputError

    require_compile_stack()
    from edgeopt.search.examples import load_example
    from edgeopt.search.task import load_task

    if bool(args.task) == bool(args.example):
        raise InputError("give exactly one of TASK (path/to/file.py:function) or --example NAME.")
    task = load_example(args.example, seed=args.seed) if args.example else load_task(args.task)
    return _run(task, args)


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``edgeopt compile`` arguments that load the task and shape the search, for a worker process
    (:mod:`edgeopt.search.workers` adds the storage, study, out dir, trials, seed and timeout)."""
    argv = [args.task] if args.task else ["--example", args.example]
    argv += ["--target", args.target, "--objective", args.objective, "--sampler", args.sampler]
    flags = {"--epochs": "epochs", "--train-device": "train_device", "--final-epochs": "final_epochs",
             "--latency-ms": "latency_ms", "--memory-mb": "memory_mb", "--size-mb": "size_mb", "--min-f1": "min_f1",
             "--remote": "remote"}
    for flag, attr in flags.items():
        if getattr(args, attr, None) is not None:
            argv += [flag, str(getattr(args, attr))]
    for flag, attr in (("--int8", "int8"), ("--on-device", "on_device")):
        if getattr(args, attr, False):
            argv.append(flag)
    return argv


def cmd_demo(args: argparse.Namespace) -> int:
    from edgeopt._deps import require_compile_stack

    require_compile_stack()
    from edgeopt.search.examples import load_example

    task = load_example("digits-mlp", seed=args.seed)
    args.storage = args.study = None
    args.objective, args.int8, args.sampler = "f1", False, "tpe"
    args.epochs = args.final_epochs = None
    return _run(task, args)


def _run(task, args: argparse.Namespace) -> int:
    import edgeopt
    from edgeopt.search.report import budget_rows, comparison_rows, headline, render_text_table

    kwargs = {}
    if getattr(args, "epochs", None):
        kwargs["trial_epochs"] = args.epochs
    if getattr(args, "final_epochs", None):
        kwargs["final_epochs"] = args.final_epochs
    if getattr(args, "train_device", None):
        kwargs["train_device"] = args.train_device
    if getattr(args, "workers", 1) > 1:
        kwargs.update(workers=args.workers, worker_argv=worker_argv(args))
    if getattr(args, "search_only", False):
        kwargs["search_only"] = True
    if getattr(args, "time_budget", None) is not None:
        kwargs["time_budget_s"] = args.time_budget or None
    if getattr(args, "max_quality_drop", None) is not None:
        kwargs["max_quality_drop"] = args.max_quality_drop
    result = edgeopt.compile(
        task, _target(args), trials=args.trials, out=args.out, storage=args.storage, study_name=args.study,
        seed=args.seed, timeout=args.timeout, objective=args.objective, int8=args.int8, budget=_budget(args),
        sampler=args.sampler, progress=not getattr(args, "quiet", False), **kwargs,
    )
    rep = result.report
    if result.search_only:
        s = rep["search"]
        print(f"searched: {s['this_worker']} trials here; study {s['study']} has {s['trials']} trials from "
              f"{s['workers']} workers, {s['feasible']} feasible. Ship it from any machine with: "
              f"edgeopt compile ... --storage URL --study {s['study']} --trials 0 --out DIR")
        return result.exit_code
    print(render_text_table(comparison_rows(rep)))
    print()
    print(render_text_table(budget_rows(rep)))
    print()
    print(headline(rep))
    for reason in result.reasons:
        print(f"  - {reason}")
    print(f"artifact: {result.model_path}   report: {result.out / 'report.html'}")
    if args.json:
        from edgeopt._io import atomic_write_text

        atomic_write_text(args.json, json.dumps(rep, indent=2, default=str))
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from edgeopt._deps import require_compile_stack

    require_compile_stack()
    from pathlib import Path

    from edgeopt.search.report import rebuild

    rep = rebuild(args.dir)
    out = Path(args.dir)
    print(f"rebuilt {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'} and {len(rep.get('plots', {}))} plots")
    return 0
