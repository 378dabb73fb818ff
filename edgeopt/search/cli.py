"""CLI commands of the compiler half: compile, demo, report (torch imported inside each command)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
