"""CLI commands of the compiler half: compile, demo, report.

Registering them imports nothing heavy; each command imports torch & co. when it runs, and says
how to install the compiler half when it is missing. The flags of ``compile`` and ``demo`` are derived
from the settings' declarations (:mod:`edgeopt.pipeline.flags`); ``compile --config FILE.toml`` reads the
same settings from a file (:mod:`edgeopt.pipeline.config_file`), the flags laid over it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt.pipeline.flags import add_flags, given, warn

log = logging.getLogger("edgeopt")
DEMO_TARGET = "rpi4-demo"  # rpi4 with the demo's tight budgets (the dense MLP must shrink 30x)
# The demo's settings where they differ from compile's; its search stops after 120 s, as it always has.
DEMO = {
    "run": {"example": "digits-mlp", "target": DEMO_TARGET},
    "optimize": {"trials": 60},
    "time": {"timeout": 120.0},
    "output": {"out": Path("runs/demo")},
}
DEMO_FLAGS = ("--out", "--trials", "--time-budget", "--seed", "--target", "--json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile",
        help="search per-layer pruning, low-rank and TT formats under a target's budgets; ship the best",
        description="Compile a trained model for a target: per layer, structured pruning, low-rank, TT or dense, "
        "each fp32 or static int8 (--fp32 keeps every layer fp32), searched by Optuna under the target's budgets. "
        "Exit 0 when the artifact meets every budget, 1 when none did (best effort written, with the reasons), "
        "2 on bad input. The resolved settings are written to OUT/compile.toml: "
        "`edgeopt compile --config OUT/compile.toml` repeats the run.",
    )
    p.add_argument("task", nargs="?", metavar="TASK", help="path/to/file.py:function returning an edgeopt.Task")
    p.add_argument(
        "--config", metavar="FILE", help="settings from a TOML file (as OUT/compile.toml); flags override it"
    )
    add_flags(p, "compile")
    p.set_defaults(func=cmd_compile)
    _one_line_errors(p)

    d = sub.add_parser(
        "demo",
        help=f"compile the bundled digits-mlp example for {DEMO_TARGET} "
        "(up to about 10 minutes once loaded; --time-budget sets it)",
        description="Compile the bundled seed-size example (digits-mlp, 1,126,410 parameters) "
        f"for the {DEMO_TARGET} profile, whose budgets the dense model does not meet.",
    )
    flat = {k: v for table in DEMO.values() for k, v in table.items()}
    add_flags(d, "demo", only=DEMO_FLAGS, defaults=flat)
    d.add_argument("--timeout", type=float, metavar="S", help="deprecated: the search's seconds; use --time-budget")
    d.set_defaults(func=cmd_demo)
    _one_line_errors(d)

    r = sub.add_parser("report", help="rebuild report.json/md/html and plots from an output dir's study")
    r.add_argument("dir", help="an edgeopt compile output dir")
    r.set_defaults(func=cmd_report)


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


def _tables(args: argparse.Namespace, where: str) -> dict[str, dict[str, Any]]:
    """The settings: the command's defaults, the ``--config`` file over them, the flags over both."""
    from edgeopt.pipeline.config_file import read_tables

    tables: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (DEMO if where == "demo" else {}).items()}
    if getattr(args, "config", None):
        for name, table in read_tables(args.config).items():
            tables.setdefault(name, {}).update(table)
    flags = given(args)
    run = flags.setdefault("run", {})
    if getattr(args, "task", None):
        run["task"] = args.task
    for one, other in (("task", "example"), ("example", "task")):
        if one in run:  # the command line's task replaces the file's, whichever way each gives it
            tables.get("run", {}).pop(other, None)
    if where == "demo" and getattr(args, "timeout", None) is not None:
        warn("demo: --timeout is deprecated: use --time-budget S (the whole demo's seconds)")
        flags.setdefault("time", {})["timeout"] = args.timeout
    for name, table in flags.items():
        tables.setdefault(name, {}).update(table)
    tables.setdefault("output", {})["progress"] = not getattr(args, "quiet", False)
    return tables


