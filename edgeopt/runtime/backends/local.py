"""``local``: each measurement in a fresh ``python -m edgeopt.runtime._worker`` process on this
machine, which is the target (detected, or ``--on-device``)."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt.errors import ModelError
from edgeopt.runtime.backends._base import MeasurementBackend, checked
from edgeopt.runtime.host import host_facts

log = logging.getLogger("edgeopt.bench")


def run_worker(job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """One job in a fresh ``python -m edgeopt.runtime._worker`` process here; its checked result."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeopt.runtime._worker"],
            input=json.dumps(dict(job)),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(f"{job['model']}: the measurement did not finish within {timeout_s:.0f} s") from None
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{job['model']}: the measurement process died (exit {proc.returncode}): {tail}") from None
    if proc.stderr.strip():
        log.debug("worker stderr: %s", proc.stderr.strip())
    return checked(job, out)


def _governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


class LocalBackend(MeasurementBackend):
    """A fresh child process here per job, with the target's session options."""

    name = "local"
    pairs_in_process = True

    def measure(self, job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
        return run_worker(job, timeout_s=timeout_s)

    def describe(self) -> str:
        facts = host_facts()
        return f"this host ({facts['cpu']}, {facts['arch']})"

    def environment(self, out: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        facts = host_facts()
        here = {
            "cpu": facts["cpu"],
            "arch": facts["arch"],
            "cores": facts["cores"],
            "logical_cores": facts["logical_cores"],
            "memory_mb": facts["memory_mb"],
            "isa": facts["isa"],
            "governor": _governor(),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "os": platform.platform(),
            "python": platform.python_version(),
        }
        return {**super().environment(out, info), **here}


__all__ = ["LocalBackend", "run_worker"]
