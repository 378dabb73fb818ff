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


def test_rpi4_demo_carries_the_demo_budgets_and_rpi4_the_device_defaults():
    demo, rpi4 = Target.load("rpi4-demo"), Target.load("rpi4")
    b = demo.budget
    assert (b.latency_ms, b.latency_percentile, b.model_size_mb, b.peak_memory_mb, b.min_f1) == (0.5, 95, 0.14, 32, 0.9)
    assert demo.device == rpi4.device and demo.runtime == rpi4.runtime and "demo" in demo.description
    b = rpi4.budget
    assert (b.latency_ms, b.latency_percentile, b.model_size_mb, b.peak_memory_mb, b.min_f1) == (50, 95, 64, 512, None)


def test_device_budgets_fit_the_device():
    """A built-in device's defaults are for a real deployment: the model may use at most a quarter of
    the RAM, and no quality floor is invented for it."""
    for name in BUILTINS - {"host"}:
        t = Target.load(name)
        b = t.budget
        assert b.latency_ms >= 5 and b.model_size_mb >= 10 and b.min_f1 is None, name
        assert 0 < b.peak_memory_mb <= t.device.memory_mb / 4, name


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
    t = Target.load("rpi4-demo").with_budget(latency_ms=2.0, model_size_mb=3)
    assert t.budget.latency_ms == 2.0 and t.budget.model_size_mb == 3.0 and t.budget.peak_memory_mb == 32
    with pytest.raises(TargetError, match="latency_ms override: expected a number > 0, found an integer 0"):
        t.with_budget(latency_ms=0)
    # the same declaration as the file's [budget] min_f1 and latency_percentile
    with pytest.raises(TargetError, match=r"min_f1 override: expected a number in \(0, 1\], found a float 1.5"):
        t.with_budget(min_f1=1.5)
    with pytest.raises(TargetError, match=r"latency_percentile override: expected a number in \(0, 100\]"):
        t.with_budget(latency_percentile=101)
    with pytest.raises(TargetError, match=r"peak_memory_mb override: expected a number > 0, found a string '1'"):
        t.with_budget(peak_memory_mb="1")


