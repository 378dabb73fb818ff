"""A real OpenSSH server on 127.0.0.1 and "device" virtual environments, for the remote tests and
the ``ssh_measurement_overhead`` benchmark.

- :func:`start_sshd`: generated host and user keys in a private directory, ``sshd -D`` on
  127.0.0.1 at a free port (key authentication only), and a client config file with a ``Host``
  alias, ``IdentityFile``, ``UserKnownHostsFile`` in that directory and
  ``StrictHostKeyChecking accept-new`` -- in this test config only.
- :func:`device_venv`: ``python3 -m venv`` + a non-editable ``pip install`` of this checkout (the
  runtime half only: no torch), optionally with pinned extra requirements (an older
  onnxruntime). Cached by a hash of the sources, so a second session reuses it.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SSHD = "/usr/sbin/sshd"
ALIAS = "edgeopt-test-device"


def have_openssh() -> str | None:
    """None when sshd, ssh and ssh-keygen are all there; else what is missing."""
    missing = [p for p in (SSHD,) if not os.path.exists(p)] + [c for c in ("ssh", "ssh-keygen") if not shutil.which(c)]
    return ", ".join(missing) or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    dir: Path
    port: int
    proc: subprocess.Popen
    config: Path  # client config: `ssh -F config edgeopt-test-device`
    user: str

    @property
    def ssh_options(self) -> tuple[str, ...]:
        return ("-F", str(self.config))

    def kill(self) -> None:
        """The server and every sshd process serving its connections, at once: to the client the
        board is gone. (Connection processes run in sessions of their own, so a process-group kill
        would miss them.) The commands they ran are left to notice on their own, as on a real board
        whose network went away."""
        victims = [self.proc.pid, *(pid for pid, name in _descendants(self.proc.pid) if name == "sshd")]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        subprocess.run(["ssh", "-F", str(self.config), "-O", "exit", ALIAS], capture_output=True, timeout=10)
        self.kill()


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process below ``root``."""
    rows = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True, timeout=10).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for row in rows.splitlines():
        pid, ppid, name = row.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), name.strip()))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeopt-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def start_sshd(base: Path, control_dir: Path | None = None, port: int | None = None) -> Sshd:
    """Start sshd on 127.0.0.1; returns once it accepts a login (at most 20 s)."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    _keygen(base / "host_key")
    _keygen(base / "id_user")
    shutil.copy(base / "id_user.pub", base / "authorized_keys")
    user = getpass.getuser()
    port = port or free_port()
    (base / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        f"AllowUsers {user}\nMaxSessions 64\nMaxStartups 64\nLogLevel ERROR\n"
    )
    cfg = base / "ssh_config"
    cfg.write_text(
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {base / 'id_user'}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {base / 'known_hosts'}\n"
        "  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    with open(base / "sshd.log", "ab") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(base / "sshd_config"), "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    server = Sshd(base, port, proc, cfg, user)
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(
            [
                "ssh",
                "-F",
                str(cfg),
                "-o",
                "BatchMode=yes",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                ALIAS,
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if r.returncode == 0:
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.kill()
            log = (base / "sshd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"sshd did not come up on 127.0.0.1:{port}: {r.stderr.strip()} / {log}")
        time.sleep(0.2)


# --------------------------------------------------------------------------- device venvs
def _source_hash(extra: tuple[str, ...]) -> str:
    h = hashlib.sha256(repr(extra).encode())
    for p in sorted(REPO.joinpath("edgeopt").rglob("*")):
        if p.is_file() and p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes())
    h.update(REPO.joinpath("pyproject.toml").read_bytes())
    return h.hexdigest()[:16]


def device_venv(extra: tuple[str, ...] = (), cache: Path | None = None) -> Path:
    """A venv with only the runtime half of this checkout installed (non-editable, no torch);
    returns its python. Built once per source hash under ``cache`` (default: the temp dir)."""
    cache = cache or Path(
        os.environ.get("EDGEOPT_TEST_VENV_CACHE") or Path(tempfile.gettempdir()) / "edgeopt-device-venvs"
    )
    cache.mkdir(parents=True, exist_ok=True)
    name = _source_hash(extra) + ("-" + hashlib.sha256(repr(extra).encode()).hexdigest()[:6] if extra else "")
    venv = cache / name
    python = venv / "bin" / "python"
    if python.exists():
        return python
    build = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-"))
    try:
        src = build / "src"
        shutil.copytree(REPO / "edgeopt", src / "edgeopt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for f in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / f, src / f)
        subprocess.run(
            [sys.executable if not _is_venv() else _base_python(), "-m", "venv", str(build / "venv")],
            check=True,
            capture_output=True,
            timeout=120,
        )
        r = subprocess.run(
            [str(build / "venv/bin/python"), "-m", "pip", "install", "-q", "--no-cache-dir", str(src), *extra],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            raise RuntimeError(f"pip install into the device venv failed: {r.stderr[-2000:]}")
        shutil.rmtree(src)
        with contextlib.suppress(OSError):
            os.rename(build / "venv", venv)  # another session may have won the race: use theirs
    finally:
        shutil.rmtree(build, ignore_errors=True)
    _prune(cache, keep=4)
    return python


def _prune(cache: Path, keep: int) -> None:
    """Drop all but the ``keep`` newest venvs (each source change makes a new one)."""
    venvs = sorted(
        (p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in venvs[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _is_venv() -> bool:
    return sys.prefix != sys.base_prefix


def _base_python() -> str:
    return shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or os.path.join(
        sys.base_prefix, "bin", "python3"
    )
