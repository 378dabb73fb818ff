"""A budget below the floor is refused before any training (issue 9, item 3)."""

from __future__ import annotations

import json
import time

import pytest

from edgeopt.errors import BudgetRefused


@pytest.mark.slow
def test_latency_budget_below_the_floor_is_refused_fast(small_mlp_task, make_target, tmp_path):
    import edgeopt

    t0 = time.perf_counter()
    with pytest.raises(BudgetRefused) as info:
        edgeopt.compile(
            small_mlp_task, make_target(), trials=3, out=tmp_path / "run", budget={"latency_ms": 1e-4}, progress=False
        )
    assert time.perf_counter() - t0 < 60
    assert info.value.exit_code == 1
    msg = str(info.value)
    assert "floor of" in msg and " ms" in msg and "\n" not in msg
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["floor"]["latency_ms"] > 1e-4 and len(rep["floor"]["top"]) == 3
    assert not (tmp_path / "run" / "model.onnx").exists()
