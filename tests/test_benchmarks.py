"""The benchmark suite's contract: every benchmark registered once with its question, importable without
path edits, tests or private names; the runner writes one versioned schema and refuses bad parameters."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import __main__ as runner
from benchmarks.registry import BENCHMARKS, REGISTRY
from benchmarks.suite import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
HELPERS = {"__init__", "__main__", "interleaved", "registry", "suite"}  # the rest are benchmarks
MODULES = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in HELPERS)


def test_every_module_is_registered_and_every_registration_has_a_module():
    registered = {b.module for b in BENCHMARKS}
    assert {f"benchmarks.{p.stem}" for p in MODULES} == registered
    assert len(REGISTRY) == len(BENCHMARKS)
    for b in BENCHMARKS:
        assert b.question.endswith("?"), b.name
        assert set(b.quick) <= set(b.params), f"{b.name}: quick sets {set(b.quick) - set(b.params)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_path_edits_no_tests_no_private_names(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            pytest.fail(f"{path.name}: sys.path")
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.module.split(".")[0] != "tests", f"{path.name}: imports {node.module}"
            if node.module.startswith("edgeopt"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name}: private {private} from {node.module}"
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] != "tests" for a in node.names), path.name
    assert "def run(" in path.read_text() and "argparse" not in path.read_text(), path.name


def test_list_is_instant_and_names_every_question():
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert time.perf_counter() - t0 < 10
    for b in BENCHMARKS:
        assert b.name in p.stdout
    check = "import sys, benchmarks.__main__; assert 'torch' not in sys.modules and 'optuna' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT).returncode == 0


def test_a_run_writes_the_schema_and_markdown(tmp_path, capsys):
    assert runner.main(["search_goals_met", "--out", str(tmp_path), "--work", str(tmp_path / "work")]) == 0
    doc = json.loads((tmp_path / "search_goals_met.json").read_text())
    assert doc["schema"] == SCHEMA
    for key in ("name", "question", "edgeopt", "commit", "host", "started", "elapsed_s", "parameters", "results"):
        assert key in doc, key
    assert {"cpu", "cores", "load_average"} <= set(doc["host"])
    md = (tmp_path / "search_goals_met.md").read_text()
    assert md.startswith("## search_goals_met") and "| question |" in md and "| goal | measured | verdict |" in md


def test_a_bad_parameter_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    assert runner.main(["harness_agrees_with_bare_loop", "--out", str(tmp_path), "--set", "runz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "runz" in err and "min_time" in err
    assert not list(tmp_path.iterdir())
    assert runner.main(["no_such_benchmark"]) == 2


@pytest.mark.parametrize("bench", BENCHMARKS, ids=lambda b: b.name)
def test_every_benchmark_imports_and_has_run(bench):
    pytest.importorskip("torch")
    assert callable(importlib.import_module(bench.module).run)


def test_the_busy_core_ends_with_the_benchmark_that_started_it():
    """A killed benchmark left its busy loops running: later runs had two cores busy, not one."""
    import os
    import signal

    from benchmarks.suite import BUSY_LOOP

    start = "import os, subprocess, sys, time; "
    start += f"p = subprocess.Popen([sys.executable, '-c', {BUSY_LOOP!r}, str(os.getpid())]); "
    parent = subprocess.Popen(
        [sys.executable, "-c", start + "print(p.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    state = "R"
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().split()[2]
        except FileNotFoundError:
            state = "gone"
        if state in ("Z", "X", "gone"):
            break
        time.sleep(0.05)
    assert state in ("Z", "X", "gone"), f"the busy loop {child} still runs (state {state})"


def test_the_stability_benchmark_counts_how_far_the_same_plan_moved_between_compiles(tmp_path):
    """``plans_stable_under_load``'s ``same_plan``: plans re-measured by several compiles (read from
    compile.json, or a refused compile's report.json), max / min of their p50 and p95, median over plans."""
    from benchmarks.plans_stable_under_load import finalists_of, same_plan

    a, b = {"c1": {"format": "prune", "rank": 8}}, {"c1": {"format": "prune", "rank": 4}}
    rows = [  # (run, file, plan, p50, p95)
        (0, "compile.json", a, 0.063, 0.107),
        (1, "report.json", a, 0.100, 0.114),
        (2, "compile.json", a, 0.095, 0.107),
        (0, "compile.json", b, 0.050, 0.080),
        (2, "compile.json", b, 0.055, 0.084),
    ]
    runs = []
    for i in range(3):
        out = tmp_path / f"run{i}"
        out.mkdir()
        mine = [r for r in rows if r[0] == i]
        finalists = [
            {"trial": 1, "plan": plan, "dtype": "fp32", "latency_p50_ms": p50, "latency_ms": p95}
            for _, _, plan, p50, p95 in mine
        ] + [{"trial": "dense", "plan": {}, "dtype": "fp32", "latency_p50_ms": 1.0, "latency_ms": 1.0}]
        (out / mine[0][1]).write_text(json.dumps({"finalists": finalists}))
        runs.append({"finalists": finalists_of(out)})
    assert all(f["trial"] != "dense" for r in runs for f in r["finalists"])
    got = same_plan(runs)
    assert got["plans"] == 2
    assert got["p50_max_over_min"] == pytest.approx((0.100 / 0.063 + 0.055 / 0.050) / 2, abs=1e-3)
    assert got["p95_max_over_min"] == pytest.approx((0.114 / 0.107 + 0.084 / 0.080) / 2, abs=1e-3)
    assert same_plan([runs[0]]) is None  # one compile: nothing to compare


