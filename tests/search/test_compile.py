"""The compile loop end to end: real distillation, real ONNX, real onnxruntime, real Optuna on SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.compile, pytest.mark.slow]  # compiles or trains for tens of seconds a test
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
optuna = pytest.importorskip("optuna")

import edgeopt  # noqa: E402 - after the pytest.importorskip guards
from edgeopt.cli import main  # noqa: E402 - after the pytest.importorskip guards

from .conftest import FAST  # noqa: E402 - after the pytest.importorskip guards

REPO = Path(__file__).resolve().parents[2]


def _study(out: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def test_compile_meets_budgets_and_writes_every_artifact(small_mlp_task, make_target, tmp_path):
    # The dense model is ~0.33 MiB; a 0.2 MiB budget forces the search to decompose.
    target = make_target(model_size_mb=0.2, latency_ms=50.0, peak_memory_mb=512, min_f1=0.5)
    out = tmp_path / "run"
    res = edgeopt.compile(small_mlp_task, target, trials=6, out=out, seed=0, progress=False, **FAST)

    for name in ("model.onnx", "baseline.onnx", "report.json", "report.md", "report.html", "study.db"):
        assert (out / name).exists(), name
    assert (out / "plots" / "pareto.png").exists() and (out / "plots" / "plan.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".") or "tmp" in p.name]

    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "edgeopt.report/1"
    for side in ("baseline", "best"):
        entry = rep[side]
        assert {"params", "size_bytes", "metrics", "latency_ms", "peak_memory_mb"} <= entry.keys()
        assert set(entry["metrics"]["test"]) >= {"f1", "accuracy", "precision", "recall"}
        assert set(entry["latency_ms"]) >= {"p50", "p90", "p95", "p99"}
    best = rep["best"]
    assert best["onnx"] == "model.onnx" and isinstance(best["plan"], dict)
    assert {"passed", "checks"} <= best["budget"].keys()
    assert rep["search"]["trials"] == 6 and rep["search"]["sampler"] == "TPESampler"
    assert len(rep["trials"]) == 6 and all("time_s" in t for t in rep["trials"])
    assert res.passed and res.exit_code == 0
    assert best["size_bytes"] <= 0.2 * 2**20
    assert best["params"] < rep["baseline"]["params"]

    # The artifact runs in onnxruntime, carries its provenance, and scores what the report says.
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["edgeopt.plan"]) == best["plan"]
    assert meta["edgeopt.target"] == "testhost"
    assert "edgeopt.version" in meta and "edgeopt.metrics" in meta
    from edgeopt.pipeline.evaluate import onnx_metrics

    m = onnx_metrics(out / "model.onnx", small_mlp_task.X_test, small_mlp_task.y_test, "f1_macro")
    assert m["f1"] == pytest.approx(best["metrics"]["test"]["f1"])
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_rerun_resumes_the_study_and_report_rebuilds(small_mlp_task, make_target, tmp_path, capsys):
    target = make_target(model_size_mb=0.2)
    out = tmp_path / "run"
    edgeopt.compile(small_mlp_task, target, trials=3, out=out, progress=False, **FAST)
    edgeopt.compile(small_mlp_task, target, trials=2, out=out, progress=False, **FAST)
    study = _study(out, "small-mlp-testhost")
    assert len(study.trials) == 5
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").exists()
    assert json.loads((out / "report.json").read_text())["search"]["trials"] == 5


def test_over_budget_plans_are_screened_out_without_training(small_mlp_task, make_target, tmp_path):
    # A size budget only heavy compression meets: most sampled plans end before training.
    target = make_target(model_size_mb=0.05)
    out = tmp_path / "run"
    # The per-layer search samples plans over the budget; the allocation search does not (its plans fit on paper).
    edgeopt.compile(small_mlp_task, target, trials=8, out=out, progress=False, search="layers", **FAST)
    rep = json.loads((out / "report.json").read_text())
    screened = [t for t in rep["trials"] if t["status"] == "screened-out"]
    assert screened, "expected some plans over the size budget"
    for t in screened:
        assert "distill" not in t["time_s"]
        assert t["constraints"]["model_size"] > 0


def test_budget_nothing_meets_exits_1_with_best_effort(small_mlp_task, make_target, tmp_path, capsys):
    target = make_target(model_size_mb=0.0001)
    out = tmp_path / "run"
    res = edgeopt.compile(small_mlp_task, target, trials=3, out=out, progress=False, **FAST)
    assert not res.passed and res.exit_code == 1
    assert (out / "model.onnx").exists()
    assert any("model_size" in r for r in res.reasons)
    rep = json.loads((out / "report.json").read_text())
    size_check = next(c for c in rep["best"]["budget"]["checks"] if "size" in c["name"])
    assert size_check["passed"] is False and size_check["measured"] > size_check["budget"]


def test_model_without_decomposable_layers_is_still_benchmarked_and_gated(digits_splits, make_target, tmp_path):
    class Projection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(64, 10) * 0.1)

        def forward(self, x):
            return x @ self.w

    train, val, test = digits_splits
    task = edgeopt.Task(Projection(), train=train, val=val, test=test)
    out = tmp_path / "run"
    res = edgeopt.compile(task, make_target(latency_ms=100.0), trials=3, out=out, progress=False, **FAST)
    rep = res.report
    assert rep["search"]["trials"] == 0
    assert rep["best"]["plan"] == {}
    assert "no layer edgeopt can decompose" in (out / "report.md").read_text()
    assert res.passed


def _write_task_file(tmp_path: Path) -> Path:
    f = tmp_path / "task_def.py"
    f.write_text(
        textwrap.dedent("""
        import numpy as np, torch, edgeopt
        from sklearn.datasets import load_digits
        def make():
            d = load_digits()
            X = (d.data / 16.0).astype(np.float32); y = d.target.astype(np.int64)
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
            opt = torch.optim.Adam(m.parameters(), lr=3e-3)
            for _ in range(60):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(torch.from_numpy(X[:1000])), torch.from_numpy(y[:1000])).backward()
                opt.step()
            return edgeopt.Task(m.eval(), train=(X[:1000], y[:1000]), val=(X[1000:1400], y[1000:1400]),
                                test=(X[1400:], y[1400:]), name="cli-task")
    """)
    )
    return f


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "edgeopt", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=kw.get("cwd", REPO),
    )


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path, make_target):
    task = _write_task_file(tmp_path)
    target = make_target(model_size_mb=0.04)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [
        "--target",
        target,
        "--storage",
        url,
        "--study",
        "shared",
        "--trials",
        "3",
        "--epochs",
        "2",
        "--final-epochs",
        "2",
    ]
    procs = [
        _cli("compile", f"{task}:make", "--out", str(tmp_path / f"w{i}"), "--seed", str(i), *common) for i in (0, 1)
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_so, se) in zip(procs, outs):
        assert p.returncode == 0, se  # the dense 9.7k-parameter model fits 0.04 MiB: at worst it ships
    study = optuna.load_study(study_name="shared", storage=url)
    alternatives = [t.user_attrs["alternative"] for t in study.trials if "alternative" in t.user_attrs]
    assert alternatives and len(alternatives) == len(set(alternatives))  # seeded once, by one of the two
    # 3 distinct plans each, and the alternatives on top of the seeder's; a repeat of a plan the other worker
    # trained takes its result and is not counted (--trials counts distinct plans)
    counted = [t for t in study.trials if t.user_attrs.get("repeat_of") is None]
    assert len(counted) == 6 + len(alternatives)
    assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}


@pytest.mark.slow
def test_killing_compile_loses_at_most_the_trial_in_flight(tmp_path, make_target):
    task = _write_task_file(tmp_path)
    target = make_target(model_size_mb=0.04)
    out = tmp_path / "run"
    p = _cli("compile", f"{task}:make", "--target", target, "--out", str(out), "--trials", "40", "--epochs", "3")
    deadline = time.time() + 300
    db = out / "study.db"
    done = 0
    while time.time() < deadline and p.poll() is None:
        time.sleep(1.0)
        if db.exists():
            try:
                done = sum(
                    t.state.is_finished()
                    for t in optuna.load_study(study_name="cli-task-testhost", storage=f"sqlite:///{db}").trials
                )
            except Exception:
                continue
            if done >= 2:
                break
    assert p.poll() is None, p.communicate()[1]
    p.send_signal(signal.SIGKILL)
    p.wait()
    # The study still loads, finished trials are intact; no artifact was left half-written.
    study = optuna.load_study(study_name="cli-task-testhost", storage=f"sqlite:///{db}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 2
    assert not (out / "model.onnx").exists()
    # Resuming runs more trials in the same study and ships an artifact.
    q = _cli(
        "compile",
        f"{task}:make",
        "--target",
        target,
        "--out",
        str(out),
        "--trials",
        "2",
        "--epochs",
        "2",
        "--final-epochs",
        "2",
    )
    _so, se = q.communicate(timeout=400)
    assert q.returncode == 0, se  # the dense 9.7k-parameter model fits 0.04 MiB: at worst it ships
    study = optuna.load_study(study_name="cli-task-testhost", storage=f"sqlite:///{db}")
    assert len([t for t in study.trials if t.state.is_finished()]) >= len(finished) + 2
    assert (out / "model.onnx").exists()
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))


def test_cli_compile_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "nope.py") + ":make", "--target", "host", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert main(["compile", "--example", "nope", "--target", "host", "--out", str(tmp_path / "o")]) == 2
    assert "compile: --example: expected one of" in capsys.readouterr().err
    assert main(["compile", "--target", "host", "--out", str(tmp_path / "o")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "not an edgeopt output dir" in capsys.readouterr().err


def test_cli_compile_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    task = _write_task_file(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    assert main(["compile", f"{task}:make", "--target", "host", "--out", str(taken), "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out: expected a directory" in err[0], err
    assert taken.read_text() == "not a directory"


def test_quality_floor_is_the_tasks_metric_everywhere(digits_splits, small_mlp_task, make_target, tmp_path):
    """With metric="accuracy", the floor is checked against accuracy in the search and in the report."""
    train, val, test = digits_splits
    task = edgeopt.Task(small_mlp_task.model, train=train, val=val, test=test, metric="accuracy", name="acc")
    res = edgeopt.compile(
        task, make_target(model_size_mb=0.2, min_f1=0.5), trials=2, out=tmp_path / "run", progress=False, **FAST
    )
    rep = res.report
    check = next(c for c in rep["best"]["budget"]["checks"] if c["name"].startswith("quality floor"))
    assert check["name"] == "quality floor (accuracy, test)"
    assert check["measured"] == pytest.approx(rep["best"]["metrics"]["test"]["accuracy"])
    for t in rep["trials"]:
        if t["status"] == "trained":
            assert t["val"]["score"] == pytest.approx(t["val"]["accuracy"])
    assert "quality floor (accuracy, test)" in (tmp_path / "run" / "report.md").read_text()


def test_warm_start_and_rank_caps_shape_the_search(small_mlp_task, make_target, tmp_path):
    target = make_target(model_size_mb=0.05)
    out = tmp_path / "run"
    edgeopt.compile(small_mlp_task, target, trials=4, out=out, progress=False, search="layers", **FAST)
    study = _study(out, "small-mlp-testhost")
    warm = [t.user_attrs.get("warm_start") for t in study.trials[:2]]
    assert warm == ["uniform lowrank", "uniform tt"]  # then, if different, the big layers only
    for t in study.trials[:2]:  # the warm-start plans fit the size budget, so they are trained
        assert t.user_attrs["status"] in ("trained", "pruned"), t.user_attrs
    # A random-sampler study is a plain baseline: no warm start.
    out_r = tmp_path / "random"
    edgeopt.compile(small_mlp_task, target, trials=2, out=out_r, sampler="random", progress=False, **FAST)
    assert all("warm_start" not in t.user_attrs for t in _study(out_r, "small-mlp-testhost").trials)


def test_allocation_search_warm_starts_with_budget_fractions(small_mlp_task, make_target, tmp_path):
    target = make_target(model_size_mb=0.05)
    out = tmp_path / "run"
    res = edgeopt.compile(small_mlp_task, target, trials=3, out=out, progress=False, **FAST)
    # the report carries the tables, their additivity check (the shipped plan's too) and the implicit floor
    rep = res.report
    assert rep["quality_floor"]["max_drop"] == 0.05 and rep["quality_floor"]["scores"]["val"] is not None
    assert any("input model less 5 pt" in c["name"] for c in rep["best"]["budget"]["checks"])
    assert (
        {"dense", "fastest", "middle"}
        <= set(rep["tables"]["additivity"]["graphs"])
        <= {
            "dense",
            "fastest",
            "middle",
            "fastest_fp32",  # with int8 rungs
            "fastest_int8",  # ... when the int8 plan measured slower than the fp32 one (decision 0103)
            "whole_int8",  # ... every layer at its fastest int8 rung, when measured (decision 0113)
        }
    )
    assert len(rep["tables"]["rows"]) == 3 and all(r["why"] for r in rep["tables"]["rows"])
    if res.best_plan:
        assert rep["tables"]["shipped"]["measured_ms"] > 0
    md = (out / "report.md").read_text()
    assert "## Per-layer tables" in md and "Do the layers add up?" in md and "Quality floor of the artifact:" in md
    study = _study(out, "small-mlp-testhost")
    assert [t.user_attrs.get("warm_start") for t in study.trials] == [
        "allocation 1.0",
        "allocation 0.85",
        "allocation 0.7",
    ]
    assert [t.params["fraction"] for t in study.trials] == [1.0, 0.85, 0.7]
    assert all(t.user_attrs["allocation"]["feasible"] for t in study.trials)
    assert (out / "tables.json").exists()


def test_pareto_objective_and_int8_in_the_search(small_mlp_task, make_target, tmp_path):
    target = make_target(model_size_mb=0.2)
    out = tmp_path / "pareto"
    res = edgeopt.compile(
        small_mlp_task, target, trials=5, out=out, objective="pareto", int8=True, seed=1, progress=False, **FAST
    )
    study = _study(out, "small-mlp-testhost")
    assert len(study.directions) == 2
    assert (out / "plots" / "pareto_front.png").exists()
    # --int8 is deprecated: no whole-artifact dtype is sampled, int8 is a rung of each layer's table
    assert {t.user_attrs.get("dtype") for t in study.trials} == {"fp32"}
    assert not any(t.params.get("precision") for t in study.trials)
    rep = res.report
    int8 = [n for n, e in rep["best"]["plan"].items() if e.get("precision") == "int8"]
    ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    quantized = {"QuantizeLinear", "DynamicQuantizeLinear"} & set(ops)
    assert bool(quantized) == bool(int8)  # the shipped file is quantized on those layers only
    check = json.loads((out / "compile.json").read_text())["int8_check"]
    assert (check or {}).get("layers", []) == int8 and (not int8 or check["argmax_agreement"] >= 0.9)
    with pytest.raises(
        edgeopt.InputError, match="compile\\(\\): objective: expected one of 'score', 'pareto', found a string 'speed'"
    ):
        edgeopt.compile(small_mlp_task, target, trials=1, out=tmp_path / "x", objective="speed")
    # The same study cannot switch objectives.
    with pytest.raises(edgeopt.InputError, match="same --objective"):
        edgeopt.compile(small_mlp_task, target, trials=1, out=out, objective="score", progress=False, **FAST)
