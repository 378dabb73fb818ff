"""``edgeopt targets list|show|validate``: the built-in profiles and user profile files."""

from __future__ import annotations

import argparse
import json
import sys


def register_targets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "targets",
        help="list, show and validate target profiles",
        description="Built-in target profiles and user profiles (TOML).",
    )
    tsub = p.add_subparsers(dest="targets_command", metavar="{list,show,validate}")
    q = tsub.add_parser("list", help="list the built-in targets")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=_targets_list)
    q = tsub.add_parser("show", help="print a target profile, extends resolved (built-in name or path)")
    q.add_argument("target")
    q.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    q.set_defaults(func=_targets_show)
    q = tsub.add_parser("validate", help="check target profile files; exit 2 on the first problem")
    q.add_argument("files", nargs="+", metavar="FILE")
    q.set_defaults(func=_targets_validate)
    p.set_defaults(func=lambda a: (p.print_help(sys.stderr), 2)[1])


def _targets_list(args: argparse.Namespace) -> int:
    from edgeopt.runtime.targets import Target

    rows = []
    for name in Target.builtin_names():
        t = Target.load(name)
        rows.append(t)
    if args.json:
        print(json.dumps([t.to_dict() for t in rows], indent=2))
        return 0
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(
        f"{'name':<22}{'arch':<9}{'cpu':<28}{'cores':>5}{'lat ms':>8}{' @p':<5}{'mem MB':>8}{'size MB':>9}  perf model"
    )
    for t in rows:
        b, d = t.budget, t.device
        perf = (
            ("this host" if t.is_host() else "calibrated" if d.calibrated else "spec-derived")
            if d.has_perf_model
            else ("this host (calibrated on first use)" if d.detect else "none")
        )
        print(
            f"{t.name:<22}{d.arch:<9}{d.cpu[:27]:<28}{d.cores:>5}{fmt(b.latency_ms, 'g'):>8}"
            f"{' p' + format(b.latency_percentile, 'g'):<5}{fmt(b.peak_memory_mb, 'g'):>8}"
            f"{fmt(b.model_size_mb, 'g'):>9}  {perf}"
        )
    return 0


def _targets_show(args: argparse.Namespace) -> int:
    from edgeopt.runtime.targets import Target

    t = Target.load(args.target)
    if args.json:
        print(json.dumps(dict(t.to_dict(), is_host=t.is_host()), indent=2))
    else:
        print(f"# {t.source}" + ("  (this machine)" if t.is_host() else ""))
        print(t.to_toml(), end="")
    return 0


def _targets_validate(args: argparse.Namespace) -> int:
    from edgeopt.runtime.targets import Target

    for f in args.files:
        t = Target.load(f)
        print(f"ok: {f} ({t.name}{'; ' + str(len(t.warnings)) + ' warning(s)' if t.warnings else ''})")
    return 0


__all__ = ["register_targets"]