def test_the_stability_benchmark_says_how_far_down_the_shipped_plan_was_and_its_tail():
    from benchmarks.plans_stable_under_load import shipped_finalist

    finalists = [  # resnet8 at d979b30, run 4: the best finalists over the budget, a plan 10.5 pt down shipped
        {"val_score": 0.9777, "latency_p50_ms": 0.1081, "latency_ms": 0.1577, "shipped": False},
        {"val_score": 0.9243, "latency_p50_ms": 0.1057, "latency_ms": 0.1316, "shipped": False},
        {"val_score": 0.8732, "latency_p50_ms": 0.0628, "latency_ms": 0.1063, "shipped": True},
    ]
    assert shipped_finalist(finalists) == {"pt_below_best": 10.45, "p95_over_p50": 1.693}
    assert shipped_finalist([dict(f, shipped=False) for f in finalists]) is None  # refused: nothing shipped
    # beside it, the shipped file's test score: that trial's 3-epoch val figure is not what the fine-tune ships
    from benchmarks.plans_stable_under_load import stood_text

    run = {"shipped_finalist": shipped_finalist(finalists), "test_score": 0.98058}
    assert stood_text(run) == "10.4 pt, 1.69x, test 0.9806"
    assert stood_text({**run, "test_score": None}) == "10.4 pt, 1.69x"  # a run recorded before it was


def test_the_stability_benchmark_names_the_settings_its_compiles_ran_with():
    from types import SimpleNamespace

    from benchmarks.edgeopt_vs_baselines import ARCH_SEARCH
    from benchmarks.plans_stable_under_load import command, settings_of

    none = SimpleNamespace(trials=None, timeout=None, epochs=None, final_epochs=None)
    # not given: the compile's own search, written out (an entry that said "defaults" read as compile's defaults)
    assert settings_of("resnet8", none) == {"trials": 30, "timeout": 420, "epochs": 12, "final_epochs": 10}
    trials, timeout, epochs, final = ARCH_SEARCH["resnet8"]
    short = SimpleNamespace(**vars(none), settings="short")  # the shorter search of the entries before 0123
    own = {"trials": trials, "timeout": timeout, "epochs": epochs, "final_epochs": final}
    assert settings_of("resnet8", short) == own
    given = SimpleNamespace(trials=None, timeout=420, epochs=12, final_epochs=None, settings="short")
    assert settings_of("resnet8", given) == {"trials": trials, "timeout": 420, "epochs": 12, "final_epochs": final}
    cmd = command("resnet8", given, 0.1, Path("out"))
    assert cmd[cmd.index("--epochs") + 1] == "12" and cmd[cmd.index("--timeout") + 1] == "420"
    assert settings_of("demo", none) == dict.fromkeys(("trials", "timeout", "epochs", "final_epochs"))
    from benchmarks.plans_stable_under_load import run

    with pytest.raises(ValueError, match="settings: expected one of compile, short, found 'shrot'"):
        run(SimpleNamespace(models="resnet8", settings="shrot", previous=None))  # before any compile
    from benchmarks.plans_stable_under_load import _provenance

    entry = _provenance("resnet8", SimpleNamespace(repeats=5, **vars(given)))
    assert entry["epochs"] == 12 and entry["trials"] == trials and entry["cpu"]  # entries of other runs keep theirs


