"""The alternatives inside the compile: seeded trials of the same study, in the selection and the report."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.compile
torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

import edgeopt  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.search import alternatives  # noqa: E402
from edgeopt.search.allocation.tables import Candidate, Tables  # noqa: E402

from .conftest import FAST  # noqa: E402

WITH_ALTERNATIVES = {k: v for k, v in FAST.items() if k != "no_alternatives"}


def _tables() -> Tables:
    """Two prunable layers of 256 outputs (64 inputs, bias) and a classifier with no prune rung."""
    per = 64 + 1

    def prune(rank: int) -> Candidate:
        return Candidate(f"pr {rank}", {"format": "prune", "rank": rank}, rank * per, 0.01, 0.1)

    rungs = [prune(r) for r in (32, 48, 64, 96, 128, 160, 192, 224)]  # 1/8, 3/16, 1/4 .. 7/8 of 256
    layers = {
        "0": [Candidate("dense", {}, 256 * per, 0.02, 0.0), *rungs],
        "2": [Candidate("dense", {}, 256 * per, 0.02, 0.0), *rungs],
        "4": [
            Candidate("dense", {}, 2570, 0.01, 0.0),
            Candidate("lr 2", {"format": "lowrank", "rank": 2}, 600, 0.01, 1),
        ],
    }
    return Tables(layers, dense_ms=0.05, rest_ms=0.0, build_s=0.0)


def test_ladder_is_dense_int8_then_each_uniform_ratio_with_and_without_int8():
    ladder = alternatives.ladder(_tables())
    labels = [a.label for a in ladder]
    assert labels[0] == "dense + int8" and ladder[0].plan == {} and ladder[0].dtype == "int8"
    assert labels[1:3] == ["uniform prune 3/4", "uniform prune 3/4 + int8"]
    assert labels[-1] == "uniform prune 1/8 + int8" and len(ladder) == 1 + 2 * len(alternatives.UNIFORM_KEEP)
    half = next(a for a in ladder if a.label == "uniform prune 1/2")
    # One ratio on every prunable layer; the classifier has no prune rung and stays dense.
    assert half.plan == {"0": {"format": "prune", "rank": 128}, "2": {"format": "prune", "rank": 128}}
    assert alternatives.uniform_prune(_tables(), 0.375)["0"]["rank"] == 96
    assert "uniform prune 3/16" in labels and alternatives.uniform_prune(_tables(), 0.1875)["2"]["rank"] == 48
    assert alternatives.ladder(None) == [alternatives.Alternative("dense + int8", {}, "int8")]


def test_compile_seeds_the_alternatives_and_never_ships_worse(small_mlp_task, make_target, tmp_path):
    target = make_target(latency_ms=50.0, min_f1=0.5)
    out = tmp_path / "run"
    res = edgeopt.compile(small_mlp_task, target, trials=2, out=out, seed=0, progress=False, **WITH_ALTERNATIVES)
    assert res.exit_code == 0

    study = optuna.load_study(study_name="small-mlp-testhost", storage=f"sqlite:///{out / 'study.db'}")
    labels = [t.user_attrs.get("alternative") for t in study.trials]
    seeded = [label for label in labels if label]
    n = 1 + 2 * len(alternatives.UNIFORM_KEEP)  # dense int8, each ratio with and without int8
    assert seeded[0] == "dense + int8" and "uniform prune 1/2 + int8" in seeded and len(seeded) == n
    # On top of --trials, and every one run even where the warm start's enqueued trials come first.
    assert len(labels) >= 2 + n and all(t.state.is_finished() for t in study.trials)

    rep = json.loads((out / "report.json").read_text())
    table = {a["method"]: a for a in rep["alternatives"]}
    assert set(table) == set(seeded)
    half = table["uniform prune 1/2 + int8"]
    assert half["dtype"] == "int8" and half["latency_p50_ms"] > 0 and half["meets_budget"]
    assert half["val"] is not None and half["test"] is not None and (out / half["onnx"]).exists()
    assert (out / "plots" / "frontier.png").exists() and rep["plots"]["frontier"] == "plots/frontier.png"
    assert "## Against the alternatives" in (out / "report.md").read_text()
    assert "uniform prune 1/4" in (out / "report.html").read_text()

    # The alternatives compete in the selection: the shipped plan's val score is at least the best feasible one's,
    # within the tie tolerance, unless that plan was measured slower than dense.
    best_alt = max(a["val"] for a in rep["alternatives"] if a["meets_budget"])
    trials = {t["number"]: t for t in rep["trials"]}
    shipped = rep["best"]["trial"]
    shipped_val = trials[shipped]["val"]["score"] if shipped is not None else rep["baseline"]["metrics"]["val"]["score"]
    if shipped_val < best_alt - 0.005:
        # Only a measurement keeps a better plan out: re-measured beside dense, slower by more than 3 % (on
        # a loaded CI host, where the MLP's 10 us plans and dense are equally fast to within the noise).
        better = [f for f in rep["search"]["finalists"] if f["trial"] != "dense" and f["val_score"] >= best_alt - 0.005]
        assert shipped is None and better, rep["search"]["finalists"]
        assert all((f["dropped"] or "").startswith("slower than dense") for f in better), better


def test_no_alternatives_seeds_none(small_mlp_task, make_target, tmp_path):
    out = tmp_path / "run"
    edgeopt.compile(small_mlp_task, make_target(latency_ms=50.0), trials=1, out=out, progress=False, **FAST)
    study = optuna.load_study(study_name="small-mlp-testhost", storage=f"sqlite:///{out / 'study.db'}")
    assert len([t for t in study.trials if t.state.is_finished()]) == 1  # --trials, nothing on top
    assert not any("alternative" in t.user_attrs for t in study.trials)
    rep = json.loads((out / "report.json").read_text())
    assert rep["alternatives"] == [] and not (out / "plots" / "frontier.png").exists()
    assert not (out / "alternatives").exists()


def test_an_alternative_the_search_never_ran_is_said_so():
    """A compile whose time budget ended before every seeded alternative ran (mobilenet: 7 of 11) lists them
    as queued, with the plan they were enqueued with, not as running dense models."""
    from edgeopt.pipeline.record import DType, Status, TrialRecord
    from edgeopt.report.tables import alternative_rows

    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    ladder = alternatives.ladder(_tables())
    alternatives.seed(study, ladder, trials=0)
    first = study.ask()  # the first alternative runs and is screened out
    first.set_user_attr("status", "screened-out")
    study.tell(first, 0.0)

    waiting = [t for t in study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
    rec = TrialRecord.from_trial(waiting[0])
    assert rec.status is Status.QUEUED and rec.plan == ladder[1].plan and rec.dtype is DType.FP32
    assert TrialRecord.from_trial(waiting[1]).dtype is DType.INT8

    rows = alternatives.rows(study, "/nonexistent", lambda path: None)
    assert [r["method"] for r in rows] == [a.label for a in ladder]
    assert rows[0]["status"] == "screened-out" and all(r["status"] == "queued" for r in rows[1:])
    assert all(r["latency_ms"] is None and not r["meets_budget"] for r in rows[1:])
    budget = {"passed": True}
    rep = {
        "target": {"budget": {}},
        "best": {"latency_ms": {}, "metrics": {}, "budget": budget},
        "baseline": {"latency_ms": {}, "metrics": {}, "budget": budget},
        "alternatives": rows,
    }
    met = [r[-1] for r in alternative_rows(rep)[3:]]
    assert met[0] == "no (screened out)" and set(met[1:]) == {"not run (the search's time ended first)"}


def test_the_report_says_when_what_shipped_is_one_of_the_alternatives():
    """cnn1d at 1/2 (61596fd): both compiles shipped their seeded uniform keep 3/8; the report named the
    artifact "edgeopt (shipped)" beside "uniform prune 3/8 (trial 8)", and nothing said they were one plan."""
    from edgeopt.report import headline
    from edgeopt.report.tables import alternative_rows, shipped_alternative

    plan = {"fc1": {"format": "prune", "rank": 48}}
    budget = {"passed": True, "checks": []}
    metrics = {"val": {"score": 0.975, "f1": 0.975}, "test": {"score": 0.961, "f1": 0.961}}
    rep = {
        "target": {"name": "host", "budget": {}},
        "best": {
            "trial": 8,
            "plan": plan,
            "dtype": "fp32",
            "latency_ms": {"p50": 0.0143},
            "metrics": metrics,
            "budget": budget,
            "params": 13090,
            "latency_source": "measured",
        },
        "baseline": {"latency_ms": {"p50": 0.0324}, "metrics": metrics, "budget": budget, "params": 90000},
        "alternatives": [
            {
                "method": "dense + int8",
                "trial": 3,
                "status": "screened-out",
                "meets_budget": False,
                "latency_p50_ms": 0.02,
                "latency_ms": 0.03,
                "val": None,
                "test": None,
            },
            {
                "method": "uniform prune 3/8",
                "trial": 8,
                "status": "trained",
                "meets_budget": True,
                "latency_p50_ms": 0.0145,
                "latency_ms": 0.0174,
                "val": 0.9742,
                "test": 0.969,
            },
        ],
        "trials": [
            {"number": 8, "plan": plan, "dtype": "fp32"},
            {"number": 17, "plan": plan, "dtype": "fp32"},
            {"number": 20, "plan": {"fc1": {"format": "prune", "rank": 32}}, "dtype": "fp32"},
        ],
    }
    assert shipped_alternative(rep)["method"] == "uniform prune 3/8"
    assert alternative_rows(rep)[1][0] == "edgeopt (shipped: the uniform prune 3/8 alternative, fine-tuned)"
    assert headline(rep).endswith(
        "Its plan is the uniform prune 3/8 alternative's: the search found none it preferred."
    )
    # a trial of the search that came to the same plan is the alternative too; another plan, or dense, is not
    assert shipped_alternative({**rep, "best": {**rep["best"], "trial": 17}})["trial"] == 8
    searched = {**rep, "best": {**rep["best"], "trial": 20, "plan": rep["trials"][2]["plan"]}}
    assert shipped_alternative(searched) is None and alternative_rows(searched)[1][0] == "edgeopt (shipped)"
    assert "alternative's" not in headline(searched)
    assert shipped_alternative({**rep, "best": {**rep["best"], "trial": None}}) is None
