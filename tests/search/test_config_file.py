"""``edgeopt compile --config FILE.toml``: the settings from a file, the flags over it, bad input one line."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from edgeopt.cli import build_parser, main
from edgeopt.pipeline import config_file
from edgeopt.pipeline.cli import compile_config
from edgeopt.pipeline.config import CompileConfig

BASE = ["compile", "--example", "digits-mlp", "--target", "rpi5"]


def _resolved(argv: list[str]) -> CompileConfig:
    return compile_config(build_parser().parse_args(argv))[0]


def test_the_written_file_repeats_the_resolved_config_exactly(tmp_path):
    """Every kind of value survives: flags set and left at their default, None written as off, a nested table."""
    argv = [*BASE, "--out", str(tmp_path / "o"), "--trials", "7", "--time-budget", "0", "--latency-ms", "0.25"]
    config = _resolved([*argv, "--objective", "pareto", "--int8", "--epochs", "3", "--study", 'my study "x"'])
    config = config.replace(lr=1e-5, max_quality_drop=None, final_bench={"min_iters": 5, "min_time_s": 0.1})
    path = config_file.write(tmp_path / "compile.toml", config)
    again = _resolved(["compile", "--config", str(path)])
    assert again == config
    assert again.time_budget_s is None and again.max_quality_drop is None and again.lr == 1e-5
    assert again.run.example == "digits-mlp" and again.study_name == 'my study "x"'
    assert config_file.read(path) == config


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[run]\nexample = "digits-mlp"\ntarget = "rpi5"\n[optimize]\ntrials = 9\nseed = 4\n'
        f'[output]\nout = "{tmp_path / "a"}"\n[time]\ntime_budget_s = 60\n'
    )
    config = _resolved(["compile", "--config", str(path), "--trials", "2", "--time-budget", "0", "--out", "b"])
    assert (config.trials, config.seed, config.time_budget_s, config.out) == (2, 4, None, Path("b"))
    task = tmp_path / "t.py"
    task.write_text("def make(): pass\n")
    config = _resolved(["compile", f"{task}:make", "--config", str(path)])  # TASK replaces the file's example
    assert config.run.task == f"{task}:make" and config.run.example is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[optimize]\ntrials = 'many'\n", "[optimize] trials: expected an integer >= 0, found a string 'many'"),
        ("[optimize]\ntrails = 3\n", "[optimize] trails: unknown key; expected one of"),
        ("[optimise]\ntrials = 3\n", "[optimise]: unknown key; expected one of"),
        ("[time]\ntime_budget_s = -1\n", "[time] time_budget_s: expected a number > 0, found an integer -1"),
        ("[budget]\nlatency_ms = true\n", "[budget] latency_ms: expected a number > 0, found a boolean True"),
        ("[output]\nout = 3\n", "[output] out: expected a non-empty string, found an integer 3"),
        ("optimize = 3\n", "[optimize]: expected a table, found an integer 3"),
        ("[optimize\n", "expected a TOML config file, found invalid TOML"),
    ],
)
def test_bad_file_input_is_one_line_exit_2_naming_file_and_key(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main([*BASE, "--out", str(tmp_path / "o"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgeopt: error: {path}: {message}"), err
    assert not (tmp_path / "o").exists()


def test_a_missing_config_file_and_missing_required_settings(tmp_path, capsys):
    assert main([*BASE, "--out", "o", "--config", str(tmp_path / "nope.toml")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"edgeopt: error: {tmp_path / 'nope.toml'}: expected a TOML config file, found no such file"
    )
    assert main(["compile", "--example", "digits-mlp", "--out", str(tmp_path / "o")]) == 2
    assert "compile: --target: expected the flag or [run] target in --config FILE" in capsys.readouterr().err


def test_objective_f1_on_the_command_line_and_in_a_file_warns_in_one_line(tmp_path, capsys):
    config = _resolved([*BASE, "--out", "o", "--objective", "f1"])
    assert config.objective == "score"
    assert capsys.readouterr().err.strip() == (
        "edgeopt: warning: compile: --objective f1 is deprecated, read as score (the task's metric)"
    )
    path = tmp_path / "c.toml"
    path.write_text('[optimize]\nobjective = "f1"\n')
    assert _resolved([*BASE, "--out", "o", "--config", str(path)]).objective == "score"
    assert "[optimize] objective: 'f1' is deprecated, read as 'score'" in capsys.readouterr().err


def test_toml_values_are_toml():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

    for value in (0.1, 1e-300, 3, True, 'a\\b"c\n\x7f\u00e9', math.inf):
        assert tomllib.loads(f"x = {config_file._toml(value)}")["x"] == value