def test_the_stability_benchmark_pins_a_budget_to_the_earlier_entrys_on_request():
    from types import SimpleNamespace

    from benchmarks.plans_stable_under_load import pinned_budget
    from benchmarks.suite import host

    cpu = host().get("cpu")
    earlier = {"models": {"resnet8": {"budget_ms": 0.155466, "commit": "e59f040", "started": "t0", "cpu": cpu}}}
    args = SimpleNamespace(same_budgets=1, previous=earlier)
    assert pinned_budget("resnet8", args) == {"budget_ms": 0.155466, "commit": "e59f040", "started": "t0"}
    assert pinned_budget("resnet8", SimpleNamespace(same_budgets=None, previous=earlier)) is None  # read afresh
    assert pinned_budget("demo", args) is None  # the demo's budgets are its target's
    # pinned twice: the origin stays the run that read the dense p95
    again = {"models": {"resnet8": {"budget_ms": 0.155466, "budget_from": {"commit": "e59f040"}, "cpu": cpu}}}
    assert pinned_budget("resnet8", SimpleNamespace(same_budgets=1, previous=again))["commit"] == "e59f040"
    with pytest.raises(ValueError, match="expected an earlier entry of cnn1d"):
        pinned_budget("cnn1d", args)
    # a budget read on another machine is another cell: vit's entry of d979b30 ran on the AMD host
    other = {"models": {"vit": {"budget_ms": 0.282, "commit": "d979b30"}}}
    with pytest.raises(ValueError, match="vit's earlier entry ran on a host it did not record"):
        pinned_budget("vit", SimpleNamespace(same_budgets=1, previous=other))


def test_the_stability_benchmark_counts_a_compiles_trials_by_kind(tmp_path):
    import optuna

    from benchmarks.plans_stable_under_load import trials_of, trials_text

    assert trials_of(tmp_path) is None  # refused before any study
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    study.enqueue_trial({}, user_attrs={"warm_start": "allocation 1.0"})
    study.enqueue_trial({}, user_attrs={"alternative": "dense + int8"})
    study.enqueue_trial({}, user_attrs={"descent": "trial 0"})

    def objective(trial):
        if trial.number == 4:
            raise optuna.TrialPruned()
        return 0.5

    study.optimize(objective, n_trials=5)
    counts = trials_of(tmp_path)
    assert counts == {"total": 5, "warm_start": 1, "alternatives": 1, "steps": 1, "own": 2, "own_pruned": 1}
    assert trials_text({"trials": counts}) == "5 (1 / 1 / 1 / 2, 1 pruned)"
    assert trials_text({"trials": None}) == "-"  # a refused compile has no study


def test_the_drift_benchmark_says_whether_a_probe_shrinks_a_models_spread():
    from benchmarks.host_drift_common_mode import spread, summarize

    # a host whose speed moves for both graphs alike (x1, x1.5, x1, x1.5 ...): the probe takes it out
    common = [{"probe": 100.0 * f, "model": 40.0 * f} for f in (1, 1.5, 1, 1.5, 1.1, 1.4, 1, 1.5, 1, 1.5)]
    model = next(x for x in summarize(common, ["probe"]) if x["graph"] == "model")
    assert model["raw"] == pytest.approx(1.5) and model["by_probe"]["probe"] == pytest.approx(1.0) and model["shrunk"]
    # the probe moving on its own: dividing by it adds its spread to the model's
    apart = [{"probe": 100.0 * f, "model": 40.0} for f in (1, 1.5, 1, 1.5, 1.1, 1.4, 1, 1.5, 1, 1.5)]
    model = next(x for x in summarize(apart, ["probe"]) if x["graph"] == "model")
    assert model["raw"] == pytest.approx(1.0) and not model["shrunk"]
    assert spread([1.0] * 9 + [3.0]) == 1.0  # p90 / p10: one stall is not the spread
