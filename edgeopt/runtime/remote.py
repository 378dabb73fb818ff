"""Measure on the real device through SSH: the client side.

The transport is the system's OpenSSH client, so the user's keys, agent, ``~/.ssh/config`` (Host
aliases, ProxyJump) and known_hosts work as they set them; edgeopt adds only ``BatchMode=yes``
(never a password prompt in the middle of a search), ``ConnectTimeout``, keep-alives and
connection multiplexing (``ControlMaster=auto``, ``ControlPersist``, ``ControlPath`` in a private
directory), so a measurement during a search costs one channel on an open connection. Host-key
checking is left as the user configured it. Options in a profile's ``ssh_options`` come first on
the command line and so win over edgeopt's (ssh keeps the first value of an option).

Nothing but edgeopt's own entry point runs on the device -- ``PYTHON -m edgeopt.runtime.device
COMMAND`` (see that module) -- and only ONNX files travel, uploaded once by content hash into the
device's work directory. Every word of the remote command line is ``shlex.quote``d.

Errors: :class:`DeviceError` (exit 2; ``gate`` reports it as inconclusive, exit 3) when the
device cannot be reached or is lost, naming the host in one line; ssh's own failures (exit 255:
refused, reset, timed out) are retried with backoff; authentication and host-key failures are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError, InputError, ModelError
from edgeopt.runtime.profile_tables import RemoteSpec, check_host  # noqa: F401 - importable here, as before

log = logging.getLogger("edgeopt.remote")
CONTROL_PERSIST_S = 120
KEEPALIVE_S = 5  # ServerAliveInterval; 3 missed -> the connection is declared lost (15 s)
RETRY_BACKOFF_S = (1.0, 2.0, 4.0, 8.0)
#: ssh (exit 255) errors that retrying cannot fix
PERMANENT = (
    "Permission denied",
    "Host key verification failed",
    "Could not resolve hostname",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Bad configuration option",
    "no address associated",
    "Too many authentication failures",
    "Name or service not known",
    "illegal option",
)


class DeviceError(EdgeoptError):
    """The device could not be reached, or was lost during a measurement (exit 2; gate: 3)."""

    exit_code = 2


class DeviceVersionError(InputError):
    """The device's edgeopt or onnxruntime cannot serve this client or model (exit 2)."""


# --------------------------------------------------------------------------- ssh transport
def control_dir() -> Path:
    """A directory only this user can enter, for ssh's control sockets (``$EDGEOPT_SSH_CONTROL_DIR``
    or ``<tmp>/edgeopt-ssh-<uid>``); refused when someone else owns it or can enter it."""
    path = Path(os.environ.get("EDGEOPT_SSH_CONTROL_DIR") or Path(tempfile.gettempdir()) / f"edgeopt-ssh-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise DeviceError(
            f"{path}: expected a directory owned by you with mode 0700 for ssh control sockets, "
            f"found uid {st.st_uid} mode {oct(st.st_mode & 0o777)}; remove it or set EDGEOPT_SSH_CONTROL_DIR"
        )
    return path


@dataclass
class Reply:
    code: int
    stdout: bytes
    stderr: str


