"""bench, gate and calibrate through the loopback device, from the command line and the API; the
version refusals; a lost device ends bench with 2 and gate with 3."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import pytest

from edgeopt.cli import main
from edgeopt.runtime.bench import bench
from edgeopt.runtime.targets import Target
from testkit import graphs as testing
from testkit import sshd as _sshd

QUICK = ["--min-iters", "20", "--min-time", "0.05", "--warmup", "3"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {
        "small": testing.mlp((16, 32, 4)).save(d / "small.onnx"),
        "opset21": testing.mlp((16, 32, 4)).save(d / "opset21.onnx", opset=21),
    }


def profile(tmp_path: Path, spec, extra: str = "", name: str = "loop.toml") -> Path:
    """A profile for the loopback device: extends rpi4 (budgets, threads), with a [remote]."""
    p = tmp_path / name
    opts = ", ".join(json.dumps(o) for o in spec.ssh_options)
    p.write_text(
        textwrap.dedent(f"""\
        # the loopback "device"
        extends = "rpi4"
        name = "loop"

        [device]
        cores = 4  # kept by calibrate --write

        [runtime]
        intra_op_threads = 1

        [budget]
        latency_ms = 50.0
        peak_memory_mb = 256

        [remote]
        host = "{spec.host}"
        python = "{spec.python}"
        ssh_options = [{opts}]
        workdir = "{spec.workdir}"
        connect_timeout_s = 5
        """)
        + extra
    )
    return p


def test_bench_api_measures_on_the_device(spec, tmp_path, models):
    r = bench(models["small"], Target.load(profile(tmp_path, spec)), min_iters=20, min_time_s=0.05, warmup=3)
    assert r.latency_source == "measured" and r.prediction is None
    env = r.environment
    assert env["remote_host"] == _sshd.ALIAS and env["measured_on"].startswith(f"{_sshd.ALIAS} over ssh")
    assert env["onnxruntime"] and "governor" in env and env["conditions"]["before"]["load_avg"] is not None
    assert len(r.samples_ms) == r.iterations >= 20 and r.samples_ms == r.host_samples_ms


def test_bench_cli_remote_flag_and_json(spec, tmp_path, models, capsys):
    # the profile without [remote], the host given on the command line; ssh options from the profile
    p = profile(tmp_path, spec)
    text = p.read_text().replace(f'host = "{spec.host}"', 'host = "placeholder-host"')
    p.write_text(text)
    out = tmp_path / "b.json"
    code = main(["bench", str(models["small"]), "--target", str(p), "--remote", spec.host, "--json", str(out), *QUICK])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["latency_source"] == "measured" and doc["environment"]["remote_host"] == spec.host
    assert f"measured on the device ({spec.host}, over ssh)" in capsys.readouterr().out


def test_gate_cli_through_the_device(spec, tmp_path, models, capsys):
    code = main(["gate", str(models["small"]), "--target", str(profile(tmp_path, spec)), "--json", "-", *QUICK])
    doc = json.loads(capsys.readouterr().out)
    assert code in (0, 3) and doc["latency_source"] == "measured" and doc["measured_on"].startswith(spec.host)
    assert doc["checks"][0]["source"] == "measured"
    code = main(
        ["gate", str(models["small"]), "--target", str(profile(tmp_path, spec)), "--latency-ms", "0.0001", *QUICK]
    )
    assert code == 1


def test_calibrate_on_the_device_writes_the_profile(spec, tmp_path, capsys):
    p = profile(tmp_path, spec)
    before = p.read_text()
    code = main(["calibrate", "--target", str(p), "--write", "--json", str(tmp_path / "cal.json")])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert printed.startswith("[device]") and "gflops = " in printed and f"edgeopt calibrate on {spec.host}" in printed
    after = p.read_text()
    assert after.startswith('# the loopback "device"') and "cores = 4  # kept by calibrate --write" in after
    assert "[remote]" in after and after.count("[device]") == 1 and after != before
    t = Target.load(p)
    assert t.device.calibrated and t.device.gflops > 0 and spec.host in t.device.perf_source
    doc = json.loads((tmp_path / "cal.json").read_text())
    assert doc["device"]["host"] == spec.host and doc["gflops"] == t.device.gflops


def test_calibrate_write_refuses_a_builtin(spec, capsys):
    assert main(["calibrate", "--target", "rpi4", "--remote", spec.host, "--write"]) == 2
    assert "built-in profile" in capsys.readouterr().err


def test_model_newer_than_the_devices_onnxruntime(sshd, old_ort_python, tmp_path, models, capsys):
    """onnxruntime 1.17 loads up to opset 20: an opset-21 model is refused before anything is sent."""
    import dataclasses

    from edgeopt.runtime.targets import RemoteSpec

    old = RemoteSpec(_sshd.ALIAS, python=old_ort_python, ssh_options=sshd.ssh_options, workdir=str(tmp_path / "w"))
    code = main(["bench", str(models["opset21"]), "--target", str(profile(tmp_path, old)), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "needs ONNX opset 21" in err[0] and "onnxruntime 1.17" in err[0] and "up to opset 20" in err[0]
    assert not (tmp_path / "w" / "models").exists()  # nothing was uploaded
    # the same device measures an opset-17 model
    assert (
        main(["bench", str(models["small"]), "--target", str(profile(tmp_path, dataclasses.replace(old))), *QUICK]) == 0
    )


@pytest.mark.parametrize(
    "fake, expect",
    [
        ("protocol0", "pip install -U edgeopt"),  # speaks an older protocol
        ("nodevice", "too old to be measured on"),  # predates remote measurement
    ],
)
def test_device_edgeopt_too_old(sshd, device_python, tmp_path, models, capsys, fake, expect):
    """A wrapper interpreter that puts a fake, older edgeopt first on the path."""
    from edgeopt.runtime.targets import RemoteSpec

    pkg = tmp_path / "fake" / "edgeopt"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "runtime" / "__init__.py").write_text("")
    if fake == "protocol0":
        (pkg / "runtime" / "device.py").write_text(
            "import json; print(json.dumps({'protocol': 0, 'edgeopt': '0.0.9'}))\n"
        )
    wrapper = tmp_path / "old python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "fake"}" exec "{device_python}" "$@"\n')
    wrapper.chmod(0o755)
    s = RemoteSpec(_sshd.ALIAS, python=str(wrapper), ssh_options=sshd.ssh_options, workdir=str(tmp_path / "w"))
    code = main(["bench", str(models["small"]), "--target", str(profile(tmp_path, s)), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expect in err[0] and _sshd.ALIAS in err[0], err


@pytest.mark.parametrize("command, expected", [("bench", 2), ("gate", 3)])
def test_device_lost_mid_measurement(openssh, device_python, tmp_path, models, capsys, command, expected):
    server = _sshd.start_sshd(tmp_path / "sshd")
    from edgeopt.runtime.targets import RemoteSpec

    s = RemoteSpec(_sshd.ALIAS, python=device_python, ssh_options=server.ssh_options, workdir=str(tmp_path / "w"))
    p = profile(tmp_path, s)
    codes: list[int] = []
    t = threading.Thread(
        target=lambda: codes.append(
            main(
                [
                    command,
                    str(models["small"]),
                    "--target",
                    str(p),
                    "--min-time",
                    "60",
                    "--min-iters",
                    "20",
                    "--max-iters",
                    "1000000000",
                ]
            )
        ),
        daemon=True,
    )
    t.start()
    deadline = time.monotonic() + 60
    while not (tmp_path / "w" / "lease.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    t0 = time.monotonic()
    server.kill()
    t.join(70)
    assert not t.is_alive() and time.monotonic() - t0 < 60
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgeopt: error")]
    assert codes == [expected] and len(err) == 1 and _sshd.ALIAS in err[0], (codes, err)
