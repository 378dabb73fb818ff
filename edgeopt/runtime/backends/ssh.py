"""``ssh``: each measurement on the device the profile's ``[remote]`` names, through the OpenSSH
transport (``edgeopt.runtime.remote``): handshake, the model's opsets checked against the device's
onnxruntime, upload by content hash, then one ``_worker`` job there under the device's lease."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ModelError, TargetError
from edgeopt.runtime.backends._base import MeasurementBackend, checked
from edgeopt.runtime.onnx_proto import ProtoError, summarize
from edgeopt.runtime.profile_tables import RemoteSpec
from edgeopt.runtime.remote import Device

if TYPE_CHECKING:
    from edgeopt.runtime.targets import Target

_DEVICES: dict[tuple, Device] = {}
_LOCK = threading.Lock()


def device_for(spec: RemoteSpec | Mapping[str, Any]) -> Device:
    """One Device per spec in this process (its handshake and uploads are remembered)."""
    spec = spec if isinstance(spec, RemoteSpec) else RemoteSpec.from_dict(spec)
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec.to_dict().items()))
    with _LOCK:
        if key not in _DEVICES:
            _DEVICES[key] = Device(spec)
        return _DEVICES[key]


def run_job(spec: RemoteSpec | Mapping[str, Any], job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """One job on the device at ``spec``: the handshake, the model's opsets checked against the
    device, the upload, then the measurement there; the worker's checked result with ``device``."""
    device = device_for(spec)
    data = Path(job["model"]).read_bytes()
    try:
        s = summarize(data)
    except ProtoError as exc:
        raise ModelError(f"{job['model']}: not a valid ONNX model: {exc}") from None
    device.check_model({"ir_version": s.ir_version, "opsets": s.opsets}, str(job["model"]))
    return checked(job, device.measure(job, timeout_s))


class SshBackend(MeasurementBackend):
    """The device itself over SSH; one model per job (the upload), so no in-process pairs."""

    name = "ssh"

    def __init__(self, target: Target):
        if target.remote is None:
            raise TargetError(f"{target.source}: [remote] host: expected the device's address for backend 'ssh'")
        super().__init__(target)
        self.spec: RemoteSpec = target.remote

    def measure(self, job: Mapping[str, Any], *, timeout_s: float) -> dict[str, Any]:
        return run_job(self.spec, job, timeout_s=timeout_s)

    def calibrate(self, threads: int, allow_spinning: bool, budget_s: float) -> dict[str, Any]:
        return device_for(self.spec).calibrate(threads, allow_spinning, budget_s)

    def describe(self) -> str:
        return f"{self.spec.host} over ssh"

    def environment(self, out: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
        """The base environment with the device's facts, onnxruntime and conditions."""
        dev = out.get("device") or {}
        facts, before = dev.get("facts") or {}, (dev.get("conditions") or {}).get("before") or {}
        base = super().environment(out, info)
        return {
            **base,
            "measured_on": f"{dev.get('host', self.spec.host)} over ssh ({facts.get('cpu')}, {facts.get('arch')})",
            "remote_host": dev.get("host", self.spec.host),
            "cpu": facts.get("cpu"),
            "arch": facts.get("arch"),
            "cores": facts.get("cores"),
            "logical_cores": facts.get("logical_cores"),
            "memory_mb": facts.get("memory_mb"),
            "isa": facts.get("isa"),
            "governor": before.get("governor"),
            "load_avg": before.get("load_avg"),
            "temperature_c": before.get("temperature_c"),
            "throttled": before.get("throttled"),
            "os": dev.get("os"),
            "python": dev.get("python"),
            "edgeopt_on_device": dev.get("edgeopt"),
            "onnxruntime": out.get("onnxruntime") or dev.get("onnxruntime"),
            "conditions": dev.get("conditions"),
            "lease": dev.get("lease"),
        }


__all__ = ["SshBackend", "device_for", "run_job"]
