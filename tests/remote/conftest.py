"""Fixtures for the remote tests: a real OpenSSH server on 127.0.0.1 and "device" venvs holding only
the runtime half (see ``sshd.py``). Skipped, with the reason, where OpenSSH is not installed
(``scripts/test.sh --full`` installs it)."""

from __future__ import annotations

import os

import pytest

from testkit import sshd as _sshd


@pytest.fixture(scope="session")
def openssh():
    missing = _sshd.have_openssh()
    if missing:
        pytest.skip(
            f"OpenSSH not installed ({missing}): apt-get install -y openssh-server openssh-client "
            f"(scripts/test.sh --full does)"
        )


@pytest.fixture(scope="session")
def control_dir(tmp_path_factory):
    """ssh control sockets for this session only (short path: sockets have a ~100-byte limit)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="eo-cm-")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEOPT_SSH_CONTROL_DIR", d)
    yield d
    mp.undo()


@pytest.fixture(scope="session")
def sshd(openssh, control_dir, tmp_path_factory):
    server = _sshd.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def device_python(openssh):
    """The device's interpreter: a venv with only `pip install <this checkout>` (no torch)."""
    return str(_sshd.device_venv())


@pytest.fixture(scope="session")
def old_ort_python(openssh):
    """A second device whose onnxruntime is older (1.17, which loads up to opset 20 / IR 9)."""
    try:
        return str(_sshd.device_venv(("onnxruntime==1.17.*", "numpy<2")))
    except RuntimeError as exc:
        pytest.skip(f"cannot install onnxruntime 1.17 for this Python: {exc}")


@pytest.fixture
def spec(sshd, device_python, tmp_path):
    """A RemoteSpec for the loopback device, with its own work dir."""
    from edgeopt.runtime.remote import RemoteSpec

    return RemoteSpec(
        host=_sshd.ALIAS,
        python=device_python,
        ssh_options=sshd.ssh_options,
        workdir=str(tmp_path / "device work"),
        connect_timeout_s=5,
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "remote: uses a real OpenSSH server on 127.0.0.1 (tests/remote)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/remote" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.remote)