class Transport:
    """``ssh`` to one host, multiplexed; runs ``PYTHON -m edgeopt.runtime.device ...`` there."""

    def __init__(self, spec: RemoteSpec):
        self.spec = spec
        self.control = control_dir()

    def ssh_args(self) -> list[str]:
        s = self.spec
        ours = {
            "BatchMode": "yes",
            "ConnectTimeout": str(max(1, round(s.connect_timeout_s))),
            "ServerAliveInterval": str(KEEPALIVE_S),
            "ServerAliveCountMax": "3",
            "ControlMaster": "auto",
            "ControlPersist": str(CONTROL_PERSIST_S),
            "ControlPath": str(self.control / "%C"),
        }
        return ["ssh", *s.ssh_options, *(a for k, v in ours.items() for a in ("-o", f"{k}={v}")), "--", s.host]

    def command(self, *words: str) -> str:
        """The remote command line: the device's python running edgeopt's device entry, quoted word by word."""
        extra = ["--workdir", self.spec.workdir] if self.spec.workdir else []  # the device expands ~
        python = self.spec.python
        # "~/venv/bin/python": the home directory expanded by the remote shell, the rest quoted
        exe = f'"$HOME"/{shlex.quote(python[2:])}' if python.startswith("~/") else shlex.quote(python)
        return " ".join([exe, shlex.join(["-m", "edgeopt.runtime.device", *words, *extra])])

    def run_once(
        self, words: Sequence[str], stdin: bytes | None, timeout_s: float, *, keep_open: bool = False
    ) -> Reply:
        """One ssh invocation. With ``keep_open`` stdin stays open until the reply is in (the
        device abandons the work when it closes). Progress notes from the device are logged."""
        from edgeopt.runtime.device import NOTE

        proc = subprocess.Popen(
            [*self.ssh_args(), self.command(*words)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out: list[bytes] = []
        err: list[str] = []

        def read_out() -> None:  # chunks, not read(): an old ssh's master may hold the pipe open
            for chunk in iter(lambda: os.read(proc.stdout.fileno(), 65536), b""):
                out.append(chunk)

        def read_err() -> None:
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode(errors="replace").rstrip()
                if line.startswith(NOTE):
                    log.warning("%s: %s", self.spec.host, line[len(NOTE) :])
                elif line:
                    err.append(line)

        threads = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
        for t in threads:
            t.start()
        try:
            if stdin:
                proc.stdin.write(stdin)
                proc.stdin.flush()
            if not keep_open:
                proc.stdin.close()
        except OSError:  # ssh already gone: its exit status says why
            pass
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise DeviceError(
                f"{self.spec.host}: no answer within {timeout_s:.0f} s; the device-side process was "
                f"stopped (its stdin closed)"
            ) from None
        for t in threads:
            t.join(2)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        return Reply(code, b"".join(out), "\n".join(err))

    def call(
        self,
        words: Sequence[str],
        stdin: bytes | None = None,
        *,
        timeout_s: float = 60.0,
        keep_open: bool = False,
        retries: int = 3,
    ) -> dict[str, Any]:
        """Run a device command; its JSON reply. ssh failures (exit 255) are retried with backoff."""
        for attempt in range(retries + 1):
            try:
                reply = self.run_once(words, stdin, timeout_s, keep_open=keep_open)
            except OSError as exc:  # no ssh binary
                raise DeviceError(
                    f"{self.spec.host}: cannot run ssh: {exc.strerror or exc} (install openssh-client)"
                ) from None
            if reply.code != 255:
                return self._parse(reply)
            why = (reply.stderr.strip().splitlines() or ["ssh exited with 255"])[-1]
            if any(p.lower() in reply.stderr.lower() for p in PERMANENT) or attempt == retries:
                raise DeviceError(f"{self.spec.host}: cannot reach the device over ssh: {why}")
            wait = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
            log.warning(
                "%s: ssh failed (%s); retrying in %.0f s (%d/%d)", self.spec.host, why, wait, attempt + 1, retries
            )
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, reply: Reply) -> dict[str, Any]:
        text = reply.stdout.decode(errors="replace").strip()
        try:
            doc = json.loads(text.splitlines()[-1]) if text else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "protocol" in doc:
            return doc
        return {
            "error": {"kind": "no-edgeopt", "message": reply.stderr.strip() or text or f"exit {reply.code}"},
            "exit": reply.code,
        }


# --------------------------------------------------------------------------- the device
class Device:
    """One board: handshake (cached), upload by content hash, measurement, calibration."""

    def __init__(self, spec: RemoteSpec):
        self.spec = spec
        self.transport = Transport(spec)
        self._hello: dict[str, Any] | None = None
        self._stored: set[str] = set()

    @property
    def host(self) -> str:
        return self.spec.host

    def hello(self) -> dict[str, Any]:
        """The handshake; DeviceVersionError when the device's edgeopt cannot serve this client."""
        if self._hello is None:
            doc = self.transport.call(["hello"], timeout_s=self.spec.connect_timeout_s + 60)
            self._hello = check_protocol(self.host, self.spec.python, doc)
        return self._hello

    def check_model(self, info: Mapping[str, Any], name: str) -> None:
        """Exit 2 before anything is sent when the device's onnxruntime cannot load the model."""
        check_model_support(self.host, self.hello(), info, name)

    def upload(self, path: str | os.PathLike[str]) -> str:
        """Store the file on the device under its sha256 (once); returns the hash."""
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha in self._stored:
            return sha
        have = self._reply(self.transport.call(["have", sha], timeout_s=self.spec.connect_timeout_s + 30))
        if not have.get("have"):
            timeout = self.spec.connect_timeout_s + 60 + len(data) / 1e6  # >= 1 MB/s
            self._reply(self.transport.call(["put", sha], data, timeout_s=timeout))
            log.info("%s: uploaded %s (%d bytes, sha256 %s)", self.host, Path(path).name, len(data), sha[:12])
        self._stored.add(sha)
        return sha

    def measure(self, job: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Run one ``_worker`` job on the device under the lease; the worker's result, with
        ``device`` (facts, onnxruntime, conditions, lease) added."""
        hello = self.hello()
        sha = self.upload(job["model"])
        limit = float(self.spec.timeout_s or timeout_s)
        req = {k: v for k, v in job.items() if k not in ("model", "remote")}
        req.update(model_sha256=sha, model_name=Path(job["model"]).name)
        words = ["measure", "--timeout", f"{limit:g}", "--lease-timeout", f"{self.spec.lease_timeout_s:g}"]
        wait = limit + self.spec.lease_timeout_s + self.spec.connect_timeout_s + 30
        doc = self.transport.call(words, (json.dumps(req) + "\n").encode(), timeout_s=wait, keep_open=True)
        if (doc.get("error") or {}).get("kind") == "missing":  # the work dir was cleaned since: upload again
            self._stored.discard(sha)
            self.upload(job["model"])
            doc = self.transport.call(words, (json.dumps(req) + "\n").encode(), timeout_s=wait, keep_open=True)
        body = self._reply(doc, model=str(job["model"]))
        return dict(body["result"], device=self._device_env(hello, body))

    def calibrate(self, threads: int, allow_spinning: bool = True, budget_s: float = 2.0) -> dict[str, Any]:
        """``edgeopt calibrate`` on the device (under the lease); the calibration dict."""
        hello = self.hello()
        req = {"threads": threads, "allow_spinning": allow_spinning, "budget_s": budget_s}
        limit = 120.0 + 10 * budget_s
        words = ["calibrate", "--timeout", f"{limit:g}", "--lease-timeout", f"{self.spec.lease_timeout_s:g}"]
        doc = self.transport.call(
            words, (json.dumps(req) + "\n").encode(), timeout_s=limit + self.spec.lease_timeout_s + 60, keep_open=True
        )
        body = self._reply(doc)
        return dict(body["calibration"], device=self._device_env(hello, body))

    def conditions(self) -> dict[str, Any]:
        return self._reply(self.transport.call(["conditions"], timeout_s=self.spec.connect_timeout_s + 30))[
            "conditions"
        ]

    def _device_env(self, hello: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        cond = body.get("conditions") or {}
        warnings = list(
            dict.fromkeys(
                (cond.get("before") or {}).get("warnings", []) + (cond.get("after") or {}).get("warnings", [])
            )
        )
        return {
            "host": self.host,
            "facts": body.get("facts") or hello.get("facts"),
            "edgeopt": hello.get("edgeopt"),
            "onnxruntime": hello.get("onnxruntime"),
            "python": hello.get("python"),
            "os": hello.get("os"),
            "providers": hello.get("providers"),
            "conditions": cond,
            "lease": body.get("lease"),
            "warnings": warnings,
        }

    def _reply(self, doc: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
        err = doc.get("error")
        if not err:
            return dict(doc)
        kind, msg = err.get("kind"), err.get("message", "")
        if kind == "no-edgeopt":
            raise not_installed(self.host, self.spec.python, msg)
        if kind in ("model", "input"):
            raise (ModelError if kind == "model" else InputError)(f"{model or self.host}: {msg} (on {self.host})")
        if kind == "timeout":
            raise ModelError(f"{model or self.host}: {msg} ({self.host})")
        raise DeviceError(f"{self.host}: {msg}")


def not_installed(host: str, python: str, stderr: str) -> EdgeoptError:
    """What a failed ``PYTHON -m edgeopt.runtime.device`` means, as one actionable line."""
    last = (stderr.strip().splitlines() or [""])[-1]
    if "No module named edgeopt.runtime.device" in stderr or "No module named 'edgeopt.runtime.device'" in stderr:
        return DeviceVersionError(
            f"{host}: the device's edgeopt is too old to be measured on (no edgeopt.runtime.device): "
            f"upgrade it there: `{shlex.quote(python)} -m pip install -U edgeopt`"
        )
    if "No module named edgeopt" in stderr or "No module named 'edgeopt'" in stderr:
        return DeviceVersionError(
            f"{host}: edgeopt is not installed for {python} on the device: "
            f"`{shlex.quote(python)} -m pip install edgeopt` there (or set [remote] python)"
        )
    if "not found" in last or "No such file" in last:
        return DeviceError(f"{host}: {python} not found on the device ({last}); set [remote] python to its interpreter")
    return DeviceError(f"{host}: the device-side edgeopt failed: {last or 'no output'}")


def check_protocol(host: str, python: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    from edgeopt._version import __version__
    from edgeopt.runtime.device import PROTOCOL

    if doc.get("error"):
        err = doc["error"]
        if err.get("kind") == "no-edgeopt":
            raise not_installed(host, python, err.get("message", ""))
        raise DeviceError(f"{host}: handshake failed: {err.get('message')}")
    theirs = doc.get("protocol")
    if theirs != PROTOCOL:
        older = not isinstance(theirs, int) or theirs < PROTOCOL
        where = (
            f"upgrade it on the device: `{shlex.quote(python)} -m pip install -U edgeopt`"
            if older
            else "upgrade edgeopt here: `pip install -U edgeopt`"
        )
        raise DeviceVersionError(
            f"{host}: the device runs edgeopt {doc.get('edgeopt', '?')} (remote protocol {theirs}), "
            f"this client edgeopt {__version__} speaks protocol {PROTOCOL}: {where}"
        )
    return dict(doc)


def check_model_support(host: str, hello: Mapping[str, Any], info: Mapping[str, Any], name: str) -> None:
    """ModelError naming both versions when the model needs a newer opset or IR than the device has."""
    ort_v = hello.get("onnxruntime", "?")
    need_ir, max_ir = info.get("ir_version"), hello.get("max_ir_version")
    if need_ir and max_ir and need_ir > max_ir:
        raise DeviceVersionError(
            f"{name}: needs ONNX IR version {need_ir}, but onnxruntime {ort_v} on {host} loads up to "
            f"IR {max_ir}: upgrade onnxruntime on the device (pip install -U onnxruntime) or export for IR {max_ir}"
        )
    limits = hello.get("max_opset") or {}
    for domain, need in (info.get("opsets") or {}).items():
        have = limits.get("ai.onnx" if domain in ("", "ai.onnx") else domain)
        if have and need > have:
            raise DeviceVersionError(
                f"{name}: needs ONNX opset {need} ({domain}), but onnxruntime {ort_v} on {host} loads up to "
                f"opset {have}: upgrade onnxruntime on the device (pip install -U onnxruntime) "
                f"or export with opset {have}"
            )


__all__ = ["Transport", "Device", "DeviceError", "DeviceVersionError", "check_protocol", "check_model_support"]
