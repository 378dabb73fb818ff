"""``edgeopt ... --help`` of every command exits 0 with a usage line (issue 16: ``gate --help`` ended in
a traceback, a bare ``%`` in a help text). The commands are read from the argparse parser itself,
nested ones too (``targets list``), so a command added later is covered without editing this file.

Commands registered by the runtime half run everywhere; the others are marked ``compile`` and
skipped where the compiler half is not installed. The runtime half's ``--help`` is also run in a
process where torch and onnx cannot be imported, as on a runtime-only install.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from edgeopt.cli import build_parser, main

RUNTIME_MODULE = "edgeopt.runtime"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of ``parser``'s sub-commands (aliases once)."""
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub not in out.values():
                    out[name] = sub
    return out


def commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()):
    """(argv prefix, parser) of every command and nested command, depth first."""
    parser = parser or build_parser()
    for name, sub in _subparsers(parser).items():
        yield prefix + (name,), sub
        yield from commands(sub, prefix + (name,))


def _is_runtime(parser: argparse.ArgumentParser) -> bool:
    func = parser.get_default("func")
    return func is not None and getattr(func, "__module__", "").startswith(RUNTIME_MODULE)


def _params():
    out = []
    for argv, parser in commands():
        marks = () if _is_runtime(parser) else (pytest.mark.compile,)
        out.append(pytest.param(argv, id=" ".join(argv), marks=marks))
    return out


ALL = _params()


def test_commands_are_discovered():
    names = {p.values[0] for p in ALL}
    # the ones every install has; the rest is whatever the parser registers
    assert {("targets",), ("targets", "list"), ("calibrate",), ("bench",), ("gate",)} <= names
    assert len(names) >= 8


@pytest.mark.parametrize("argv", ALL)
def test_help_exits_0_with_usage(argv, capsys):
    assert main([*argv, "--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: edgeopt {' '.join(argv)}"), out[:200] + err[-2000:]
    assert len(out.splitlines()) > 2 and "Traceback" not in out + err


def test_runtime_help_without_torch():
    """As on a runtime-only install: torch/onnx/optuna cannot be imported, every runtime ``--help`` works."""
    runtime = [list(p.values[0]) for p in ALL if not p.marks]
    code = (
        "import sys\n"
        "for m in ('torch', 'onnx', 'optuna', 'tensorly', 'sklearn', 'matplotlib'): sys.modules[m] = None\n"
        "from edgeopt.cli import main\n"
        f"for argv in {runtime!r}:\n"
        "    rc = main([*argv, '--help'])\n"
        "    assert rc == 0, (argv, rc)\n"
        "print('OK', len(" + repr(runtime) + "))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]


def test_the_configuration_reference_is_generated_from_the_declarations():
    """docs/configuration.md is what scripts/config_reference.py writes: a new setting updates it or fails here."""
    pytest.importorskip("torch")
    from scripts.config_reference import OUT, render

    assert OUT.read_text(encoding="utf-8") == render(), "run: python -m scripts.config_reference"
