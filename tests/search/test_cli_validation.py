"""``edgeopt compile`` checks every cheap argument before the task is loaded.

Each bad command line runs the real CLI in a fresh process with an empty example cache: loading the
example would import torch and train the teacher into that cache. Asserted: exit 2, one line on stderr
naming the flag, what was expected and what was found; torch never imported; nothing written (no cache,
no out dir); and done in less time than importing torch alone takes, the least that loading costs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = """
import sys
from edgeopt.cli import main
rc = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "torch not imported")
sys.exit(rc)
"""


@pytest.fixture(scope="module")
def torch_import_s() -> float:
    """Seconds a fresh process takes to import torch: loading a task takes at least this."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, timeout=300)
    return time.perf_counter() - t0


def _compile(
    argv: list[str], cache: Path, prefix: tuple[str, ...] = (), **kw
) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, EDGEOPT_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    r = subprocess.run(
        [*prefix, sys.executable, "-c", RUN, "compile", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kw,
    )
    return r, time.perf_counter() - t0


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _assert_refused(r: subprocess.CompletedProcess, flag: str, found: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"edgeopt: error: compile: {flag}: expected "), lines[0]
    assert ", found " in lines[0] and found in lines[0].split(", found ", 1)[1], lines[0]
    assert r.stdout.strip() == "torch not imported"


def _cases(tmp: Path) -> list[tuple[list[str], str, str]]:
    a_file = tmp / "a_file"
    a_file.write_text("not a directory")
    return [
        (["--out", str(a_file)], "--out", f"the file '{a_file}'"),
        (["--out", str(a_file / "sub" / "dir")], "--out", f"under the file '{a_file}'"),
        (["--trials", "-1"], "--trials", "an integer -1"),
        (["--trials", "2.5"], "--trials", "a float 2.5"),
        (["--trials", "ten"], "--trials", "a string 'ten'"),
        (["--workers", "0"], "--workers", "an integer 0"),
        (["--epochs", "0"], "--epochs", "an integer 0"),
        (["--timeout", "-3"], "--timeout", "an integer -3"),
        (["--latency-ms", "0"], "--latency-ms", "an integer 0"),
        (["--min-f1", "1.5"], "--min-f1", "a float 1.5"),
        (["--json", str(tmp / "missing" / "r.json")], "--json", f"'{tmp / 'missing'}' does not exist"),
        (["--storage", "nosuchdb://x"], "--storage", "'nosuchdb://x'"),
        (["--study", ""], "--study", "a string ''"),
        (["--example", "nosuch"], "--example", "a string 'nosuch'"),
    ]


def test_bad_arguments_fail_before_the_task_is_loaded(tmp_path, torch_import_s):
    cases = _cases(tmp_path)
    before = _files(tmp_path)
    for extra, flag, found in cases:
        base = ["--example", "digits-mlp", "--target", "rpi5", "--out", str(tmp_path / "out")]
        if "--example" in extra:
            base = base[2:]
        r, wall = _compile(base + extra, tmp_path / "cache")
        _assert_refused(r, flag, found)
        assert _files(tmp_path) == before, f"{extra}: something was written"
        assert wall < torch_import_s, f"{extra}: {wall:.2f} s, importing torch takes {torch_import_s:.2f} s"


def test_out_under_a_read_only_directory_fails_fast(tmp_path, torch_import_s):
    """A directory the user cannot write (as root, who may write anywhere, the CLI runs without any
    capability: still root, so it reads the checkout wherever it is, but permissions hold)."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: every directory is writable")
        prefix = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
    ro = Path(tempfile.mkdtemp(prefix="edgeopt-ro-", dir="/tmp" if prefix else None))
    try:
        cache = ro / "cache"
        ro.chmod(0o555)
        r, wall = _compile(
            ["--example", "digits-mlp", "--target", "rpi5", "--out", str(ro / "run")], cache, prefix, cwd="/"
        )
        _assert_refused(r, "--out", f"where '{ro}' is not writable")
        assert list(ro.iterdir()) == []
        assert wall < torch_import_s
    finally:
        ro.chmod(0o755)
        shutil.rmtree(ro)


def test_usage_errors_are_one_line(tmp_path):
    r, _ = _compile(["--example", "digits-mlp", "--out", str(tmp_path / "o")], tmp_path / "cache")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--target" in r.stderr and not (tmp_path / "o").exists()


def test_config_is_built_from_the_flags():
    """What passes the checks reaches CompileConfig: --final-epochs 0 and --time-budget 0 are kept."""
    from edgeopt.cli import build_parser
    from edgeopt.pipeline.cli import compile_config

    args = build_parser().parse_args(
        [
            "compile",
            "--example",
            "digits-mlp",
            "--target",
            "rpi5",
            "--out",
            "o",
            "--trials",
            "3",
            "--final-epochs",
            "0",
            "--time-budget",
            "0",
            "--epochs",
            "2",
            "--latency-ms",
            "5",
        ]
    )
    config, target = compile_config(args)
    assert (config.trials, config.final_epochs, config.trial_epochs, config.time_budget_s) == (3, 0, 2, None)
    assert dict(config.budget.overrides()) == {"latency_ms": 5} and target.name == "rpi5"
