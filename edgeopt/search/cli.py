"""CLI commands of the compiler half: compile, demo, report.

Registering them imports nothing heavy; each command imports torch & co. when it runs, and says
how to install the compiler half when it is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

from edgeopt._validate import Spec
from edgeopt.search.config import FINAL_EPOCHS, MAX_QUALITY_DROP, SPECS, TIME_BUDGET_S, TRIAL_EPOCHS

log = logging.getLogger("edgeopt")
DEMO_TARGET = "rpi4-demo"  # rpi4 with the demo's tight budgets (the dense MLP must shrink 30x)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="search per-layer formats and ranks under a target's budgets; ship the best",
        description="Compile a trained model for a target: TT / low-rank / dense per layer, searched "
        "by Optuna under the target's budgets. Exit 0 when the artifact meets every budget, 1 when "
        "none did (best effort written, with the reasons), 2 on bad input.",
    )
    p.add_argument("task", nargs="?", help="path/to/file.py:function returning an edgeopt.Task")
    p.add_argument("--example", help="a bundled example instead of TASK: digits-mlp, digits-cnn, imbalanced")
    _common(p, default_out=None)
    p.set_defaults(func=cmd_compile)
    _one_line_errors(p)

    d = sub.add_parser(
        "demo",
        help=f"compile the bundled digits-mlp example for {DEMO_TARGET} (minutes)",
        description="Compile the bundled seed-size example (digits-mlp, 1,126,410 parameters) "
        f"for the {DEMO_TARGET} profile, whose budgets the dense model does not meet.",
    )
    d.add_argument("--out", default="runs/demo", help="output dir (default: runs/demo)")
    d.add_argument(
        "--trials", type=_checked("--trials", "trials", "demo"), default=60, help="search trials (default: 60)"
    )
    d.add_argument(
        "--timeout",
        type=_checked("--timeout", "timeout", "demo"),
        default=120.0,
        help="stop the search after S seconds (default: 120)",
    )
    d.add_argument("--seed", type=_checked("--seed", "seed", "demo"), default=0)
    d.add_argument("--target", default=DEMO_TARGET, help=f"target profile (default: {DEMO_TARGET})")
    d.add_argument("--json", help="also write the report JSON to this file")
    d.set_defaults(func=cmd_demo)
    _one_line_errors(d)

    r = sub.add_parser("report", help="rebuild report.json/md/html and plots from an output dir's study")
    r.add_argument("dir", help="an edgeopt compile output dir")
    r.set_defaults(func=cmd_report)


def _checked(flag: str, field: str, where: str) -> Callable[[str], object]:
    """An argparse ``type`` that checks a flag as it is parsed, against the declared bounds of the
    :class:`~edgeopt.search.config.CompileConfig` field it sets (``--time-budget``: 0 too, no limit; the
    budget overrides: the target profile's ``[budget]`` declarations)."""

    def parse(text: str) -> object:
        from edgeopt.errors import InputError

        value = _number(text)
        try:
            return _spec(field).check(value, where, flag)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = flag  # argparse names a type by it
    return parse


def _spec(field: str) -> Any:
    if field.startswith("budget."):
        from edgeopt._validate import specs
        from edgeopt.runtime.targets import Budget

        return specs(Budget)[field.removeprefix("budget.")][0]
    if field == "time_budget":
        return Spec("num", minimum=0)
    if field == "name":
        return Spec("str", nonempty=True)
    return SPECS[field]


def _number(text: str) -> object:
    """``"3"`` is an int, ``"2.5"`` a float; anything else stays the text (and is reported as found)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Usage errors of ``parser`` as one line, exit 2: a checked flag's own message
    (``edgeopt compile: --trials: expected an integer >= 0, found an integer -1``), else argparse's."""

    def error(message: str) -> None:
        where = parser.prog.split()[-1]
        mine = message.find(f": {where}: --")
        if message.startswith("argument ") and mine > 0:
            message = message[mine + 2 :]
        else:
            message = f"{where}: {message} (see {parser.prog} --help)"
        parser.exit(2, f"edgeopt: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]


def _common(p: argparse.ArgumentParser, default_out: str | None) -> None:
    where = p.prog.split()[-1]  # "compile": messages read "edgeopt: error: compile: --trials: expected ..."
    p.add_argument("--target", "-t", required=True, help="target profile name or path")
    p.add_argument("--out", "-o", required=default_out is None, default=default_out, help="output dir")
    p.add_argument(
        "--trials",
        type=_checked("--trials", "trials", where),
        default=30,
        help="trials to run now (re-running with the same --out resumes)",
    )
    p.add_argument("--timeout", type=_checked("--timeout", "timeout", where), help="stop the search after S seconds")
    p.add_argument(
        "--time-budget",
        type=_checked("--time-budget", "time_budget", where),
        metavar="S",
        help=f"seconds for the whole compile: tables and baseline, search (to 70%%), final fine-tune "
        f"(default {TIME_BUDGET_S:.0f}; 0: no limit)",
    )
    p.add_argument(
        "--storage",
        type=_checked("--storage", "name", where),
        help="Optuna storage URL (default: sqlite study.db in --out), for many workers",
    )
    p.add_argument("--study", type=_checked("--study", "name", where), help="study name (default: TASK-TARGET)")
    p.add_argument(
        "--workers",
        type=_checked("--workers", "workers", where),
        default=1,
        metavar="N",
        help="N local worker processes on the study (one torch thread each), then ship the best "
        "(default: 1, this process)",
    )
    p.add_argument(
        "--search-only",
        action="store_true",
        help="run the trials and stop without shipping: a worker of a search that another run ships "
        "(--trials 0 with the same --storage and --study)",
    )
    p.add_argument("--seed", type=_checked("--seed", "seed", where), default=0)
    p.add_argument(
        "--objective",
        choices=("f1", "pareto"),
        default="f1",
        help="f1: best F1 under the budgets; pareto: F1 vs target latency as two objectives",
    )
    p.add_argument("--int8", action="store_true", help="add onnxruntime int8 quantization to the search")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe", help=argparse.SUPPRESS)
    p.add_argument(
        "--epochs",
        type=_checked("--epochs", "trial_epochs", where),
        help=f"distillation epochs per trial (default: {TRIAL_EPOCHS})",
    )
    p.add_argument(
        "--train-device",
        choices=("auto", "cpu", "cuda"),
        help="where distillation runs (default: auto, CUDA when torch sees one)",
    )
    p.add_argument(
        "--final-epochs",
        type=_checked("--final-epochs", "final_epochs", where),
        help=f"fine-tuning epochs for the chosen plan (default: {FINAL_EPOCHS})",
    )
    p.add_argument(
        "--latency-ms",
        type=_checked("--latency-ms", "budget.latency_ms", where),
        help="override the target's latency budget",
    )
    p.add_argument(
        "--memory-mb",
        type=_checked("--memory-mb", "budget.peak_memory_mb", where),
        help="override the target's peak-memory budget",
    )
    p.add_argument(
        "--size-mb",
        type=_checked("--size-mb", "budget.model_size_mb", where),
        help="override the target's model-size budget",
    )
    p.add_argument(
        "--min-f1",
        type=_checked("--min-f1", "budget.min_f1", where),
        help="override the target's quality floor (compared with the task's metric)",
    )
    p.add_argument(
        "--max-quality-drop",
        type=_checked("--max-quality-drop", "max_quality_drop", where),
        metavar="D",
        help=f"without --min-f1 or a min_f1 in the profile, the artifact must score at least the input "
        f"model's score less D on the same split, or exit 1 (default {MAX_QUALITY_DROP}, i.e. "
        f"{100 * MAX_QUALITY_DROP:.0f} pt; 1 turns it off)",
    )
    p.add_argument("--json", help="also write the report JSON to this file")
    p.add_argument(
        "--remote",
        metavar="HOST",
        help="measure every trial on the device at HOST over ssh (sets the target's [remote] host)",
    )
    p.add_argument("--on-device", action="store_true", help="this machine is the target: measure, do not predict")


def _target(args: argparse.Namespace) -> Any:
    """The effective target, resolved once: --target, measured on --remote HOST or (--on-device) on
    this machine, with the budget flags applied (checked: TargetError, one line)."""
    from edgeopt.runtime.targets import resolve_target

    overrides = {k: v for k, v in _budget(args).items() if v is not None}
    remote, on_device = getattr(args, "remote", None), getattr(args, "on_device", False)
    return resolve_target(args.target, remote=remote, on_device=on_device, **overrides)


def _budget(args: argparse.Namespace) -> dict:
    return {
        "latency_ms": getattr(args, "latency_ms", None),
        "peak_memory_mb": getattr(args, "memory_mb", None),
        "model_size_mb": getattr(args, "size_mb", None),
        "min_f1": getattr(args, "min_f1", None),
    }


def cmd_compile(args: argparse.Namespace) -> int:
    """Every argument that is cheap to check is checked first (exit 2, one line, nothing written);
    then the task is loaded (an example's teacher may be trained) and compiled."""
    from edgeopt.errors import InputError

    if bool(args.task) == bool(args.example):
        raise InputError("give exactly one of TASK (path/to/file.py:function) or --example NAME.")
    _check_task_arg(args)
    config, target = compile_config(args)
    from edgeopt._deps import require_compile_stack

    require_compile_stack()
    from edgeopt.search.examples import load_example
    from edgeopt.search.task import load_task

    task = load_example(args.example, seed=args.seed) if args.example else load_task(args.task)
    return _run(task, args, config, target)


def _check_task_arg(args: argparse.Namespace) -> None:
    """``--example NAME`` is a bundled example; ``TASK`` is ``path/to/file.py:function`` with the file there."""
    import os

    from edgeopt import _validate
    from edgeopt.errors import InputError

    where = "compile"
    if args.example:
        from edgeopt.search.examples import example_names

        _validate.choice(args.example, where, "--example", example_names())
        return
    path, sep, func = args.task.rpartition(":")
    if not sep or not path or not func:
        raise _validate.fail(where, "TASK", "path/to/file.py:function", args.task)
    if not os.path.isfile(path):
        raise InputError(
            _validate.message(where, "TASK", "path/to/file.py:function", args.task)
            + f", whose file {path!r} does not exist"
        )


def compile_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The validated :class:`~edgeopt.search.config.CompileConfig` and the target of ``edgeopt compile``
    (or ``demo``), from the arguments alone: the out dir, ``--json``, the target profile and its budget
    overrides, the storage URL. Nothing is written and no task is loaded, so bad input fails at once."""
    from edgeopt.search.config import CompileConfig, check_out_dir, check_out_file

    where = "demo" if args.func is cmd_demo else "compile"
    check_out_dir(args.out, where, "--out")
    if getattr(args, "json", None):
        check_out_file(args.json, where, "--json")
    target = _target(args)
    if getattr(args, "storage", None):
        from edgeopt.search.storage import check_storage

        check_storage(args.storage, where, "--storage")
    kwargs: dict[str, Any] = {}
    for key, attr in (
        ("trial_epochs", "epochs"),
        ("final_epochs", "final_epochs"),
        ("train_device", "train_device"),
        ("max_quality_drop", "max_quality_drop"),
    ):
        if getattr(args, attr, None) is not None:
            kwargs[key] = getattr(args, attr)
    if getattr(args, "workers", 1) > 1:
        kwargs.update(workers=args.workers, worker_argv=worker_argv(args))
    if getattr(args, "time_budget", None) is not None:
        kwargs["time_budget_s"] = args.time_budget or None
    config = CompileConfig(
        trials=args.trials,
        out=args.out,
        storage=args.storage,
        study_name=args.study,
        seed=args.seed,
        timeout=args.timeout,
        objective=args.objective,
        int8=args.int8,
        budget=_budget(args),
        sampler=args.sampler,
        progress=not getattr(args, "quiet", False),
        search_only=getattr(args, "search_only", False),
        **kwargs,
    )
    return config, target


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The ``edgeopt compile`` arguments that load the task and shape the search, for a worker process
    (:mod:`edgeopt.search.workers` adds the storage, study, out dir, trials, seed and timeout)."""
    argv = [args.task] if args.task else ["--example", args.example]
    argv += ["--target", args.target, "--objective", args.objective, "--sampler", args.sampler]
    flags = {
        "--epochs": "epochs",
        "--train-device": "train_device",
        "--final-epochs": "final_epochs",
        "--latency-ms": "latency_ms",
        "--memory-mb": "memory_mb",
        "--size-mb": "size_mb",
        "--min-f1": "min_f1",
        "--remote": "remote",
    }
    for flag, attr in flags.items():
        if getattr(args, attr, None) is not None:
            argv += [flag, str(getattr(args, attr))]
    for flag, attr in (("--int8", "int8"), ("--on-device", "on_device")):
        if getattr(args, attr, False):
            argv.append(flag)
    return argv


def cmd_demo(args: argparse.Namespace) -> int:
    args.storage = args.study = None
    args.objective, args.int8, args.sampler = "f1", False, "tpe"
    args.epochs = args.final_epochs = None
    config, target = compile_config(args)
    from edgeopt._deps import require_compile_stack

    require_compile_stack()
    from edgeopt.search.examples import load_example

    task = load_example("digits-mlp", seed=args.seed)
    return _run(task, args, config, target)


def _run(task: Any, args: argparse.Namespace, config: Any, target: Any) -> int:
    import edgeopt
    from edgeopt.report import budget_rows, comparison_rows, headline, render_text_table
    from edgeopt.search.progress import RepeatedWarnings, ThirdPartyWarnings

    # Repeated warnings, and other packages' (onnxruntime's quantizer), each once with its count, at the end.
    repeated = RepeatedWarnings(during="the compile")
    try:
        with ThirdPartyWarnings("the compile"):
            result = edgeopt.compile(task, target, config=config)
    finally:
        repeated.close()
    rep = result.report
    if result.search_only:
        s = rep["search"]
        print(
            f"searched: {s['this_worker']} trials here; study {s['study']} has {s['trials']} trials from "
            f"{s['workers']} workers, {s['feasible']} feasible. Ship it from any machine with: "
            f"edgeopt compile ... --storage URL --study {s['study']} --trials 0 --out DIR"
        )
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
    from pathlib import Path

    from edgeopt._deps import require_compile_stack
    from edgeopt.errors import InputError

    if not Path(args.dir).is_dir():  # before the compile stack loads: a typo answers at once
        raise InputError(f"{args.dir}: no such directory (expected an `edgeopt compile --out` directory).")
    require_compile_stack()
    from edgeopt.report import rebuild

    rep = rebuild(args.dir)
    out = Path(args.dir)
    print(
        f"rebuilt {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'} and {len(rep.get('plots', {}))} plots"
    )
    return 0
