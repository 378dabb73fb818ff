"""The transport and the device side, through a real sshd on 127.0.0.1: handshake, upload by content
hash, quoting, measurement with raw samples, the lease, timeouts, faults."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeopt.errors import EdgeoptError, ModelError
from edgeopt.runtime import remote
from edgeopt.runtime.backends.ssh import run_job
from edgeopt.runtime.device import PROTOCOL
from testkit import graphs as testing
from testkit import sshd as _sshd

QUICK = {
    "providers": ["CPUExecutionProvider"],
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "graph_optimization": "all",
    "allow_spinning": True,
    "batch": 1,
    "shapes": {},
    "warmup": 3,
    "min_iters": 20,
    "min_time_s": 0.05,
    "max_iters": 10000,
    "profile": False,
    "seed": 0,
}


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return testing.mlp((16, 32, 4)).save(tmp_path_factory.mktemp("m") / "small.onnx")


def job(model, remote_spec, **kw):
    return dict(QUICK, model=str(model), remote=remote_spec.to_dict(), **kw)


def test_handshake(spec):
    hello = remote_device(spec).hello()
    import onnxruntime

    assert hello["protocol"] == PROTOCOL and hello["onnxruntime"] == onnxruntime.__version__
    assert hello["max_opset"]["ai.onnx"] >= 17 and hello["max_ir_version"] >= 8
    assert "CPUExecutionProvider" in hello["providers"] and hello["facts"]["cores"] >= 1
    assert hello["executable"] != sys.executable  # the device venv, not this one


def remote_device(spec):
    return remote.Device(spec)


def test_measure_returns_raw_samples_and_the_device(spec, small_model):
    out = run_job(spec, job(small_model, spec), timeout_s=60)
    assert len(out["samples_ns"]) >= 20 and all(isinstance(s, int) and s > 0 for s in out["samples_ns"])
    dev = out["device"]
    assert dev["host"] == _sshd.ALIAS and dev["onnxruntime"] and dev["facts"]["arch"]
    assert dev["lease"]["released"] >= dev["lease"]["acquired"]
    assert {"before", "after"} <= set(dev["conditions"]) and "load_avg" in dev["conditions"]["before"]


def test_upload_by_hash_once_and_names_are_quoted(spec, tmp_path, small_model):
    evil = tmp_path / "a b; touch PWNED $(touch PWNED2) `id`.onnx"
    evil.write_bytes(small_model.read_bytes())
    d = remote.Device(spec)
    out = d.measure(dict(QUICK, model=str(evil)), timeout_s=60)
    assert out["samples_ns"]
    work = Path(spec.workdir)
    stored = list((work / "models").iterdir())
    import hashlib

    assert [p.name for p in stored] == [hashlib.sha256(small_model.read_bytes()).hexdigest() + ".onnx"]
    assert not list(Path.home().glob("PWNED*")) and not list(work.glob("PWNED*"))
    # a second client (fresh Device) finds it there: no second upload
    mtime = stored[0].stat().st_mtime_ns
    remote.Device(spec).measure(dict(QUICK, model=str(small_model)), timeout_s=60)
    assert stored[0].stat().st_mtime_ns == mtime


def test_workdir_with_a_quote_and_tilde_expansion(sshd, device_python, tmp_path, small_model):
    spec = remote.RemoteSpec(
        _sshd.ALIAS, python=device_python, ssh_options=sshd.ssh_options, workdir=str(tmp_path / "it's here")
    )
    assert remote.Device(spec).measure(dict(QUICK, model=str(small_model)), timeout_s=60)["samples_ns"]
    assert (tmp_path / "it's here" / "models").is_dir()


def test_host_that_looks_like_an_option_is_refused():
    with pytest.raises(EdgeoptError, match="no leading '-'"):
        remote.RemoteSpec("-oProxyCommand=touch /tmp/x")


def test_unreachable_host_fails_within_seconds(openssh, control_dir, tmp_path, small_model):
    port = _sshd.free_port()  # nothing listens there
    spec = remote.RemoteSpec(
        "nobody@127.0.0.1",
        ssh_options=("-p", str(port), "-o", f"UserKnownHostsFile={tmp_path}/kh"),
        connect_timeout_s=3,
    )
    t0 = time.monotonic()
    with pytest.raises(remote.DeviceError, match=r"^nobody@127\.0\.0\.1: cannot reach the device over ssh: .*refused"):
        run_job(spec, job(small_model, spec), timeout_s=30)
    assert time.monotonic() - t0 < 20


def test_device_side_timeout_kills_the_worker(spec, small_model):
    spec = remote_with(spec, timeout_s=3)
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="did not finish within 3 s on the device"):
        run_job(spec, job(small_model, spec, min_time_s=60.0, min_iters=10**9, max_iters=10**9), timeout_s=60)
    assert time.monotonic() - t0 < 30
    assert not _workers_running()


def remote_with(spec, **changes):
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _workers_running() -> list[str]:
    time.sleep(0.5)
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "edgeopt.runtime._worker" in ln and "device-venvs" in ln]


def _lease_is_free(workdir: Path) -> bool:
    fd = os.open(workdir / "lease", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_two_clients_never_time_the_board_together(spec, small_model, tmp_path):
    """Two separate client processes at once: the lease serializes them, the second says who holds it."""
    spec_json = json.dumps(spec.to_dict())
    script = (
        "import json,sys,logging; logging.basicConfig(level=logging.WARNING, format='%(message)s');"
        "from edgeopt.runtime.backends.ssh import run_job; "
        "j=dict(json.loads(sys.argv[1]), model=sys.argv[2], remote=json.loads(sys.argv[3])); "
        "o=run_job(j['remote'], j, timeout_s=120); print(json.dumps(o['device']['lease']))"
    )
    j = json.dumps(dict(QUICK, min_time_s=3.0, max_iters=10**8))  # a measurement of 3 s, not capped by count

    def client() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", script, j, str(small_model), spec_json],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # The second client starts once the first holds the lease (its holder file appears), so the two
    # contend however slowly either one connects on a loaded machine.
    lease_file = Path(spec.workdir) / "lease.json"
    procs = [client()]
    deadline = time.monotonic() + 60
    while not lease_file.exists() and procs[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    procs.append(client())
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    leases = sorted((json.loads(o[0]) for o in outs), key=lambda lease: lease["acquired"])
    assert leases[0]["released"] <= leases[1]["acquired"]  # never together
    waited = [o[1] for o in outs if "waiting for the device lease" in o[1]]
    assert waited and "held by pid" in waited[0] and "measuring small.onnx" in waited[0], (leases, outs)


def test_server_killed_mid_measurement(openssh, device_python, tmp_path, small_model, control_dir):
    server = _sshd.start_sshd(tmp_path / "sshd2")
    work = tmp_path / "work"
    spec = remote.RemoteSpec(
        _sshd.ALIAS, python=device_python, ssh_options=server.ssh_options, workdir=str(work), connect_timeout_s=3
    )
    err: list[BaseException] = []

    def run():
        try:
            run_job(spec, job(small_model, spec, min_time_s=60.0, min_iters=10**9, max_iters=10**9), timeout_s=120)
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not (work / "lease.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.monotonic()
    server.kill()
    t.join(70)
    assert not t.is_alive(), "the client hung after the server was killed"
    assert time.monotonic() - t0 < 60
    assert err and isinstance(err[0], remote.DeviceError), err
    assert str(err[0]).startswith(f"{_sshd.ALIAS}: ") and "\n" not in str(err[0])
    # the device side noticed (stdin closed): worker gone, lease free
    deadline = time.monotonic() + 15
    while not _lease_is_free(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _lease_is_free(work)
    assert not _workers_running()


def test_remote_command_is_quoted_word_by_word(control_dir):
    t = remote.Transport(remote.RemoteSpec("pi", python="~/eo env/bin/python", workdir="~/w d"))
    assert t.command("hello") == "\"$HOME\"/'eo env/bin/python' -m edgeopt.runtime.device hello --workdir '~/w d'"
    t = remote.Transport(remote.RemoteSpec("pi", python="python3; touch /tmp/x"))
    assert t.command("have", "ab") == "'python3; touch /tmp/x' -m edgeopt.runtime.device have ab"
    args = t.ssh_args()
    assert args[0] == "ssh" and args[-2:] == ["--", "pi"] and "BatchMode=yes" in args and "ControlMaster=auto" in args
    assert not any("StrictHostKeyChecking" in a for a in args)  # host-key checking stays the user's
