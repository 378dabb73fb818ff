"""The ``edgeopt`` command line: one entry point, each command a thin call into the public API.

Commands live next to the half they belong to; each command module exposes
``register(subparsers)`` which adds its parsers and sets ``func(args) -> int``. Registering a
command must not import torch: compiler commands import their half inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from typing import Any

from edgeopt._version import __version__
from edgeopt.errors import EdgeoptError

# Modules that register commands, in the order they appear in --help.
COMMAND_MODULES = (
    "edgeopt.runtime.cli",  # targets, bench, gate, calibrate
    "edgeopt.pipeline.cli",  # compile, demo, report
)

log = logging.getLogger("edgeopt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeopt",
        description="Edge-deployment compiler and benchmarker for ONNX models.",
    )
    parser.add_argument("--version", action="version", version=f"edgeopt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each message, not as it was when the CLI ran: a caller that
    swaps it afterwards (pytest's capture, a notebook) would leave the handler on a closed file."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s" if not debug else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("edgeopt")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # Optuna logs every trial at INFO; edgeopt prints its own progress.
    try:
        if "optuna" in sys.modules:
            sys.modules["optuna"].logging.set_verbosity(logging.WARNING)
    except Exception:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 over budget, 2 bad input, 3 inconclusive)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug/--quiet are accepted anywhere on the line, not only before the command.
    debug = "--debug" in argv
    quiet = "--quiet" in argv or "-q" in argv
    argv = [a for a in argv if a not in ("--debug", "--quiet", "-q")]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for usage errors
        return int(exc.code or 0)
    args.debug, args.quiet = debug, quiet
    _setup_logging(debug, quiet)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeoptError as exc:
        if debug:  # the whole chain: a task file that raised shows its own frames
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        print(f"edgeopt: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgeopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - `edgeopt ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
