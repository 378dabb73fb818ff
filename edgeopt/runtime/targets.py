"""Target profiles: what a device is, how onnxruntime runs there, and the budgets an artifact must meet.

Profiles are TOML files (schema in docs/architecture.md) read with the stdlib's tomllib. Built-ins
ship in ``edgeopt/runtime/profiles`` and are found by name; any path works too. A profile may
``extends = "NAME or path"`` another: the parent is loaded first (a built-in name, or a path
relative to the child file) and the child's tables and keys are merged over it.

Each field's type and bounds are declared once, on its dataclass (``_validate.spec``): ``Device``,
``Budget`` and ``RemoteSpec`` in ``profile_tables``, ``PerfModel`` in ``perf``, ``Runtime`` in
``session``; the file, overrides (``resolve_target``) and the CLI flags are checked against those
declarations. A top-level ``backend = "NAME"`` names the measurement backend
(``edgeopt.runtime.backends``). Every problem is a ``TargetError`` whose message names the file,
the key, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgeopt import _validate
from edgeopt._validate import Spec, read_table, specs
from edgeopt.errors import TargetError
from edgeopt.runtime.backends._base import backend_names
from edgeopt.runtime.calibrate import cached_calibration
from edgeopt.runtime.host import MB, cpu_matches, host_facts
from edgeopt.runtime.perf import PerfModel
from edgeopt.runtime.profile_tables import ARCHES, KNOWN_PROVIDERS, Budget, Device, RemoteSpec, read_perf, read_runtime
from edgeopt.runtime.session import GRAPH_OPTIMIZATIONS, Runtime

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("edgeopt.targets")

_PERF_KEYS = frozenset(specs(PerfModel))
_TOP = {"name": Spec("str", nonempty=True), "description": Spec("str"), "backend": Spec("str", nonempty=True)}


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Target:
    """A device profile. Load with ``Target.load("rpi4")`` or ``Target.load("path/to/file.toml")``."""

    name: str
    description: str
    device: Device
    runtime: Runtime = field(default_factory=Runtime)
    budget: Budget = field(default_factory=Budget)
    source: str = ""
    warnings: tuple[str, ...] = ()
    #: where the device is reached (``[remote]``): measured there, not predicted
    remote: RemoteSpec | None = None
    #: the measurement backend the profile names (``backend = "ssh"``); None: chosen by ``backend_for``
    backend: str | None = None

    # -- loading
    @staticmethod
    def builtin_names() -> list[str]:
        return sorted(p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".toml"))

    @classmethod
    def load(cls, spec: Target | str | os.PathLike[str]) -> Target:
        """A built-in name (``rpi4``), a path to a TOML file, or a Target (returned as is)."""
        if isinstance(spec, Target):
            return spec
        text = os.fspath(spec)
        path = Path(text)
        builtin = _builtin(text)
        if builtin is not None:
            return _load_path(*builtin)
        if path.is_file():
            return _load_path(path, str(path))
        if path.suffix == ".toml" or os.sep in text:
            raise TargetError(f"target file not found: {text}")
        raise TargetError(
            f"unknown target {text!r}: expected a built-in name ({', '.join(cls.builtin_names())}) "
            "or a path to a .toml file"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> Target:
        """From the tables of a profile; ``extends`` paths are relative to the working directory."""
        return _parse(_resolve(dict(data), Path.cwd() / source, source, ()), source)

    # -- derived
    def with_budget(
        self,
        latency_ms: float | None = None,
        peak_memory_mb: float | None = None,
        model_size_mb: float | None = None,
        min_f1: float | None = None,
        latency_percentile: float | None = None,
    ) -> Target:
        """A copy with the given budget fields replaced (CLI overrides); None leaves a field as is.
        Checked against ``Budget``'s declarations (``latency_ms override: expected a number > 0, ...``)."""
        given = {
            "latency_ms": latency_ms,
            "peak_memory_mb": peak_memory_mb,
            "model_size_mb": model_size_mb,
            "min_f1": min_f1,
            "latency_percentile": latency_percentile,
        }
        declared = specs(Budget)
        changes = {
            k: declared[k][0].check(v, "", f"{k} override", error=TargetError)
            for k, v in given.items()
            if v is not None
        }
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, **changes)) if changes else self

    def with_remote(self, host: str | None) -> Target:
        """A copy measured on the device at ``host`` (``--remote HOST``; over SSH unless the profile
        names another backend): sets ``[remote]`` host, keeping its other keys; None: unchanged."""
        if host is None:
            return self
        if self.remote is None:
            return dataclasses.replace(self, remote=RemoteSpec(host))
        return dataclasses.replace(self, remote=dataclasses.replace(self.remote, host=host))

    def as_host(self) -> Target:
        """A copy that is this machine (``--on-device``): measured here, never predicted, so a profile
        without a performance model works too."""
        return dataclasses.replace(self, device=dataclasses.replace(self.device, detect=True))

    def is_host(self) -> bool:
        """True when the machine running edgeopt is this device (arch and CPU model match)."""
        if self.device.detect:
            return True
        host = host_facts()
        return self.device.arch == host["arch"] and cpu_matches(self.device.cpu, host["cpu"])

    def host_threads(self) -> int:
        """Intra-op threads to use when measuring on this host: the target's, capped at the host's cores."""
        cores = os.cpu_count() or 1
        if self.runtime.intra_op_threads == 0:
            return 0
        if self.is_host():
            return self.runtime.intra_op_threads
        return min(self.runtime.intra_op_threads, cores)

    def to_dict(self) -> dict[str, Any]:
        runtime = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.runtime).items()}
        d = {
            "name": self.name,
            "description": self.description,
            "device": self.device.to_dict(),
            "runtime": runtime,
            "budget": dataclasses.asdict(self.budget),
            "source": self.source,
        }
        if self.remote is not None:
            d["remote"] = self.remote.to_dict()
        if self.backend is not None:
            d["backend"] = self.backend
        return d

    def to_toml(self) -> str:
        """The resolved profile as TOML (what `edgeopt targets show` prints; ``extends`` merged in)."""
        d = self.to_dict()
        lines = [f"name = {_toml_value(d['name'])}", f"description = {_toml_value(d['description'])}"]
        lines += [f"backend = {_toml_value(d['backend'])}"] if "backend" in d else []
        for section in ("device", "runtime", "budget", "remote"):
            if section not in d:
                continue
            lines.append(f"\n[{section}]")
            for k, v in d[section].items():
                if v is None or (k == "detect" and not v) or (k == "perf_source" and not v):
                    continue
                lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"


