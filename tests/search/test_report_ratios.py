"""Speed and size lines read the right way round (issue 16): never "0.8× faster"."""

from __future__ import annotations

import pytest

from edgeopt.report import change, comparison_rows, headline


@pytest.mark.parametrize(
    ("before", "after", "text"),
    [
        (2.0, 1.0, "2.0× faster"),
        (1.0, 1.25, "1.25× slower"),
        (0.8, 1.0, "1.25× slower"),  # what read "0.8× faster"
        (1.0, 0.8, "1.25× faster"),
        (1.0, 1.01, "same speed"),  # within the band
        (1.01, 1.0, "same speed"),
        (1.0, 1.03, "1.03× slower"),
        (30.0, 1.0, "30.0× faster"),
        (None, 1.0, ""),
        (1.0, 0, ""),
    ],
)
def test_change_says_which_way(before, after, text):
    assert change(before, after, "faster", "slower", "same speed") == text


def test_counts_have_no_band():
    assert change(1000, 1000, "fewer", "more", "same", band=0) == "same"
    assert change(1000, 1010, "fewer", "more", "same", band=0) == "1.01× more"


def _entry(params: int, size: int, p50: float, p95: float, f1: float) -> dict:
    return {
        "params": params,
        "size_bytes": size,
        "latency_ms": {"p50": p50, "p95": p95},
        "peak_memory_mb": 10.0,
        "latency_source": "predicted",
        "budget": {"passed": True, "checks": []},
        "metrics": {"test": {"f1": f1, "precision": f1, "recall": f1, "accuracy": f1}},
    }


def _rep(base: dict, best: dict) -> dict:
    return {"baseline": base, "best": best, "target": {"name": "rpi5"}}


def test_a_slower_artifact_reads_slower_everywhere():
    """The issue's case: a plan 28 % slower at p95, 25 % slower at p50, with fewer parameters."""
    rep = _rep(_entry(10_000, 40_000, 0.8, 1.0, 0.95), _entry(8_000, 50_000, 1.0, 1.28, 0.947))
    rows = {r[0]: r[3] for r in comparison_rows(rep)}
    assert rows["params"] == "1.25× fewer"
    assert rows["size"] == "1.25× larger"
    assert rows["latency p50 (predicted)"] == "1.25× slower"
    assert rows["latency p95 (predicted)"] == "1.28× slower"
    line = headline(rep)
    assert "1.25× higher p50 latency (predicted)" in line and "faster" not in line and "lower p50" not in line
    assert all("0." not in cell.split("×")[0] for cell in rows.values() if "×" in cell)


def test_the_dense_model_shipped_reads_same():
    e = _entry(10_000, 40_000, 1.0, 1.2, 0.95)
    rows = {r[0]: r[3] for r in comparison_rows(_rep(e, dict(e)))}
    assert (rows["params"], rows["size"], rows["latency p50 (predicted)"]) == ("same", "same size", "same speed")
    line = headline(_rep(e, dict(e)))
    assert "as many parameters" in line and "the same p50 latency" in line and "1.0×" not in line
