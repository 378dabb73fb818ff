"""A report a user can read: savings shown where they land (never a negative latency), ranks in the format's
words, every truncated table captioned, trials named as Optuna numbers them, the fine-tune's scores side by side."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeopt.errors import InputError
from edgeopt.report import rebuild
from edgeopt.report.build import credit_prunes
from edgeopt.report.markdown import _md_finetune, _md_tables, render_markdown
from edgeopt.report.tables import (
    additivity_rows,
    comparison_rows,
    finalist_rows,
    layer_choice_rows,
    plan_rows,
    trial_caption,
    trial_rows,
)

# The digits-mlp tables: fc1 pruned to 256 of 1024 outputs, fc2 low-rank 4; the prune rung is priced
# r × own − (1 − r) × fc2's dense latency, which is negative.
TABLES = {
    "layers": 3,
    "candidates": 78,
    "build_s": 40.7,
    "calibration_samples": 256,
    "additivity": {
        "scale": 0.48,
        "held_out": "middle",
        "graphs": {
            "dense": {"measured_ms": 1.37, "isolated_sum_ms": 1.37, "table_ms": 1.37, "error_pct": 0.0},
            "fastest": {"measured_ms": 0.117, "isolated_sum_ms": -1.125, "table_ms": 0.117, "error_pct": 0.0},
            "middle": {"measured_ms": 0.3785, "isolated_sum_ms": 0.0958, "table_ms": 0.7591, "error_pct": 83.3},
        },
    },
    "screens": {"count": 7, "offset_ms": 0.001},
    "rows": [
        {"layer": "fc1", "candidates": 28, "dense_ms": 0.0621, "chosen": "prune 256", "chosen_ms": -0.6965,
         "sensitivity": 0.5, "why": "saves +0.7586 ms against dense in the table"},
        {"layer": "fc2", "candidates": 33, "dense_ms": 0.7121, "chosen": "lowrank 4", "chosen_ms": 0.0176,
         "sensitivity": 0.7, "why": "saves +0.6945 ms against dense in the table"},
        {"layer": "fc3", "candidates": 17, "dense_ms": 0.0069, "chosen": "dense", "chosen_ms": 0.0069,
         "sensitivity": 0.0, "why": "dense: no rank of any format is faster than dense here"},
    ],
}  # fmt: skip
PLAN = {"fc1": {"format": "prune", "rank": 256}, "fc2": {"format": "lowrank", "rank": 4}}
GRAPH = {"widths": {"fc1": 1024, "fc2": 1024, "fc3": 10}, "consumers": {"fc1": ["fc2"], "fc2": ["fc3"], "fc3": []}}

_NEGATIVE = re.compile(r"(?<![\w.])-\d")  # a number with a minus sign (not "-1.11 pt", which has a unit of change)


def _latency_cells(rows: list[list[str]]) -> list[str]:
    head, *body = rows
    cols = [i for i, h in enumerate(head) if "ms" in h or h == "saves"]
    return [r[i] for r in body for i in cols]


def test_a_prune_saving_is_credited_to_the_layer_it_narrows():
    t = credit_prunes(TABLES, PLAN, GRAPH)
    fc1 = t["rows"][0]
    assert fc1["own_ms"] == pytest.approx(0.25 * 0.0621, abs=1e-5) and fc1["narrows"] == ["fc2"]
    assert fc1["own_ms"] - fc1["saves_elsewhere_ms"] == pytest.approx(-0.6965, abs=1e-5)  # the table's price, split
    rows = layer_choice_rows(t["rows"])
    cells = _latency_cells(rows)
    assert not [c for c in cells if _NEGATIVE.search(c)], cells
    assert rows[1][4] == "0.0155" and "0.7120 ms in fc2 (its input narrowed)" in rows[1][5]
    assert "0.0466 ms here" in rows[1][5] and rows[1][7] == ""  # no "saves +0.7586 ms" for a 0.0621 ms layer
    assert rows[3][5] == "–" and rows[3][7].startswith("dense:")
    gone = credit_prunes(TABLES, {"fc1": {"format": "gone", "rank": 3}}, GRAPH)  # a format no longer registered
    assert gone["rows"][0] == TABLES["rows"][0]


def test_the_overlap_of_two_savings_in_one_layer_is_said():
    md = "\n".join(_md_tables(credit_prunes(TABLES, PLAN, GRAPH)))
    assert "- fc2: both savings are counted, prune 256 of fc1 narrowing its input and its own lowrank 4" in md


def test_a_whole_graph_sum_below_zero_says_what_it_is():
    rows = additivity_rows(TABLES)
    fastest = next(r for r in rows if r[0] == "fastest")
    assert fastest[2].startswith("below zero") and "fit not trusted" in fastest[2]
    assert not [c for c in _latency_cells(rows) if _NEGATIVE.search(c)]


def test_the_held_out_error_says_whether_it_mattered():
    md = "\n".join(_md_tables(TABLES))
    assert "The held-out error (+83.3%) only steers the search: every allocation was measured as one graph" in md
    assert "7 screens" in md and "budget verdict rests on model.onnx's own measurement" in md
    unscreened = "\n".join(_md_tables({**TABLES, "screens": {}}))
    assert "(+83.3%) steered which plans were tried" in unscreened


def _trial(n: int, feasible: bool, score: float) -> dict:
    return {
        "number": n,
        "state": "complete",
        "status": "trained",
        "plan": {"fc1": {"format": "lowrank", "rank": 8}},
        "dtype": "fp32",
        "params": 1000 + n,
        "latency_ms": 0.1,
        "val": {"score": score, "f1": score},
        "feasible": feasible,
        "duration_s": 1.0,
    }


def test_a_truncated_trial_table_has_a_caption_stating_the_rule():
    trials = [_trial(n, n % 4 == 0, n / 100) for n in range(60)]
    rep = {"trials": trials}
    rows = trial_rows(rep)
    assert len(rows) == 1 + 15
    assert [r[0] for r in rows[1:4]] == ["#56", "#52", "#48"]  # feasible first, best score first, as Optuna numbers
    caption = trial_caption(rep)
    assert caption == (
        "15 of 60 trials shown: the feasible ones first, each group by validation score, best first; "
        "all 60 in report.json."
    )
    assert trial_caption({"trials": trials[:15]}) == ""


def test_trials_are_named_by_their_optuna_number():
    finalists = [{"trial": 0, "plan": {}, "val_score": 0.9, "latency_p50_ms": 0.1, "latency_ms": 0.12,
                  "nodes": 6, "shipped": True}]  # fmt: skip
    assert finalist_rows(finalists)[1][0] == "#0"
    assert trial_rows({"trials": [_trial(0, True, 0.9)]})[1][0] == "#0"


@pytest.mark.parametrize(
    ("fmt", "ranks", "width", "text"),
    [
        ("prune", [1, 256, 1], 1024, "256 of 1,024 outputs"),
        ("prune", [1, 256, 1], None, "256 outputs kept"),
        ("lowrank", [1, 4, 1], 1024, "rank 4"),
        ("tt", [1, 4, 6, 1], 1024, "TT [1, 4, 6, 1]"),
        ("dense", None, 10, "–"),
    ],
)
def test_ranks_read_as_their_format_reads_them(fmt, ranks, width, text):
    layer = {"name": "fc1", "format": fmt, "ranks": ranks, "width": width, "params": 1, "dense_params": 2}
    rows = plan_rows({"layers": [dict(layer, macs_share=0.5, latency_share=None)]})
    assert rows[1][2] == text


def _entry(params: int, **extra) -> dict:
    return {
        "params": params,
        "size_bytes": 4 * params,
        "latency_ms": {"p50": 1.0, "p95": 1.2},
        "metrics": {"val": {"f1": 0.9}},
        "budget": {"passed": True, "checks": []},
        **extra,
    }


def test_counts_from_the_exported_file_say_so():
    rep = {"baseline": _entry(1_126_410, nodes=5), "best": _entry(33_034, nodes=6)}
    rows = {r[0]: r[1:] for r in comparison_rows(rep)}
    assert rows["parameters (in model.onnx)"][:2] == ["1,126,410", "33,034"]
    assert rows["ONNX nodes"][:2] == ["5", "6"]
    older = {r[0] for r in comparison_rows({"baseline": _entry(10), "best": _entry(5)})}
    assert "params" in older and "ONNX nodes" not in older  # a compile.json written before the files were counted


FINETUNE = {
    "selected_trial": 4,
    "trial_val_score": 0.7119,
    "artifact_val_score": 0.7143,
    "tolerance_pt": 1.0,
    "epoch": 80,
    "epochs": 80,
    "kept": "last",
    "fell_back": False,
    "note": "",
}


def test_the_fine_tune_is_shown_beside_the_selected_trial():
    (line,) = _md_finetune({"finetune": FINETUNE})
    assert line == "Validation score: trial #4 0.7119, artifact 0.7143 (the last epoch of 80)."
    before_0115 = {k: v for k, v in FINETUNE.items() if k not in ("epoch", "kept")} | {"best_epoch": 37}
    (line,) = _md_finetune({"finetune": before_0115})  # a compile.json of an earlier version still reads right
    assert line.endswith("(best epoch 37 of 80).")
    fell = dict(FINETUNE, artifact_val_score=0.7119, fell_back=True, note="the fine-tune reached 0.6786 (-3.33 pt)")
    (line,) = _md_finetune({"finetune": fell})
    assert "The final fine-tune was discarded and the trial's own weights ship: the fine-tune reached 0.6786" in line
    # below the trial beyond the tolerance, the fine-tuned file shipped (decision 0116): said, with its note
    short = dict(FINETUNE, trial_val_score=0.7300, note="not better on the val samples (McNemar p 0.405)")
    (line,) = _md_finetune({"finetune": short})
    assert line.endswith("ships below the trial beyond the tolerance: not better on the val samples (McNemar p 0.405).")
    (line,) = _md_finetune({"finetune": dict(short, trial_val_score=0.7200)})  # 0.57 pt: within the 1 pt tolerance
    assert "below the trial" not in line
    assert _md_finetune({}) == []
    (line,) = _md_finetune({"finetune": dict(FINETUNE, epochs=12, cut_from=80, cut_to=12)})
    assert line.endswith(
        "The time budget cut the final fine-tune to 12 of its 80 epochs: a longer --time-budget fine-tunes for all 80."
    )


def test_the_bundled_example_states_its_exact_parameter_count():
    from edgeopt.models.examples import EXAMPLES

    model = EXAMPLES["digits-mlp"].model()
    count = sum(p.numel() for p in model.parameters())
    assert f"{count:,}" == "1,126,410" and "1,126,410 parameters" in EXAMPLES["digits-mlp"].description


def test_report_on_a_missing_dir_names_the_path(tmp_path, capsys):
    from edgeopt.cli import main

    with pytest.raises(InputError, match=f"{tmp_path / 'nodir'}: no such directory"):
        rebuild(tmp_path / "nodir")
    assert main(["report", str(tmp_path / "nodir")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "report: DIR: expected an edgeopt compile output directory, found nothing" in line
    assert str(tmp_path / "nodir") in line


def test_markdown_blocks_are_separated_so_each_line_is_its_own_paragraph():
    from edgeopt.report.markdown import join_blocks

    assert join_blocks(["# t", "one", "two", "- a", "- b", "after"]) == "# t\n\none\n\ntwo\n\n- a\n- b\n\nafter\n"


def test_read_graph_finds_widths_and_consumers_in_a_real_export(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from edgeopt.compiler.export import export_onnx
    from edgeopt.report._graph import read_graph

    model = torch.nn.Sequential()
    model.add_module("fc1", torch.nn.Linear(8, 32))
    model.add_module("act", torch.nn.ReLU())
    model.add_module("fc2", torch.nn.Linear(32, 16))
    model.add_module("fc3", torch.nn.Linear(16, 3))
    export_onnx(model.eval(), torch.zeros(1, 8), tmp_path / "m.onnx", verify=False)
    g = read_graph(tmp_path / "m.onnx")
    assert g["widths"] == {"fc1": 32, "fc2": 16, "fc3": 3}
    assert g["consumers"] == {"fc1": ["fc2"], "fc2": ["fc3"], "fc3": []}
    assert read_graph(tmp_path / "missing.onnx") == {"widths": {}, "consumers": {}}


def test_the_whole_markdown_of_a_hand_built_report_has_no_negative_latency():
    rep = {
        "task": {"name": "t", "metric": "f1_macro", "samples": {"train": 1, "val": 1, "test": 1}},
        "target": {"name": "rpi4-demo"},
        "baseline": _entry(1_126_410, metrics={"val": {"f1": 0.99}}),
        "best": _entry(33_034, trial=4, finetune=FINETUNE, metrics={"val": {"f1": 0.97}}),
        "search": {"trials": 1, "sampler": "TPESampler", "objective": "score", "feasible": 1, "screened_out": 0,
                   "pruned": 0, "failed": 0, "wall_s": 1.0, "notes": ["plan (trial #4) shipped"]},
        "trials": [_trial(4, True, 0.97)],
        "layers": [],
        "tables": credit_prunes(TABLES, PLAN, GRAPH),
        "edgeopt_version": "0",
    }  # fmt: skip
    md = render_markdown(rep)
    assert "Shipped: the plan of trial #4." in md and "trial #4 0.7119, artifact 0.7143" in md
    for line in md.splitlines():
        if " ms" in line and line.startswith("|"):
            assert not re.search(r"\| -\d", line), line


def test_a_sequential_resume_reads_as_a_resume_not_as_workers():
    from datetime import datetime, timedelta

    from edgeopt.report.build import concurrent
    from edgeopt.report.markdown import _workers_note

    t0 = datetime(2026, 1, 1)
    at = [t0 + timedelta(seconds=s) for s in range(6)]
    assert concurrent([[at[0], at[2]], [at[2], at[4]]]) == 1  # the resume starts when the first run ended
    assert concurrent([[at[0], at[3]], [at[1], at[4]], [at[5], at[5]]]) == 2
    workers = {"host:1": 3, "host:2": 2}
    assert _workers_note({"workers": workers, "concurrent_workers": 1}) == ", resumed: 2 runs one after the other"
    assert _workers_note({"workers": workers, "concurrent_workers": 2}) == ", 2 workers"
    assert _workers_note({"workers": {**workers, "host:3": 1}, "concurrent_workers": 2}) == ", 3 workers"
    assert _workers_note({"workers": workers}) == ", 2 workers"  # a report written before spans were kept
    assert _workers_note({"workers": {"host:1": 5}, "concurrent_workers": 1}) == ""