@pytest.mark.parametrize(
    "edit, needle",
    [
        (("latency_ms = 20.0", "latency_ms = 0"), r"\[budget\] latency_ms: expected a number > 0, found an integer 0"),
        (
            ("model_size_mb = 4.0", "model_size_mb = -1.0"),
            r"\[budget\] model_size_mb: expected a number > 0, found a float -1.0",
        ),
        (("cores = 4", 'cores = "four"'), r"\[device\] cores: expected an integer > 0, found a string 'four'"),
        (("cores = 4", "cores = 0"), r"\[device\] cores: expected an integer > 0, found an integer 0"),
        (("batch_size = 1", "batch_size = 0"), r"\[runtime\] batch_size: expected an integer > 0"),
        (
            ('arch = "aarch64"', 'arch = "riscv"'),
            r"\[device\] arch: expected one of 'x86_64', 'aarch64', 'armv7l', found a string 'riscv'",
        ),
        (
            ("allow_spinning = true", "allow_spinning = 1"),
            r"\[runtime\] allow_spinning: expected true or false, found an integer 1",
        ),
        (
            ('graph_optimization = "all"', 'graph_optimization = "max"'),
            r"graph_optimization: expected one of 'disable', 'basic', 'extended', 'all'",
        ),
        (("[runtime]", "[runtime]\nthreads = 4"), r"\[runtime\] threads: unknown key; expected one of"),
        (('name = "mine"', 'name = "mine"\nversion = 2'), r"version: unknown key"),
        (
            ("CPUExecutionProvider", "CPUProvider"),
            (
                r"providers: expected known execution provider names .*found unknown provider 'CPUProvider' "
                r"\(did you mean CPUExecutionProvider\?\)"
            ),
        ),
        (('name = "mine"\n', ""), r"name: required key is missing"),
        (("gflops = 10.0\n", ""), r"\[device\] gflops: required when any of"),
        (("min_f1 = 0.90", "min_f1 = 1.5"), r"\[budget\] min_f1: expected a number in \(0, 1\], found a float 1.5"),
        (('isa = ["neon"]', 'isa = "neon"'), r"\[device\] isa: expected an array of strings, found a string 'neon'"),
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


# --------------------------------------------------------------------------- extends
def test_extends_builtin_merges_tables_and_overrides_keys(tmp_path):
    p = tmp_path / "pi-kiosk.toml"
    p.write_text('extends = "rpi4"\nname = "pi-kiosk"\n[runtime]\nintra_op_threads = 2\n[budget]\nlatency_ms = 30.0\n')
    t, rpi4 = Target.load(p), Target.load("rpi4")
    assert t.name == "pi-kiosk" and t.description == rpi4.description  # inherited
    assert t.device == rpi4.device  # a whole table inherited
    assert t.runtime == dataclasses.replace(rpi4.runtime, intra_op_threads=2)  # one key overridden, the rest merged
    assert t.budget == dataclasses.replace(rpi4.budget, latency_ms=30.0)
    shown = t.to_toml()  # `targets show` prints the resolved profile
    assert "extends" not in shown and 'cpu = "cortex-a72"' in shown and "intra_op_threads = 2" in shown
    assert dataclasses.replace(Target.load(write(tmp_path, shown)), source=t.source) == t


def test_extends_path_relative_to_the_child_and_chains(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "dev.toml").write_text(GOOD)
    (tmp_path / "mid.toml").write_text('extends = "base/dev.toml"\nname = "mid"\n[budget]\nmodel_size_mb = 8.0\n')
    (tmp_path / "sub").mkdir()
    leaf = tmp_path / "sub" / "leaf.toml"
    leaf.write_text('extends = "../mid.toml"\nname = "leaf"\n[device]\ncores = 2\n[runtime]\nintra_op_threads = 2\n')
    t = Target.load(leaf)
    assert (t.name, t.device.cores, t.device.cpu, t.budget.model_size_mb, t.budget.latency_ms) == (
        "leaf",
        2,
        "cortex-a72",
        8.0,
        20.0,
    )


def test_extends_cycle_is_refused_naming_the_chain(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\nname = "b"\n')
    with pytest.raises(TargetError, match=r"b\.toml: extends: .*found a cycle a\.toml -> b\.toml -> a\.toml") as info:
        Target.load(tmp_path / "a.toml")
    assert "\n" not in str(info.value)
    (tmp_path / "self.toml").write_text('extends = "self.toml"\nname = "s"\n')
    with pytest.raises(TargetError, match=r"cycle self\.toml -> self\.toml"):
        Target.load(tmp_path / "self.toml")


@pytest.mark.parametrize(
    "value, needle",
    [
        (
            '"rpi9"',
            (
                r"extends: expected a built-in target name \(.*rpi4.*\) or a path to a \.toml file relative to t\.toml "
                r".*found a string 'rpi9'"
            ),
        ),
        ('"nope/parent.toml"', r"extends: expected .*no such file.*found a string 'nope/parent\.toml'"),
        ("3", r"extends: expected a built-in target name .*found an integer 3"),
    ],
)
def test_extends_unknown_parent_is_one_line_naming_file_and_key(tmp_path, value, needle):
    p = write(tmp_path, f'extends = {value}\nname = "x"\n')
    with pytest.raises(TargetError, match=needle) as info:
        Target.load(p)
    assert str(info.value).startswith(f"{p}: extends: ") and "\n" not in str(info.value)


def test_merged_profile_is_validated_like_the_rest(tmp_path):
    p = write(tmp_path, 'extends = "rpi4"\nname = "x"\n[budget]\nlatency_ms = -2\n')
    with pytest.raises(
        TargetError, match=r"t\.toml: \[budget\] latency_ms: expected a number > 0, found an integer -2"
    ):
        Target.load(p)
    p = write(tmp_path, 'extends = "rpi4"\nname = "x"\n[device]\ngflops = "fast"\n')
    with pytest.raises(TargetError, match=r"\[device\] gflops: expected a number > 0, found a string 'fast'"):
        Target.load(p)
    p = write(tmp_path, 'extends = "rpi4"\nname = "x"\n[runtime]\nthreads = 2\n')
    with pytest.raises(TargetError, match=r"\[runtime\] threads: unknown key"):
        Target.load(p)
    # a parent's error names the parent
    (tmp_path / "bad.toml").write_text(GOOD.replace("cores = 4", "cores = 0"))
    p = write(tmp_path, 'extends = "bad.toml"\nname = "x"\n')
    with pytest.raises(TargetError, match=r"\[device\] cores: expected an integer > 0"):
        Target.load(p)


def test_device_perf_model_is_one_dataclass():
    from edgeopt.runtime.perf import PerfModel

    d = Target.load("rpi4").device
    assert isinstance(d.perf, PerfModel) and d.perf.isa == d.isa and PerfModel.of(d) is d.perf
    assert d.gflops == d.perf.gflops == 12.0 and d.to_dict()["gflops"] == 12.0  # flat keys, as in the file
    assert Target.load("host").device.to_dict()["gflops"] in (None, Target.load("host").device.gflops)
