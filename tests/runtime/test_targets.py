from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgeopt.errors import TargetError
from edgeopt.runtime.targets import Target

BUILTINS = {"host", "laptop-x86", "ci-2vcpu", "rpi4", "rpi5", "rpi-zero-2w", "jetson-orin-nano-cpu"}

GOOD = """\
name = "mine"
description = "test device"
[device]
arch = "aarch64"
cpu = "cortex-a72"
cores = 4
memory_mb = 4096
isa = ["neon"]
gflops = 10.0
mem_bandwidth_gbs = 4.0
op_overhead_us = 10.0
[runtime]
providers = ["CPUExecutionProvider"]
intra_op_threads = 4
inter_op_threads = 1
graph_optimization = "all"
allow_spinning = true
batch_size = 1
[budget]
latency_ms = 20.0
latency_percentile = 95
peak_memory_mb = 64
model_size_mb = 4.0
min_f1 = 0.90
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(text)
    return p


def test_builtins_present_and_load():
    assert set(Target.builtin_names()) >= BUILTINS
    for name in BUILTINS:
        t = Target.load(name)
        assert t.name == name
        assert t.device.cores >= 1 and t.device.memory_mb > 0
        assert t.description
        if name != "host":
            assert t.device.has_perf_model and t.device.calibrated is False and t.device.perf_source
            assert t.runtime.intra_op_threads <= t.device.cores


def test_host_is_host_and_devices_are_not():
    assert Target.load("host").is_host()
    assert not Target.load("rpi4").is_host()
    assert not Target.load("jetson-orin-nano-cpu").is_host()


def test_rpi4_budgets_for_demo():
    b = Target.load("rpi4").budget
    assert (b.latency_ms, b.latency_percentile, b.model_size_mb, b.peak_memory_mb, b.min_f1) == (0.5, 95, 0.14, 32, 0.9)


def test_good_file_and_fields(tmp_path):
    t = Target.load(write(tmp_path, GOOD))
    assert t.device.isa == ("neon",) and t.runtime.providers == ("CPUExecutionProvider",)
    assert t.budget.latency_ms == 20.0 and t.budget.min_f1 == 0.9
    assert t.source.endswith("t.toml")
    d = t.to_dict()
    assert d["device"]["isa"] == ["neon"] and d["budget"]["model_size_mb"] == 4.0


def test_toml_round_trip(tmp_path):
    for name in ("rpi4", "ci-2vcpu"):
        t = Target.load(name)
        back = Target.load(write(tmp_path, t.to_toml()))
        assert dataclasses.replace(back, source=t.source) == t


def test_with_budget_overrides():
    t = Target.load("rpi4").with_budget(latency_ms=2.0, model_size_mb=3)
    assert t.budget.latency_ms == 2.0 and t.budget.model_size_mb == 3.0 and t.budget.peak_memory_mb == 32
    with pytest.raises(TargetError, match="latency_ms override: expected a number > 0, found 0"):
        t.with_budget(latency_ms=0)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (("latency_ms = 20.0", "latency_ms = 0"), r"\[budget\] latency_ms: expected a number > 0, found an integer 0"),
        (("model_size_mb = 4.0", "model_size_mb = -1.0"), r"\[budget\] model_size_mb: expected a number > 0, found a float -1.0"),
        (("cores = 4", 'cores = "four"'), r"\[device\] cores: expected an integer, found a string 'four'"),
        (("cores = 4", "cores = 0"), r"\[device\] cores: expected an integer > 0, found an integer 0"),
        (("batch_size = 1", "batch_size = 0"), r"\[runtime\] batch_size: expected an integer > 0"),
        (("arch = \"aarch64\"", "arch = \"riscv\""), r"\[device\] arch: expected one of x86_64, aarch64, armv7l, found a string 'riscv'"),
        (("allow_spinning = true", "allow_spinning = 1"), r"\[runtime\] allow_spinning: expected true or false, found an integer 1"),
        (("graph_optimization = \"all\"", "graph_optimization = \"max\""), r"graph_optimization: expected one of disable, basic, extended, all"),
        (("[runtime]", "[runtime]\nthreads = 4"), r"\[runtime\] threads: unknown key; expected one of"),
        (("name = \"mine\"", "name = \"mine\"\nversion = 2"), r"version: unknown key"),
        (("CPUExecutionProvider", "CPUProvider"), r"providers: expected known execution provider names .*found unknown provider 'CPUProvider' \(did you mean CPUExecutionProvider\?\)"),
        (("name = \"mine\"\n", ""), r"name: required key is missing"),
        (("gflops = 10.0\n", ""), r"\[device\] gflops: required when any of"),
        (("min_f1 = 0.90", "min_f1 = 1.5"), r"\[budget\] min_f1: expected a number <= 1"),
        (("isa = [\"neon\"]", "isa = \"neon\""), r"\[device\] isa: expected an array of strings, found a string 'neon'"),
    ],
)
def test_validation_errors_name_file_key_expected_found(tmp_path, edit, needle):
    p = write(tmp_path, GOOD.replace(*edit, 1))
    with pytest.raises(TargetError, match=needle) as info:
        Target.load(p)
    assert str(p) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_toml_syntax_has_line(tmp_path):
    p = write(tmp_path, GOOD.replace("cores = 4", "cores = = 4"))
    with pytest.raises(TargetError, match=r"invalid TOML: .*line 6, column 9") as info:
        Target.load(p)
    assert str(p) in str(info.value)


def test_threads_over_cores_is_a_warning(tmp_path, caplog):
    t = Target.load(write(tmp_path, GOOD.replace("intra_op_threads = 4", "intra_op_threads = 8")))
    assert t.warnings and "intra_op_threads = 8 is more than [device] cores = 4" in t.warnings[0]


def test_unknown_target_and_missing_file(tmp_path):
    with pytest.raises(TargetError, match=r"unknown target 'rpi9': expected a built-in name \(.*rpi4.*\)"):
        Target.load("rpi9")
    with pytest.raises(TargetError, match="target file not found"):
        Target.load(str(tmp_path / "none.toml"))


def test_host_profile_detects_this_machine():
    import os

    t = Target.load("host")
    assert t.device.detect and t.device.cores >= 1 and t.device.arch
    assert t.host_threads() == 0
    assert Target.load("rpi4").host_threads() <= (os.cpu_count() or 1)
