"""CLI commands of the runtime half: targets, bench, gate, calibrate (torch-free)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
