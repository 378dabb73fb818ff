"""The device side of remote measurement: ``python -m edgeopt.runtime.device COMMAND``.

A client (``edgeopt.runtime.remote``) runs this module on the board through SSH; it is the only
thing a client runs there besides nothing. Every command prints one JSON object on stdout
(``{"protocol": N, ...}``; a failure is ``{"protocol": N, "error": {"kind", "message"}}``) and
progress lines on stderr prefixed with :data:`NOTE`.

Commands (``--workdir DIR`` on each; default ``<edgeopt cache dir>/remote`` on the device):

- ``hello``: the handshake -- protocol and edgeopt versions, onnxruntime's version, the newest ONNX
  opset (per domain) and IR version it loads (probed by loading tiny models), its execution
  providers, CPU facts and the current conditions.
- ``put SHA256``: a model's bytes on stdin, stored as ``models/<sha256>.onnx`` when the hash
  matches, written to a temporary name and renamed (content-addressed: reused across runs).
- ``have SHA256``: whether that model is stored.
- ``measure``: one JSON line on stdin, the ``_worker`` job, with ``model_sha256`` in place of a path.
  Holds the device lease for the whole measurement, runs ``python -m edgeopt.runtime._worker`` in
  a fresh process under ``--timeout`` (killed when it runs over, or when the client goes away:
  stdin closes), and returns the worker's result with the device's facts and conditions.
- ``calibrate``: one JSON line on stdin (``threads``, ``allow_spinning``, ``budget_s``); runs
  ``edgeopt calibrate``'s micro-models under the lease, in a child process like ``measure``.
- ``conditions``: governor, temperatures, throttling flags, load.

**The lease**: an exclusive ``flock`` on ``<workdir>/lease``, held by this process from before the
worker starts until it has exited, so two clients (or parallel search workers) never time the
board at once. The holder writes who it is to ``<workdir>/lease.json`` (pid, client address,
user, since, what); a waiting process reports it on stderr every few seconds. The kernel drops the
lock when the holder dies, however it dies.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edgeopt.runtime.device_facts import conditions, host_facts, onnx_limits

#: Version of the client <-> device protocol (commands, JSON fields). A client refuses a device
#: whose protocol differs, and says which side to upgrade.
PROTOCOL = 1
#: Prefix of the progress lines this module writes on stderr (a client shows them).
NOTE = "edgeopt-device: "
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LEASE_REPORT_EVERY_S = 5.0


def _note(text: str) -> None:
    sys.stderr.write(f"{NOTE}{text}\n")
    sys.stderr.flush()


class Failure(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def hello(workdir: Path) -> dict[str, Any]:
    import onnxruntime as ort

    from edgeopt._version import __version__

    return {
        "protocol": PROTOCOL,
        "edgeopt": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "onnxruntime": ort.__version__,
        **onnx_limits(ort),
        "providers": list(ort.get_available_providers()),
        "facts": host_facts(),
        "os": platform.platform(),
        "workdir": str(workdir),
        "conditions": conditions(),
    }


# --------------------------------------------------------------------------- models
def model_path(workdir: Path, sha: str) -> Path:
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise Failure("input", f"model_sha256: expected 64 lowercase hex digits, found {sha!r}")
    return workdir / "models" / f"{sha}.onnx"


def put(workdir: Path, sha: str, stream: Any) -> dict[str, Any]:
    dest = model_path(workdir, sha)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{sha[:12]}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
                fh.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != sha:
            raise Failure("upload", f"upload corrupted: {size} bytes with sha256 {digest.hexdigest()}, expected {sha}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return {"stored": str(dest), "bytes": size}


# --------------------------------------------------------------------------- lease
def _client() -> str:
    conn = os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_CLIENT") or ""
    return conn.split()[0] if conn else "local"


def _holder(workdir: Path) -> str:
    try:
        h = json.loads((workdir / "lease.json").read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"]))
        return (
            f"pid {h['pid']} on the device, client {h['client']} (user {h['user']}), since {since} "
            f"({time.time() - h['since']:.0f} s), {h['what']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (no holder info yet)"


@contextlib.contextmanager
def lease(workdir: Path, what: str, timeout_s: float):
    """Hold the device's exclusive lease; wait at most ``timeout_s``, saying who holds it."""
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / "lease", os.O_RDWR | os.O_CREAT, 0o644)
    start, last = time.monotonic(), -LEASE_REPORT_EVERY_S
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout_s:
                    raise Failure(
                        "lease", f"the device stayed busy for {timeout_s:.0f} s: lease held by {_holder(workdir)}"
                    ) from None
                if waited - last >= LEASE_REPORT_EVERY_S:
                    _note(f"waiting for the device lease ({waited:.0f} s): held by {_holder(workdir)}")
                    last = waited
                time.sleep(0.1)
        info = {
            "pid": os.getpid(),
            "client": _client(),
            "user": os.environ.get("USER") or str(os.getuid()),
            "since": time.time(),
            "what": what,
        }
        tmp = workdir / f".lease.{os.getpid()}.json"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, workdir / "lease.json")
        yield {"waited_s": round(time.monotonic() - start, 3), "acquired": info["since"]}
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- the child process
def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the worker gets SIGKILL when this process dies, however it dies."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_child(args: list[str], payload: dict[str, Any], timeout_s: float, stdin_watch: Any | None) -> dict[str, Any]:
    """``python -m ARGS`` with ``payload`` on stdin; its JSON from stdout. Killed after
    ``timeout_s`` or when ``stdin_watch`` (the client's stdin) reaches end of file."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
        env=dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0")),
    )
    gone = threading.Event()
    if stdin_watch is not None:

        def watch() -> None:
            with contextlib.suppress(Exception):
                while stdin_watch.read(1):
                    pass
            gone.set()
            with contextlib.suppress(OSError):
                proc.kill()

        threading.Thread(target=watch, daemon=True).start()
    try:
        out, err = proc.communicate(json.dumps(payload), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise Failure(
            "timeout",
            f"the measurement did not finish within {timeout_s:g} s on the device (the device-side process was killed)",
        ) from None
    if gone.is_set():
        raise Failure("gone", "the client went away; measurement abandoned")
    try:
        return json.loads(out)
    except ValueError:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise Failure(
            "internal", f"the measurement process died on the device (exit {proc.returncode}): {tail}"
        ) from None


def measure(workdir: Path, job: dict[str, Any], timeout_s: float, lease_timeout_s: float, stdin: Any) -> dict[str, Any]:
    path = model_path(workdir, job.pop("model_sha256", None))
    if not path.is_file():
        raise Failure("missing", f"model {path.name} is not on the device")
    job = dict(job, model=str(path), profile=False)
    name = job.pop("model_name", path.name)
    with lease(workdir, f"measuring {name}", lease_timeout_s) as held:
        before = conditions()
        t0 = time.time()
        result = run_child(["edgeopt.runtime._worker"], job, timeout_s, stdin)
        held.update(released=time.time(), measure_s=round(time.time() - t0, 3))
        after = conditions()
    return {"result": result, "lease": held, "conditions": {"before": before, "after": after}, "facts": host_facts()}


def calibrate_here(
    workdir: Path, req: dict[str, Any], timeout_s: float, lease_timeout_s: float, stdin: Any
) -> dict[str, Any]:
    with lease(workdir, f"calibrating ({req.get('threads', 0)} threads)", lease_timeout_s) as held:
        before = conditions()
        result = run_child(["edgeopt.runtime.device", "calibrate-child"], req, timeout_s, stdin)
        held["released"] = time.time()
    return {
        "calibration": result,
        "lease": held,
        "conditions": {"before": before, "after": conditions()},
        "facts": host_facts(),
    }


# --------------------------------------------------------------------------- entry point
def default_workdir() -> Path:
    from edgeopt._io import cache_dir

    return cache_dir() / "remote"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgeopt.runtime.device", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("hello", "put", "have", "measure", "calibrate", "conditions", "calibrate-child"))
    p.add_argument("sha256", nargs="?")
    p.add_argument("--workdir", help="where models and the lease live (default: <edgeopt cache dir>/remote)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds the measurement may take")
    p.add_argument("--lease-timeout", type=float, default=600.0, help="seconds to wait for the lease")
    return p


def _dispatch(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if args.command == "hello":
        return hello(workdir)
    if args.command == "conditions":
        return {"conditions": conditions()}
    if args.command == "have":
        return {"have": model_path(workdir, args.sha256).is_file()}
    if args.command == "put":
        return put(workdir, args.sha256, sys.stdin.buffer)
    line = sys.stdin.readline()
    try:
        req = json.loads(line)
    except ValueError:
        raise Failure("input", "expected one JSON line on stdin") from None
    if args.command == "measure":
        return measure(workdir, req, args.timeout, args.lease_timeout, sys.stdin)
    return calibrate_here(workdir, req, args.timeout, args.lease_timeout, sys.stdin)


def _calibrate_child() -> int:
    """Inside the calibration child (``calibrate-child``): the request on stdin, the calibration on stdout."""
    req = json.loads(sys.stdin.read())
    from edgeopt.runtime.calibrate import calibrate

    cal = calibrate(
        int(req.get("threads", 0)),
        allow_spinning=bool(req.get("allow_spinning", True)),
        budget_s=float(req.get("budget_s", 2.0)),
    )
    sys.stdout.write(json.dumps(cal.to_dict() if hasattr(cal, "to_dict") else cal))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "calibrate-child":
        return _calibrate_child()
    workdir = Path(os.path.expanduser(args.workdir)) if args.workdir else default_workdir()
    try:
        out = _dispatch(args, workdir)
    except Failure as exc:
        out = {"error": {"kind": exc.kind, "message": str(exc)}}
    except Exception as exc:  # reported to the client as one line, never a traceback
        out = {"error": {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}}
    sys.stdout.write(json.dumps(dict(out, protocol=PROTOCOL)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