def compile_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The validated :class:`~edgeopt.pipeline.config.CompileConfig` and the target of ``edgeopt compile``
    (or ``demo``), from the arguments and the ``--config`` file alone: the task argument, the out dir,
    ``--json``, the target profile and its budget overrides, the storage URL. Nothing is written and no task
    is loaded, so bad input fails at once."""
    from edgeopt.pipeline._paths import check_out_dir, check_out_file
    from edgeopt.pipeline.config_file import config_from

    where = "demo" if args.func is cmd_demo else "compile"
    tables = _tables(args, where)
    for key, flag, section in (("target", "--target", "run"), ("out", "--out", "output")):
        if key not in tables.get(section, {}):
            raise _required(where, flag, f"[{section}] {key}")
    config = config_from(tables)
    if where == "compile":
        _check_task_arg(config.run)
    check_out_dir(config.out, where, "--out")
    if config.run.json:
        check_out_file(config.run.json, where, "--json")
    target = _target(config.run, config.budget.overrides())
    if config.storage:
        from edgeopt.pipeline.storage import check_storage

        check_storage(config.storage, where, "--storage")
    return config, target


def _required(where: str, flag: str, key: str) -> Exception:
    from edgeopt.errors import InputError

    return InputError(f"{where}: {flag}: expected the flag or {key} in --config FILE, found neither")


def _check_task_arg(run: Any) -> None:
    """``--example NAME`` is a bundled example; ``TASK`` is ``path/to/file.py:function`` with the file there."""
    import os

    from edgeopt import _validate
    from edgeopt.errors import InputError

    where = "compile"
    if bool(run.task) == bool(run.example):
        raise InputError("give exactly one of TASK (path/to/file.py:function) or --example NAME.")
    if run.example:
        from edgeopt.models.examples import example_names

        _validate.choice(run.example, where, "--example", example_names())
        return
    path, sep, func = run.task.rpartition(":")
    if not sep or not path or not func:
        raise _validate.fail(where, "TASK", "path/to/file.py:function", run.task)
    if not os.path.isfile(path):
        raise InputError(
            _validate.message(where, "TASK", "path/to/file.py:function", run.task)
            + f", whose file {path!r} does not exist"
        )


def _target(run: Any, overrides: Mapping[str, Any] | None = None) -> Any:
    """The effective target, resolved once: the profile, measured on ``remote`` HOST or (``on_device``) on
    this machine, with the budget overrides applied (checked: TargetError, one line)."""
    from edgeopt.runtime.targets import resolve_target

    return resolve_target(run.target, remote=run.remote, on_device=run.on_device, **(overrides or {}))


def cmd_compile(args: argparse.Namespace) -> int:
    """Every argument that is cheap to check is checked first (exit 2, one line, nothing written);
    then the task is loaded (an example's teacher may be trained) and compiled."""
    config, target = compile_config(args)
    return _run(load(config.run, seed=config.seed), config, target)


def cmd_demo(args: argparse.Namespace) -> int:
    config, target = compile_config(args)
    return _run(load(config.run, seed=config.seed), config, target)


def load(run: Any, *, seed: int = 0) -> Any:
    """The task of ``run`` (a task file's function, or a bundled example), said when it starts and ends."""
    from edgeopt._deps import require_compile_stack

    require_compile_stack()
    what = f"example {run.example}" if run.example else f"task {run.task}"
    hint = " (its teacher is trained once, then cached)" if run.example else ""
    log.info("loading %s%s ...", what, hint)
    t0 = time.perf_counter()
    if run.example:
        from edgeopt.models.examples import load_example

        task = load_example(run.example, seed=seed)
    else:
        from edgeopt.pipeline.task import load_task

        task = load_task(run.task)
    log.info("loaded %s in %.1f s", what, time.perf_counter() - t0)
    return task


def _run(task: Any, config: Any, target: Any) -> int:
    from edgeopt.pipeline.loop import compile as compile_
    from edgeopt.pipeline.progress import RepeatedWarnings, ThirdPartyWarnings
    from edgeopt.report import budget_rows, comparison_rows, headline, render_text_table

    # Repeated warnings, and other packages' (onnxruntime's quantizer), each once with its count, at the end.
    repeated = RepeatedWarnings(during="the compile")
    try:
        with ThirdPartyWarnings("the compile"):
            result = compile_(task, target, config)
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
    if config.run.json:
        from edgeopt._io import atomic_write_text

        atomic_write_text(config.run.json, json.dumps(rep, indent=2, default=str))
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from edgeopt.errors import InputError

    out = Path(args.dir)
    if not out.is_dir():  # said before the compiler half is imported (seconds)
        found = "a file" if out.exists() else "nothing"
        raise InputError(f"report: DIR: expected an edgeopt compile output directory, found {found} at {args.dir!r}")
    from edgeopt._deps import require_compile_stack

    require_compile_stack()
    from edgeopt.report import rebuild

    rep = rebuild(out)
    print(
        f"rebuilt {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'} "
        f"and {len(rep.get('plots', {}))} plots"
    )
    return 0
