"""The tables of a target profile as frozen values: ``[device]`` (:class:`Device`, its performance
model read by :func:`read_perf`), ``[runtime]`` (:func:`read_runtime`), ``[budget]`` (:class:`Budget`)
and ``[remote]`` (:class:`RemoteSpec`, where the device is reached). Each field's type and bounds
are declared once, on its dataclass; ``targets`` reads the files against those declarations.
Standard library, ``edgeopt._validate``, ``perf`` and ``session`` only: no transport, no files.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt import _validate
from edgeopt._validate import check_fields, read_table, spec, specs
from edgeopt.errors import InputError, TargetError
from edgeopt.runtime.perf import KEYS as _PERF_KEYS_ORDERED
from edgeopt.runtime.perf import REQUIRED_KEYS, PerfModel
from edgeopt.runtime.session import Runtime

ARCHES = ("x86_64", "aarch64", "armv7l")
# Execution providers onnxruntime knows by name (whether or not this build has them).
KNOWN_PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "OpenVINOExecutionProvider",
    "DnnlExecutionProvider",
    "XnnpackExecutionProvider",
    "ACLExecutionProvider",
    "ArmNNExecutionProvider",
    "CoreMLExecutionProvider",
    "NnapiExecutionProvider",
    "QNNExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "WebGpuExecutionProvider",
    "VitisAIExecutionProvider",
    "AzureExecutionProvider",
    "RknpuExecutionProvider",
    "CANNExecutionProvider",
    "SNPEExecutionProvider",
    "TvmExecutionProvider",
)
_PERF_KEYS = frozenset(specs(PerfModel))


@dataclass(frozen=True)
class Device:
    """What the hardware is, and its performance model (``perf``, for latency prediction; None
    when the profile has none). In the file the performance model's keys sit flat in ``[device]``."""

    arch: str = spec("str", choices=ARCHES)
    cpu: str = spec("str", nonempty=True)
    cores: int = spec("int", minimum=0, min_exclusive=True)
    memory_mb: int = spec("int", minimum=0, min_exclusive=True)
    isa: tuple[str, ...] = spec("strs", default=())
    perf: PerfModel | None = None
    #: measured by `edgeopt calibrate` (True) or derived from specs (False)
    calibrated: bool = spec("bool", default=False)
    perf_source: str = spec("str", default="", doc="where gflops / bandwidth / overhead come from")
    #: fields absent from the file are detected from the machine running edgeopt
    detect: bool = spec("bool", default=False)

    @property
    def has_perf_model(self) -> bool:
        return self.perf is not None

    def __getattr__(self, name: str) -> Any:
        """``device.gflops`` and the other performance-model keys read through ``perf`` (None without one)."""
        if name in _PERF_KEYS:
            perf = self.__dict__.get("perf")
            return getattr(perf, name) if perf is not None else None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The flat ``[device]`` table: facts, the performance model's keys (None without one), provenance."""
        perf = self.perf.to_dict() if self.perf is not None else dict.fromkeys(_PERF_KEYS_ORDERED)
        return {
            "arch": self.arch,
            "cpu": self.cpu,
            "cores": self.cores,
            "memory_mb": self.memory_mb,
            "isa": list(self.isa),
            **perf,
            "calibrated": self.calibrated,
            "perf_source": self.perf_source,
            "detect": self.detect,
        }


@dataclass(frozen=True)
class Budget:
    """What a deployable artifact must meet; None where the profile sets no budget. Sizes in MiB."""

    latency_ms: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    latency_percentile: float = spec("num", default=95.0, minimum=0, maximum=100, min_exclusive=True)
    peak_memory_mb: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    model_size_mb: float | None = spec("num", default=None, minimum=0, min_exclusive=True, optional=True)
    min_f1: float | None = spec("num", default=None, minimum=0, maximum=1, min_exclusive=True, optional=True)


