"""CLI commands of the runtime half: targets, calibrate, bench, gate (torch-free).

Each command is a thin call into the same API a Python user has; results go to stdout, logs and
warnings to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edgeopt import _validate
from edgeopt._io import atomic_write_text
from edgeopt.errors import InputError
from edgeopt.runtime.cli_against import add_against_flags, against_kwargs
from edgeopt.runtime.cli_targets import register_targets
from edgeopt.runtime.retake import RETAKES
from edgeopt.runtime.settings import GATE_SETTINGS, BenchSettings

log = logging.getLogger("edgeopt")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the runtime half's commands: targets, calibrate, bench, gate."""
    register_targets(sub)
    _register_calibrate(sub)
    _register_bench(sub)
    _register_gate(sub)


def _register_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure this machine's roofline for latency prediction",
        description="Run fixed reference micro-models (dispatch cost, fp32 matmul GFLOP/s, "
        "matrix-vector bandwidth) and print a [device] snippet for a target profile.",
    )
    p.add_argument(
        "--target", default="host", help="take the thread count and spinning from this target (default: host)"
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the target's)")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the result as JSON ('-' for stdout)")
    p.add_argument("--no-cache", action="store_true", help="do not store the result in the host calibration cache")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the cached calibration even when this run was noisier than the cached one",
    )
    p.add_argument(
        "--remote",
        metavar="HOST",
        help="calibrate the device at HOST over ssh (default: the target's [remote], if any; else this machine)",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="store the device's numbers in the --target profile file ([device] table, atomically, other content kept)",
    )
    p.set_defaults(func=_calibrate)


def _register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark an ONNX model for a target",
        description="Latency (p50..p99), throughput, memory, size of an ONNX model; each measurement "
        "in a fresh process with the target's session options. Off the target, the "
        "target's latency is predicted from this host's measurement and labelled so.",
    )
    _measurement_flags(p, BenchSettings())
    p.set_defaults(func=_bench)


def _register_gate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gate",
        help="check an ONNX model against a target's budgets (exit 0/1/2/3)",
        description="Benchmark, then check the target's budgets with a one-sided distribution-free "
        "confidence bound. With --against OLD.onnx, also measure MODEL (NEW) against OLD "
        "in one interleaved run and check the latency ratio NEW/OLD (confidence bounds), "
        "peak memory, size and output agreement. Exit 0 pass, 1 over budget or worse "
        "than OLD, 2 bad input, 3 inconclusive (1 with --strict). Appends a Markdown "
        "table to $GITHUB_STEP_SUMMARY when set.",
    )
    _measurement_flags(p, GATE_SETTINGS)
    add_against_flags(p)
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one testcase per check)")
    p.add_argument("--summary", metavar="FILE", help="write the Markdown table to FILE")
    p.add_argument("--confidence", type=float, default=0.95, help="one-sided confidence of the bounds (default 0.95)")
    p.add_argument("--strict", action="store_true", help="treat inconclusive as a failure (exit 1)")
    p.add_argument("--latency-ms", type=float, help="override the latency budget")
    p.add_argument("--percentile", type=float, help="override the latency percentile")
    p.add_argument("--memory-mb", type=float, help="override the peak memory budget")
    p.add_argument("--size-mb", type=float, help="override the model size budget")
    p.add_argument(
        "--retakes",
        type=int,
        default=RETAKES,
        metavar="N",
        help=f"measure again, N times in all at most, while other work visibly disturbs a measurement whose "
        f"latency does not pass; the least disturbed counts (default {RETAKES}; 1: once; budgets only, "
        "not with --against)",
    )
    p.set_defaults(func=_gate)


def _measurement_flags(q: argparse.ArgumentParser, defaults: BenchSettings) -> None:
    """bench and gate share their measurement flags; defaults and checks come from BenchSettings."""
    q.add_argument("model", metavar="MODEL.onnx")
    q.add_argument("--target", "-t", default="host", help="built-in target name or profile path (default: host)")
    q.add_argument("--json", dest="json_out", metavar="FILE", help="write the result as JSON ('-' for stdout)")
    q.add_argument("--batch", type=int, help="size of a symbolic batch dimension (default: the target's batch_size)")
    q.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="concrete shape for an input with symbolic dimensions (repeatable)",
    )
    q.add_argument(
        "--min-iters", type=int, default=defaults.min_iters, help=f"minimum timed runs (default {defaults.min_iters})"
    )
    q.add_argument(
        "--min-time",
        type=float,
        default=defaults.min_time_s,
        help=f"minimum timed seconds (default {defaults.min_time_s:g})",
    )
    q.add_argument(
        "--max-iters", type=int, default=defaults.max_iters, help=f"maximum timed runs (default {defaults.max_iters})"
    )
    q.add_argument(
        "--warmup", type=int, default=defaults.warmup, help=f"untimed warm-up runs (default {defaults.warmup})"
    )
    q.add_argument(
        "--on-device",
        action="store_true",
        default=None,
        help="this machine is the target: report the measurement, do not predict",
    )
    q.add_argument(
        "--remote",
        metavar="HOST",
        help="measure on the device at HOST over ssh (user@address or a "
        "~/.ssh/config alias; sets the target's [remote] host)",
    )


# --------------------------------------------------------------------------- helpers
def _emit_json(dest: str | None, payload: dict[str, Any]) -> None:
    if not dest:
        return
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        return
    _write(dest, text)


def _write(dest: str, text: str, *, append: bool = False) -> None:
    """Write ``dest`` atomically (readers never see half of it), or append to it."""
    try:
        if append:
            with open(dest, "a", encoding="utf-8") as fh:
                fh.write(text)
            return
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(dest, text)
    except OSError as exc:
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from None


