from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from edgeopt.cli import main

FAST = ["--min-iters", "20", "--min-time", "0.05", "--warmup", "3"]


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_targets_list_show_validate(capsys, tmp_path):
    code, out, _ = run(capsys, "targets", "list")
    assert code == 0 and "rpi4" in out and "jetson-orin-nano-cpu" in out and "spec-derived" in out
    code, out, _ = run(capsys, "targets", "show", "rpi5")
    assert code == 0 and 'cpu = "cortex-a76"' in out
    code, out, _ = run(capsys, "targets", "show", "rpi4", "--json")
    assert code == 0 and json.loads(out)["budget"]["latency_ms"] == 50.0
    code, out, _ = run(capsys, "targets", "show", "rpi4-demo")  # resolved: rpi4's device, the demo's budgets
    assert code == 0 and 'cpu = "cortex-a72"' in out and "model_size_mb = 0.14" in out and "extends" not in out
    from edgeopt.runtime.targets import _profiles_dir

    files = sorted(_profiles_dir().glob("*.toml"))
    code, out, _ = run(capsys, "targets", "validate", *files)
    assert code == 0 and out.count("ok: ") == len(files)


def test_validate_bad_file_is_one_line_exit_2(capsys, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(
        'name = "x"\n[device]\narch = "x86_64"\ncpu = "c"\ncores = 2\nmemory_mb = 10\n[budget]\nlatency_ms = -1\n'
    )
    code, out, err = run(capsys, "targets", "validate", p)
    assert code == 2
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and str(p) in lines[0]
        and "[budget] latency_ms" in lines[0]
        and "found a float -1" in lines[0].replace("an integer", "a float")
    )
    assert "Traceback" not in err


def test_usage_error_exit_2(capsys):
    assert run(capsys, "bench")[0] == 2
    assert run(capsys, "gate", "x.onnx", "--confidence", "abc")[0] == 2


def test_bench_json(capsys, tmp_path, fixtures):
    out_json = tmp_path / "sub" / "b.json"
    code, out, _ = run(capsys, "bench", fixtures / "mlp_small.onnx", "--target", "rpi4", "--json", out_json, *FAST)
    assert code == 0 and "PREDICTED for rpi4" in out and "p95" in out
    d = json.loads(out_json.read_text())
    assert d["schema"] == "edgeopt.bench/1" and d["latency_source"] == "predicted" and d["host_latency_ms"]["p50"] > 0
    code, out, _ = run(capsys, "bench", fixtures / "mlp_small.onnx", "--json", "-", *FAST)
    assert json.loads(out)["latency_source"] == "measured"


def test_gate_writes_json_junit_summary_and_step_summary(capsys, tmp_path, fixtures, monkeypatch):
    step = tmp_path / "step.md"
    step.write_text("previous step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    args = [
        "gate",
        fixtures / "mlp_lowrank16.onnx",
        "-t",
        "rpi4",
        "--json",
        tmp_path / "g.json",
        "--junit",
        tmp_path / "g.xml",
        "--summary",
        tmp_path / "g.md",
        *FAST,
        "--max-iters",
        "20000",
    ]
    code, out, _ = run(capsys, *args)
    d = json.loads((tmp_path / "g.json").read_text())
    # a 74 KiB rank-16 MLP is far inside rpi4's device budgets (p95 50 ms, 512 MiB, 64 MiB); at
    # microseconds a run, 0.05 s gives hundreds of runs, enough for a p95 upper bound
    assert code == 0 and d["verdict"] == "pass" and all(c["status"] == "pass" for c in d["checks"])
    assert d["schema"] == "edgeopt.gate/1" and len(d["checks"]) == 3
    assert ET.parse(tmp_path / "g.xml").getroot().tag == "testsuites"
    assert "| latency_p95 |" in (tmp_path / "g.md").read_text()
    run(capsys, *args)
    text = step.read_text()
    assert text.startswith("previous step\n") and text.count("### edgeopt gate") == 2


def test_gate_over_budget_exit_1_and_overrides(capsys, tmp_path, fixtures):
    code, out, _ = run(capsys, "gate", fixtures / "mlp_small.onnx", "--size-mb", "0.001", *FAST)
    assert code == 1 and "FAIL" in out
    code, out, _ = run(
        capsys,
        "gate",
        fixtures / "mlp_small.onnx",
        "--size-mb",
        "10",
        "--latency-ms",
        "1000",
        "--memory-mb",
        "4000",
        "--min-iters",
        "10",
        "--max-iters",
        "10",
        "--min-time",
        "0",
    )
    assert code == 3 and "INCONCLUSIVE" in out  # 10 runs cannot bound a p95 at 95%
    code, _, _ = run(
        capsys,
        "gate",
        fixtures / "mlp_small.onnx",
        "--latency-ms",
        "1000",
        "--strict",
        "--min-iters",
        "10",
        "--max-iters",
        "10",
        "--min-time",
        "0",
    )
    assert code == 1


@pytest.mark.parametrize(
    "model, needle",
    [
        ("missing.onnx", "model file not found"),
        ("truncated.onnx", "not a valid ONNX model"),
        ("not_onnx.onnx", "not a valid ONNX model"),
        ("multi_input.onnx", "--shape features="),
    ],
)
def test_bad_input_exit_2_and_nothing_written(capsys, tmp_path, fixtures, model, needle, monkeypatch):
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    keep = tmp_path / "keep.json"
    keep.write_text("old")
    code, out, err = run(
        capsys,
        "gate",
        fixtures / model,
        "--json",
        keep,
        "--junit",
        tmp_path / "j.xml",
        "--summary",
        tmp_path / "s.md",
        *FAST,
    )
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert keep.read_text() == "old"
    assert not (tmp_path / "j.xml").exists() and not (tmp_path / "s.md").exists() and not step.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_target_exit_2(capsys, fixtures):
    code, _, err = run(capsys, "gate", fixtures / "mlp_small.onnx", "-t", "rpi9")
    assert code == 2 and "unknown target 'rpi9'" in err


def test_unwritable_output_fails_before_measuring(capsys, tmp_path, fixtures):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, "bench", fixtures / "mlp_small.onnx", "--json", blocker / "out.json")
    assert code == 2 and "cannot write" in err


def test_calibrate_prints_device_snippet(capsys, tmp_path):
    code, out, _ = run(capsys, "calibrate", "--threads", "1", "--json", tmp_path / "c.json")
    assert code == 0 and out.startswith("[device]") and "gflops = " in out and "calibrated = true" in out
    assert json.loads((tmp_path / "c.json").read_text())["threads"] == 1


def test_subprocess_smoke(fixtures):
    """The installed entry point, as CI calls it: exit code and one-line error, no traceback."""
    p = subprocess.run(
        [sys.executable, "-m", "edgeopt", "gate", str(fixtures / "truncated.onnx")],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert p.returncode == 2 and p.stderr.startswith("edgeopt: error:") and "Traceback" not in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "edgeopt", "bench", str(fixtures / "mlp_small.onnx"), *FAST],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and "p50" in p.stdout