# --------------------------------------------------------------------------- reading tables
def read_perf(table: dict[str, Any], display: str, isa: tuple[str, ...]) -> PerfModel | None:
    """The performance model in ``[device]``: none, or all of gflops, mem_bandwidth_gbs, op_overhead_us."""
    present = [k for k in REQUIRED_KEYS if k in table]
    if not present:
        return None
    if len(present) < len(REQUIRED_KEYS):
        missing = sorted(set(REQUIRED_KEYS) - set(present))
        raise TargetError(
            f"{display}: [device] {missing[0]}: required when any of {', '.join(REQUIRED_KEYS)} "
            f"is set (all three describe the device for latency prediction)"
        )
    return PerfModel(**read_table(PerfModel, table, display, "device", error=TargetError), isa=isa)


def read_runtime(table: dict[str, Any], display: str) -> Runtime:
    values = read_table(Runtime, table, display, "runtime", error=TargetError)
    providers = values["providers"]
    if not providers:
        raise _validate.fail(
            display, "[runtime] providers", "a non-empty array of execution provider names", [], error=TargetError
        )
    for p in providers:
        if p not in KNOWN_PROVIDERS:
            close = difflib.get_close_matches(p, KNOWN_PROVIDERS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TargetError(
                f"{display}: [runtime] providers: expected known execution provider names such as "
                f"CPUExecutionProvider, found unknown provider {p!r}{hint}"
            )
    return Runtime(**values)


@dataclass(frozen=True)
class RemoteSpec:
    """Where and how to reach the device: a profile's ``[remote]`` table, or ``--remote HOST``. The
    backend that measures there (``ssh`` unless the profile names another) reads it."""

    host: str = spec("str", nonempty=True, doc="anything ssh accepts: pi@10.0.0.7, a Host alias from ~/.ssh/config")
    python: str = spec("str", default="python3", nonempty=True, doc="the device's interpreter with edgeopt installed")
    ssh_options: tuple[str, ...] = spec("strs", default=(), doc='extra ssh arguments, e.g. ["-p", "2222"]')
    workdir: str | None = spec(
        "str",
        default=None,
        optional=True,
        nonempty=True,
        doc="work directory on the device (default: <edgeopt cache dir there>/remote)",
    )
    connect_timeout_s: float = spec("num", default=10.0, minimum=0, min_exclusive=True, doc="ssh ConnectTimeout")
    timeout_s: float | None = spec(
        "num",
        default=None,
        minimum=0,
        min_exclusive=True,
        optional=True,
        doc="per measurement on the device (default: bench's own estimate)",
    )
    lease_timeout_s: float = spec(
        "num", default=600.0, minimum=0, doc="how long to wait while another client holds the device"
    )

    def __post_init__(self) -> None:
        for name, value in check_fields(self, "[remote]").items():
            object.__setattr__(self, name, tuple(value) if name == "ssh_options" else value)
        check_host(self.host, "[remote] host")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ssh_options"] = list(self.ssh_options)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RemoteSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in known and v is not None}
        if "ssh_options" in kw:
            kw["ssh_options"] = tuple(kw["ssh_options"])
        return cls(**kw)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> RemoteSpec:
        """From a profile's ``[remote]`` table; TargetError naming the file and key."""
        values = read_table(cls, table, where, "remote", error=TargetError)
        try:
            return cls(**values)
        except InputError as exc:
            raise TargetError(f"{where}: {exc}") from None


def check_host(host: Any, key: str = "--remote") -> str:
    """A destination ssh will take as a host, never as an option or two words."""
    if not isinstance(host, str) or not host.strip():  # pragma: no cover - the declaration checks it first
        raise InputError(f"{key}: expected a host (user@address or a Host alias from ~/.ssh/config), found {host!r}")
    if host.startswith("-") or any(c.isspace() or ord(c) < 32 for c in host):
        raise InputError(
            f"{key}: expected a host (user@address or a Host alias), found {host!r} (no leading '-', no spaces)"
        )
    return host


__all__ = ["ARCHES", "KNOWN_PROVIDERS", "Device", "Budget", "RemoteSpec", "check_host", "read_perf", "read_runtime"]
