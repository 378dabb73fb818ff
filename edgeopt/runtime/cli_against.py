"""``gate --against OLD.onnx``: its flags and the ``gate()`` keywords they become."""

from __future__ import annotations

import argparse
from typing import Any

from edgeopt import _validate
from edgeopt.errors import InputError


def add_against_flags(p: argparse.ArgumentParser) -> None:
    """``gate --against OLD.onnx`` and its tolerances and run flags."""
    from edgeopt.runtime.compare import DEFAULT_MAX_TIME_S, Tolerances

    t = Tolerances()
    g = p.add_argument_group("against an older model (--against)")
    g.add_argument(
        "--against",
        metavar="OLD.onnx",
        help="also compare MODEL with OLD.onnx, measured in the same run "
        "in alternating blocks; --min-time/--min-iters are then per model, "
        "split over the first look's 10 pairs (or --pairs)",
    )
    g.add_argument(
        "--max-slowdown",
        default=f"{t.max_slowdown:.0%}",
        metavar="FRACTION",
        help="latency ratio NEW/OLD allowed above 1, at the budget's percentile and the median: 5%% or "
        f"0.05 (default {t.max_slowdown:.0%}%)",
    )
    g.add_argument(
        "--max-memory-growth",
        default=f"{t.max_memory_growth:.0%}",
        metavar="FRACTION",
        help=f"peak memory growth allowed (default {t.max_memory_growth:.0%}%; under 1 MB is ignored)",
    )
    g.add_argument(
        "--max-size-growth",
        default=f"{t.max_size_growth:.0%}",
        metavar="FRACTION",
        help=f"file size growth allowed (default {t.max_size_growth:.0%}%)",
    )
    g.add_argument("--atol", type=float, default=t.atol, help=f"outputs: absolute tolerance (default {t.atol:g})")
    g.add_argument(
        "--rtol",
        type=float,
        default=t.rtol,
        help=f"outputs: relative tolerance, |new-old| <= atol + rtol*|old| (default {t.rtol:g})",
    )
    g.add_argument(
        "--max-top1-disagreement",
        default="0%",
        metavar="FRACTION",
        help="classifier outputs (N, C): share of rows whose arg-max may differ (default 0%%)",
    )
    _run_flags(g, DEFAULT_MAX_TIME_S)


def _run_flags(g: argparse._ArgumentGroup, max_time_s: float) -> None:
    """How long the comparison runs, and what else it checks."""
    g.add_argument(
        "--max-time",
        type=float,
        default=max_time_s,
        metavar="SECONDS",
        help="time cap of the comparison: pairs of blocks are added until every latency ratio is "
        "decided (its interval clears the limit) or this many seconds have passed; then "
        f"INCONCLUSIVE, with the noise seen (default {max_time_s:g})",
    )
    g.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="measure exactly this many pairs of blocks and look once, instead of the sequential run "
        "(--max-time is then ignored)",
    )
    g.add_argument(
        "--agreement-samples",
        type=int,
        default=None,
        metavar="N",
        help="generated inputs for the output agreement (default 16)",
    )
    g.add_argument(
        "--no-budgets", action="store_true", help="with --against: check only the comparison, not the target's budgets"
    )


def against_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``gate()`` keywords of --against and its tolerances (checked before anything is measured)."""
    from edgeopt.runtime.compare import Tolerances

    if not args.against:
        if args.no_budgets:
            raise InputError("--no-budgets: only with --against OLD.onnx (there is nothing else to check)")
        return {}
    tol = Tolerances(
        max_slowdown=args.max_slowdown,
        max_memory_growth=args.max_memory_growth,
        max_size_growth=args.max_size_growth,
        atol=args.atol,
        rtol=args.rtol,
        max_top1_disagreement=args.max_top1_disagreement,
    )
    max_time = _validate.number(args.max_time, "gate", "--max-time", minimum=0, min_exclusive=True)
    return {
        "against": args.against,
        "budgets": not args.no_budgets,
        "tolerances": tol,
        "pairs": args.pairs,
        "max_time_s": max_time,
        "agreement_samples": args.agreement_samples,
    }


__all__ = ["add_against_flags", "against_kwargs"]
