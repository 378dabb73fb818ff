"""Fixtures for the runtime half's tests: real onnxruntime sessions on real files, torch-free."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
QUICK = {"min_iters": 20, "min_time_s": 0.05, "warmup": 3}  # the compile loop's screening path


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Host calibration goes to a per-session cache, never the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEOPT_CACHE_DIR", str(tmp_path_factory.mktemp("edgeopt-cache")))
    mp.delenv("GITHUB_STEP_SUMMARY", raising=False)
    yield
    mp.undo()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def dense_mlp(tmp_path_factory) -> Path:
    """The digits-mlp teacher shape: 64-1024-1024-10, ~1.1M params, ~4.3 MiB."""
    from testkit import graphs as testing

    return testing.mlp((64, 1024, 1024, 10)).save(tmp_path_factory.mktemp("models") / "dense.onnx")