def _check_outputs(*paths: str | None) -> None:
    """Fail before measuring, not after, when an output cannot be written."""
    for p in paths:
        if not p or p == "-":
            continue
        parent = os.path.dirname(os.path.abspath(p)) or "."
        probe = parent
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
            raise InputError(f"cannot write {p}: {probe} is not a writable directory")
        if os.path.isdir(p):
            raise InputError(f"cannot write {p}: it is a directory")


# --------------------------------------------------------------------------- calibrate
def _calibrate(args: argparse.Namespace) -> int:
    from edgeopt.runtime.calibrate import calibrate, refusal, save_calibration, snippet
    from edgeopt.runtime.targets import Target

    t = Target.load(args.target).with_remote(args.remote)
    threads = t.runtime.intra_op_threads if args.threads is None else args.threads
    threads = _validate.number(threads, "calibrate", "--threads", minimum=0, integer=True)
    _check_outputs(args.json_out)
    if t.remote is not None or args.write:
        return _calibrate_device(args, t, threads)
    log.info("calibrating with %s intra-op threads (5-15 s; longer on a busy host)...", threads or "default")
    cal = calibrate(threads, allow_spinning=t.runtime.allow_spinning)
    log.info("measured in %.1f s, noise %.3f", cal.seconds, cal.noise)
    why = None if args.no_cache or args.force else refusal(cal)
    if why:
        log.warning("warning: %s", why)
    elif not args.no_cache:
        path = save_calibration(cal)
        if path:
            log.info("cached in %s", path)
    if args.json_out == "-":
        _emit_json("-", cal.to_dict())
        return 0
    print("[device]")
    print(snippet(cal), end="")
    _emit_json(args.json_out, cal.to_dict())
    return 0


def _calibrate_device(args: argparse.Namespace, t: Any, threads: int) -> int:
    """calibrate on the target's device over ssh; print (or --write into the profile) its [device] numbers."""
    from edgeopt.runtime import remote_calibrate as rc

    if t.remote is None:
        raise InputError(
            "--write: the target has no [remote] and no --remote HOST: calibrate the device itself "
            "(run this on it, or give --remote)"
        )
    path = rc.writable_profile(args.target) if args.write else None
    log.info("calibrating %s over ssh with %s intra-op threads (a few seconds)...", t.remote.host, threads or "default")
    cal, env = rc.calibrate_on_device(t, threads)
    for w in env.get("warnings", []):
        log.warning("warning: %s: %s", t.remote.host, w)
    if path is not None:
        rc.write_profile(path, cal, t.remote.host)
        log.info("wrote the measured [device] numbers of %s into %s", t.remote.host, path)
    if args.json_out == "-":
        _emit_json("-", rc.report(cal, env))
        return 0
    print("[device]")
    print("\n".join(rc.device_lines(cal, t.remote.host)))
    _emit_json(args.json_out, rc.report(cal, env))
    return 0


# --------------------------------------------------------------------------- bench / gate
def _target(args: argparse.Namespace) -> Any:
    """The effective target: --target, measured on --remote HOST when given, with gate's budget flags."""
    from edgeopt.runtime.targets import resolve_target

    flags = {
        "latency_ms": "latency_ms",
        "peak_memory_mb": "memory_mb",
        "model_size_mb": "size_mb",
        "latency_percentile": "percentile",
    }
    return resolve_target(args.target, remote=args.remote, **{k: getattr(args, f, None) for k, f in flags.items()})


def _bench_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    settings = BenchSettings().updated(
        batch=args.batch,
        min_iters=args.min_iters,
        min_time_s=args.min_time,
        max_iters=args.max_iters,
        warmup=args.warmup,
    )
    return {"settings": settings, "shapes": args.shape, "on_device": args.on_device}


def _bench(args: argparse.Namespace) -> int:
    from edgeopt.runtime.bench import bench

    _check_outputs(args.json_out)
    r = bench(args.model, _target(args), **_bench_kwargs(args))
    if args.json_out == "-":
        _emit_json("-", r.to_dict())
    else:
        print(r.to_text())
        _emit_json(args.json_out, r.to_dict())
    return 0


def _gate(args: argparse.Namespace) -> int:
    from edgeopt.runtime.gate import gate
    from edgeopt.runtime.remote import DeviceError
    from edgeopt.runtime.retake import gate_retaking

    target = _target(args)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    _check_outputs(args.json_out, args.junit, args.summary)
    if args.retakes < 1:
        raise InputError(f"gate: --retakes: expected an integer >= 1, found {args.retakes}")
    against = against_kwargs(args)
    try:
        if against:  # its own counterbalanced protocol: one run
            g = gate(
                args.model, target, confidence=args.confidence, strict=args.strict, **against, **_bench_kwargs(args)
            )
        else:
            g = gate_retaking(
                args.model,
                target,
                retakes=args.retakes,
                confidence=args.confidence,
                strict=args.strict,
                **_bench_kwargs(args),
            )
    except DeviceError as exc:  # the device was lost: nothing was decided
        exc.exit_code = 1 if args.strict else 3
        raise
    no_budgets = not target.budget.latency_ms and not target.budget.peak_memory_mb and not target.budget.model_size_mb
    if no_budgets and not args.against:
        log.warning("warning: target %s sets no budgets: nothing to check", target.name)
    # Render everything first, then write: an error leaves no half-written report.
    md, junit, doc = g.to_markdown(), g.to_junit() if args.junit else None, g.to_dict()
    if args.json_out == "-":
        _emit_json("-", doc)
    else:
        print(g.to_text())
        _emit_json(args.json_out, doc)
    if junit is not None:
        _write(args.junit, junit)
    if args.summary:
        _write(args.summary, md)
    if step_summary:
        _write(step_summary, md + "\n", append=True)
    return g.exit_code
