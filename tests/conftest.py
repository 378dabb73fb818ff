"""Shared test configuration: tests marked ``compile`` are skipped where torch is absent."""

from __future__ import annotations

import importlib.util

import pytest

HAVE_COMPILE = all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx", "optuna"))


def pytest_collection_modifyitems(config, items):
    if HAVE_COMPILE:
        return
    skip = pytest.mark.skip(reason="needs edgeopt[compile] (torch, onnx, optuna)")
    for item in items:
        if "compile" in item.keywords:
            item.add_marker(skip)
