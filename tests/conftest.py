"""Shared test configuration: tests marked ``compile`` are skipped where torch is absent; tests that start
a real sshd or PostgreSQL server are marked ``services`` (left out of the quick tier, see scripts/test.sh);
tests of the runtime half (``tests/runtime``) are marked ``runtime``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HAVE_COMPILE = all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx", "optuna"))
# The fixtures that start a system service (tests/remote/conftest.py, tests/storage/conftest.py).
SERVICE_FIXTURES = frozenset({"openssh", "pg_server"})
RUNTIME_TESTS = Path(__file__).resolve().parent / "runtime"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs edgeopt[compile] (torch, onnx, optuna)")
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
        if RUNTIME_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.runtime)
        if not HAVE_COMPILE and "compile" in item.keywords:
            item.add_marker(skip)
