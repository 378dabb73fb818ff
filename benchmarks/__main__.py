"""Run benchmarks by name: ``python -m benchmarks NAME... [--quick] [--out DIR] [--set KEY=VALUE]``.

``--list`` shows every benchmark with its question. Full runs write to ``benchmarks/results`` (what the
docs quote); ``--quick`` runs (a short version of each, to check that it works) to ``runs/benchmarks/quick``.
Time benchmarks under ``flock /tmp/edgeopt-bench.lock`` so that two never share the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.registry import BENCHMARKS, REGISTRY
from benchmarks.suite import RESULTS, ROOT, run


def _value(text: str) -> Any:
    """A ``--set`` value: JSON when it parses (numbers, true, null, objects), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected KEY=VALUE, got {pair!r}")
        out[key] = _value(value)
    return out


def _list() -> str:
    lines = []
    for b in BENCHMARKS:
        lines.append(f"{b.name}  (full run: {b.length})" if b.length else b.name)
        lines += textwrap.wrap(b.question, 100, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run, in order (see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and the question each answers")
    p.add_argument("--quick", action="store_true", help="a short version of each (minutes): checks that it works")
    p.add_argument("--out", type=Path, help=f"results folder (default: {RESULTS.relative_to(ROOT)}; quick: runs/…)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "benchmarks", help="artifacts (ONNX files, studies)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list or not args.names:
        print(_list())
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)} (see python -m benchmarks --list)", file=sys.stderr)
        return 2
    out = args.out or (ROOT / "runs" / "benchmarks" / "quick" if args.quick else RESULTS)
    overrides = _overrides(args.set)
    for name in args.names:
        try:
            doc = run(REGISTRY[name], out=out, work=args.work, quick=args.quick, overrides=overrides)
        except ValueError as exc:  # a bad --set or parameter: one line, nothing written
            print(f"benchmarks: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: {doc['elapsed_s']} s -> {out / name}.json, .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
