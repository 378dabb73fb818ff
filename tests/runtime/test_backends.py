"""Measurement backends: the choice ``backend_for`` makes, the registry, and the contract -- a backend
defined only here (a fake phone over adb: the model pushed into the device's directory, the
worker run there by a shell) runs ``bench``, ``gate`` and ``gate --against`` end to end through
the CLI, with real onnxruntime sessions, selected by nothing but ``backend = "adb"`` in a profile."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from edgeopt.cli import main
from edgeopt.errors import TargetError
from edgeopt.runtime.backends import (
    LocalBackend,
    MeasurementBackend,
    PredictedBackend,
    SshBackend,
    backend_for,
    backend_names,
    checked,
    register_backend,
    unregister_backend,
)
from edgeopt.runtime.targets import Target, resolve_target
from testkit import graphs as testing

QUICK = ["--min-time", "0", "--min-iters", "20", "--warmup", "2"]


class FakeAdb(MeasurementBackend):
    """A phone over adb, faked: ``[remote] host`` is the serial, the device a directory of its own;
    ``push`` copies the model there by content hash, ``shell`` runs a command line in it."""

    name = "adb"
    root: Path = Path()  # the fixture points it at a temporary directory
    jobs: list[dict[str, Any]] = []

    def __init__(self, target: Target):
        super().__init__(target)
        self.serial = target.remote.host
        self.device_dir = self.root / self.serial

    def push(self, path: str) -> str:
        data = Path(path).read_bytes()
        dest = self.device_dir / "data/local/tmp" / f"{hashlib.sha256(data).hexdigest()}.onnx"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return str(dest.relative_to(self.device_dir))

    def shell(self, command: str, stdin: str, timeout_s: float) -> str:
        proc = subprocess.run(
            ["sh", "-c", command], input=stdin, capture_output=True, text=True, cwd=self.device_dir, timeout=timeout_s
        )
        return proc.stdout

    def measure(self, job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
        FakeAdb.jobs.append(dict(job))
        on_device = dict(job, model=self.push(job["model"]))
        out = self.shell(f"{shlex.quote(sys.executable)} -m edgeopt.runtime._worker", json.dumps(on_device), timeout_s)
        return checked(job, json.loads(out))

    def describe(self) -> str:
        return f"{self.serial} over adb"


@pytest.fixture
def adb(tmp_path):
    FakeAdb.root, FakeAdb.jobs = tmp_path / "devices", []
    register_backend(FakeAdb)
    yield FakeAdb
    unregister_backend("adb")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    return testing.mlp((16, 32, 4)).save(d / "new.onnx"), testing.mlp((16, 32, 4), seed=1).save(d / "old.onnx")


def phone(tmp_path: Path, backend: str = "adb") -> Path:
    p = tmp_path / "phone.toml"
    p.write_text(
        f'name = "phone"\nextends = "host"\nbackend = "{backend}"\n'
        '[remote]\nhost = "emulator-5554"\n[runtime]\nintra_op_threads = 1\n'
        "[budget]\nlatency_ms = 1000\nmodel_size_mb = 10\n"
    )
    return p


def test_bench_runs_through_a_backend_the_profile_names(adb, models, tmp_path, capsys):
    assert main(["bench", str(models[0]), "--target", str(phone(tmp_path)), "--json", "-", *QUICK]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["latency_source"] == "measured" and doc["iterations"] >= 20
    env = doc["environment"]
    assert env["backend"] == "adb" and env["measured_on"] == "emulator-5554 over adb" and env["is_target"]
    assert [j["model"] for j in adb.jobs] == [str(models[0].resolve())]
    assert list((adb.root / "emulator-5554/data/local/tmp").glob("*.onnx"))  # measured from the pushed copy


def test_gate_and_gate_against_run_through_it(adb, models, tmp_path, capsys):
    target = str(phone(tmp_path))
    # 100 runs: enough for a distribution-free upper bound on p95
    assert main(["gate", str(models[0]), "--target", target, "--json", "-", *QUICK, "--min-iters", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass" and len(adb.jobs) == 1
    adb.jobs.clear()
    against = ["--against", str(models[1]), "--pairs", "5", "--no-budgets", "--atol", "inf"]
    code = main(
        ["gate", str(models[0]), "--target", target, *against, "--max-top1-disagreement", "100%", "--json", "-"]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code in (0, 1, 3) and doc["comparison"]["method"]["in_process"] is False
    # one model per job (the backend takes no A/B pairs): 5 counterbalanced pairs of blocks
    assert len(adb.jobs) == 10 and not any(j.get("ab") for j in adb.jobs)
    assert sorted({j["model"] for j in adb.jobs}) == sorted(str(m.resolve()) for m in models)


def test_an_unknown_backend_is_one_line_naming_the_file(models, tmp_path, capsys):
    p = phone(tmp_path, backend="adbb")
    assert main(["bench", str(models[0]), "--target", str(p), *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(p) in err[0] and "backend: expected one of 'local'" in err[0] and "'adbb'" in err[0]


def test_backend_for_decides_once_from_the_profile(tmp_path):
    host, rpi4 = Target.load("host"), Target.load("rpi4")
    assert type(backend_for(host)) is LocalBackend and type(backend_for(rpi4)) is PredictedBackend
    assert type(backend_for(rpi4, on_device=True)) is LocalBackend
    ssh = backend_for(resolve_target("rpi4", remote="pi@10.0.0.7"))
    assert type(ssh) is SshBackend and ssh.describe() == "pi@10.0.0.7 over ssh" and not ssh.pairs_in_process
    assert backend_for(rpi4).predicts and backend_for(rpi4).threads == rpi4.host_threads()
    assert {"local", "predicted", "ssh"} <= set(backend_names())
    with pytest.raises(TargetError, match=r"host\.toml: backend: expected one of 'local', .* found a string 'gone'"):
        backend_for(dataclasses.replace(host, backend="gone"))


def test_predicting_needs_a_performance_model(tmp_path):
    p = tmp_path / "bare.toml"
    p.write_text('name = "bare"\n[device]\narch = "aarch64"\ncpu = "Cortex-A53"\ncores = 4\nmemory_mb = 512\n')
    with pytest.raises(TargetError, match=r"\[device\] gflops: expected a performance model"):
        backend_for(Target.load(p))


def test_a_taken_name_is_refused(adb):
    with pytest.raises(ValueError, match="'adb' is already registered"):
        register_backend(FakeAdb)
    with pytest.raises(ValueError, match="'local' is already registered"):
        register_backend(FakeAdb, name="local")


def test_resolve_target_applies_overrides_once_and_checks_them():
    t = resolve_target("rpi4", remote="pi@10.0.0.7", latency_ms=2.0, min_f1=0.9)
    assert t.remote.host == "pi@10.0.0.7" and t.budget.latency_ms == 2.0 and t.budget.min_f1 == 0.9
    assert resolve_target(t) is t  # final: resolving it again changes nothing
    assert resolve_target("rpi4", on_device=True).is_host()
    with pytest.raises(TargetError, match=r"latency_ms override: expected a number > 0"):
        resolve_target("rpi4", latency_ms=0)
