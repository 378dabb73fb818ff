"""A newcomer's first commands: the task's loading said, a missing report dir said at once, ``--debug``
showing the user's own frames with the exit code kept."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = """
import sys
from edgeopt.cli import main
rc = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "torch not imported")
sys.exit(rc)
"""
RAISING_TASK = """\
def helper():
    raise RuntimeError("the user's bug")


def make():
    return helper()
"""


def _edgeopt(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, timeout=300)
    return r, time.perf_counter() - t0


def test_report_on_a_missing_path_fails_fast_naming_it(tmp_path):
    missing = tmp_path / "nodir"
    r, wall = _edgeopt("report", str(missing))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"edgeopt: error: report: DIR: expected an edgeopt compile output directory, found nothing at '{missing}'"
    ]
    assert r.stdout.strip() == "torch not imported"
    assert wall < 3, wall  # a Python start and the lean import (0.7 s under load 12); it imported torch first (10 s)


@pytest.mark.compile
def test_debug_keeps_the_exit_code_and_shows_the_users_frames(tmp_path):
    task = tmp_path / "my_task.py"
    task.write_text(RAISING_TASK)
    argv = ("compile", f"{task}:make", "--target", "host", "--out", str(tmp_path / "o"))
    plain, _ = _edgeopt(*argv)
    assert plain.returncode == 2, plain.stderr
    errors = [line for line in plain.stderr.splitlines() if line.startswith("edgeopt: error:")]
    assert errors == [f"edgeopt: error: {task}:make raised: RuntimeError: the user's bug"], plain.stderr
    assert "Traceback" not in plain.stderr
    assert f"loading task {task}:make ..." in plain.stderr  # said before the (slow) import and load

    debug, _ = _edgeopt("--debug", *argv)
    assert debug.returncode == 2, debug.stderr
    assert f'File "{task}", line 2, in helper' in debug.stderr, debug.stderr
    assert f'File "{task}", line 6, in make' in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == errors[0]


@pytest.mark.compile
def test_loading_a_task_is_said_with_the_time_it_took(tmp_path, caplog):
    pytest.importorskip("torch")
    from edgeopt.pipeline.cli import load
    from edgeopt.pipeline.config import RunSettings

    task = tmp_path / "tiny.py"
    task.write_text(
        "import numpy as np, torch, edgeopt\n"
        "def make():\n"
        "    x, y = np.random.default_rng(0).random((20, 4), dtype=np.float32), np.arange(20) % 2\n"
        "    return edgeopt.Task(torch.nn.Linear(4, 2), train=(x, y), val=(x, y), name='tiny')\n"
    )
    caplog.set_level(logging.INFO, logger="edgeopt")
    loaded = load(RunSettings(task=f"{task}:make"))
    assert loaded.name == "tiny"
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"loading task {task}:make ..."
    assert lines[1].startswith(f"loaded task {task}:make in ") and lines[1].endswith(" s")


def test_help_of_compile_mentions_pruning_and_the_config_file():
    from edgeopt.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    text = sub["compile"].format_help()
    assert "pruning" in text and "--config" in text and "OUT/compile.toml" in text
    assert "--time-budget" in sub["demo"].format_help()
    from edgeopt.models.examples import example_names

    said = " ".join(text.split())  # argparse wraps the help at hyphens and spaces
    assert all(name in said.replace("- ", "-") for name in example_names()), said  # every --example it takes


def test_relative_paths_are_kept_as_given(tmp_path):
    """The file repeats a run from where it was started (as the command line did)."""
    from edgeopt.pipeline import config_file
    from edgeopt.pipeline.config import CompileConfig

    text = config_file.dumps(CompileConfig(out="runs/x", task="tasks/t.py:make"))
    assert 'out = "runs/x"' in text and 'task = "tasks/t.py:make"' in text
    (tmp_path / "c.toml").write_text(text)
    assert config_file.read(tmp_path / "c.toml").out == Path("runs/x")


@pytest.mark.compile
def test_a_rerun_says_it_resumes_and_the_written_file_is_the_config(small_mlp_task, make_target, tmp_path, caplog):
    from edgeopt.pipeline import config_file
    from edgeopt.pipeline.config import CompileConfig
    from edgeopt.pipeline.loop import compile as compile_

    from .conftest import FAST

    config = CompileConfig(trials=2, out=tmp_path / "run", progress=False, **FAST)
    caplog.set_level(logging.INFO, logger="edgeopt.compile")
    compile_(small_mlp_task, make_target(model_size_mb=0.2), config)
    assert config_file.read(tmp_path / "run" / "compile.toml") == config
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("search: study small-mlp-") and "1 worker (this process)" in m for m in said), said
    assert not any(m.startswith("resuming") for m in said)
    caplog.clear()
    compile_(small_mlp_task, make_target(model_size_mb=0.2), config.replace(trials=1))
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("resuming study small-mlp-") and "(2 trials done)" in m for m in said), said