def resolve_target(
    target: Target | str | os.PathLike[str],
    *,
    remote: str | None = None,
    on_device: bool = False,
    latency_ms: float | None = None,
    peak_memory_mb: float | None = None,
    model_size_mb: float | None = None,
    min_f1: float | None = None,
    latency_percentile: float | None = None,
) -> Target:
    """The effective target of a command, resolved once where it starts (``bench``, ``gate``,
    ``compile``): the profile (a Target, a built-in name or a path), measured on ``remote``
    (``--remote HOST``) or on this machine (``on_device``), with the given budget fields replaced
    (None leaves one as it is). Every override is checked against its declaration (TargetError,
    one line). The Target returned is final: pass it on, do not apply the overrides again."""
    t = Target.load(target).with_remote(remote)
    t = t.as_host() if on_device else t
    return t.with_budget(
        latency_ms=latency_ms,
        peak_memory_mb=peak_memory_mb,
        model_size_mb=model_size_mb,
        min_f1=min_f1,
        latency_percentile=latency_percentile,
    )


# --------------------------------------------------------------------------- files and extends
def _profiles_dir() -> Path:
    return Path(str(resources.files("edgeopt.runtime") / "profiles"))


def _builtin(text: str) -> tuple[Path, str] | None:
    """(path, display) of a built-in profile named ``text``; None when it names no built-in."""
    if text in Target.builtin_names() and not ("/" in text or os.sep in text or text.endswith(".toml")):
        path = _profiles_dir() / f"{text}.toml"
        return path, f"{text} (built-in, {path})"
    return None


def _load_path(path: Path, display: str) -> Target:
    return _parse(_resolve(_read_toml(path, display), path, display, ()), display, source=str(path))


def _read_toml(path: Path, display: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TargetError(f"{display}: cannot read target file: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TargetError(f"{display}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{display}: invalid TOML: {exc}") from None


def _resolve(data: dict[str, Any], path: Path, display: str, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The file's tables with its ``extends`` chain merged in (parent first, the child's keys win)."""
    if "extends" not in data:
        return data
    data = dict(data)
    parent_path, parent_display = _parent(data.pop("extends"), path, display)
    here = path.resolve()
    seen = (*chain, here)
    if parent_path.resolve() in seen:
        names = " -> ".join(p.name for p in (*seen, parent_path.resolve()))
        raise TargetError(f"{display}: extends: expected a profile that does not extend itself, found a cycle {names}")
    parent = _resolve(_read_toml(parent_path, parent_display), parent_path, parent_display, seen)
    return _merge(parent, data)


def _parent(spec: Any, child: Path, display: str) -> tuple[Path, str]:
    """Where ``extends = spec`` points: a built-in name, or a path relative to the child file."""
    expected = (
        f"a built-in target name ({', '.join(Target.builtin_names())}) or a path to a .toml file "
        f"relative to {child.name}"
    )
    if not isinstance(spec, str) or not spec.strip():
        raise _validate.fail(display, "extends", expected, spec, error=TargetError)
    builtin = _builtin(spec)
    if builtin is not None:
        return builtin
    path = child.parent / spec
    if not path.is_file():
        raise _validate.fail(display, "extends", f"{expected} (no such file: {path})", spec, error=TargetError)
    return path, str(path)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged onto ``base``: tables merge key by key, every other value replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- parsing
def _parse(data: dict[str, Any], display: str, *, source: str | None = None) -> Target:
    """Check a resolved profile against the declarations and build the Target."""
    tables = {"device", "runtime", "budget", "remote"}
    unknown = sorted(set(data) - {*_TOP, *tables})
    if unknown:
        raise _validate.unknown_key(display, unknown[0], {*_TOP, *tables}, error=TargetError)
    top = {k: sp.check(data[k], display, k, error=TargetError) for k, sp in _TOP.items() if k in data}
    if "name" not in top:
        raise _validate.missing(display, "name", error=TargetError)
    if "backend" in top:
        _validate.choice(top["backend"], display, "backend", backend_names(), error=TargetError)
    device = _parse_device(_section(data, "device", {*specs(Device), *_PERF_KEYS}, display), display)
    runtime = read_runtime(_section(data, "runtime", set(specs(Runtime)), display), display)
    budget = Budget(
        **read_table(
            Budget, _section(data, "budget", set(specs(Budget)), display), display, "budget", error=TargetError
        )
    )
    warnings = []
    if device.cores and runtime.intra_op_threads > device.cores:
        warnings.append(
            f"{display}: [runtime] intra_op_threads = {runtime.intra_op_threads} is more than "
            f"[device] cores = {device.cores}: threads will contend for cores"
        )
    if device.detect and not device.has_perf_model:
        device = _with_host_calibration(device, runtime)
    remote = (
        RemoteSpec.from_table(_section(data, "remote", set(specs(RemoteSpec)), display), display)
        if "remote" in data
        else None
    )
    for w in warnings:
        log.warning("warning: %s", w)
    return Target(
        top["name"],
        top.get("description", ""),
        device,
        runtime,
        budget,
        source or display,
        tuple(warnings),
        remote,
        top.get("backend"),
    )


def _section(data: dict[str, Any], key: str, allowed: set[str], display: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _validate.fail(display, key, "a table", value, error=TargetError)
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _validate.unknown_key(display, f"[{key}] {unknown[0]}", allowed, error=TargetError)
    return value


def _parse_device(table: dict[str, Any], display: str) -> Device:
    """``[device]``: the facts (detected where ``detect = true`` and absent) and the performance model."""
    detect = _validate.boolean(table.get("detect", False), display, "[device] detect", error=TargetError)
    facts = host_facts() if detect else {}
    detected = {
        k: (tuple(facts[k]) if k == "isa" else facts[k]) for k in ("arch", "cpu", "cores", "memory_mb", "isa") if detect
    }
    values = read_table(Device, table, display, "device", defaults=detected, error=TargetError)
    return Device(**values, perf=read_perf(table, display, values["isa"]))


def _with_host_calibration(device: Device, runtime: Runtime) -> Device:
    """Fill a detected device's performance model from the calibration cache, if there is one."""
    cal = cached_calibration(runtime.intra_op_threads)
    if cal is None:
        return device
    return dataclasses.replace(
        device, perf=dataclasses.replace(cal.perf, isa=device.isa), calibrated=True, perf_source=cal.source
    )


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = [
    "Target",
    "resolve_target",
    "RemoteSpec",
    "Device",
    "Runtime",
    "Budget",
    "PerfModel",
    "host_facts",
    "KNOWN_PROVIDERS",
    "MB",
    "ARCHES",
    "GRAPH_OPTIMIZATIONS",
]
