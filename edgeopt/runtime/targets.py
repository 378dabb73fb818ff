"""Target profiles: what a device is, how onnxruntime runs there, and the budgets an artifact must meet.

Profiles are TOML files (schema in DESIGN.md) read with the stdlib's tomllib. Built-ins ship in
``edgeopt/runtime/profiles`` and are found by name; any path works too. Every problem is a
``TargetError`` whose message names the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from edgeopt.errors import TargetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("edgeopt.targets")

ARCHES = ("x86_64", "aarch64", "armv7l")
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
# Execution providers onnxruntime knows by name (whether or not this build has them).
KNOWN_PROVIDERS = (
    "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider",
    "OpenVINOExecutionProvider", "DnnlExecutionProvider", "XnnpackExecutionProvider",
    "ACLExecutionProvider", "ArmNNExecutionProvider", "CoreMLExecutionProvider",
    "NnapiExecutionProvider", "QNNExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "DmlExecutionProvider", "WebGpuExecutionProvider",
    "VitisAIExecutionProvider", "AzureExecutionProvider", "RknpuExecutionProvider",
    "CANNExecutionProvider", "SNPEExecutionProvider", "TvmExecutionProvider",
)
MB = 1024 * 1024  # budgets in "MB" are MiB throughout edgeopt


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Device:
    """What the hardware is, and its performance model (for latency prediction)."""

    arch: str
    cpu: str
    cores: int
    memory_mb: int
    isa: tuple[str, ...] = ()
    gflops: float | None = None  # sustained fp32 matmul GFLOP/s at the runtime's thread count
    mem_bandwidth_gbs: float | None = None  # matrix-vector streaming bandwidth, GB/s
    op_overhead_us: float | None = None  # per-node dispatch cost, microseconds
    run_overhead_us: float | None = None  # per-run fixed cost of session.run, microseconds
    dram_bandwidth_gbs: float | None = None  # bandwidth for working sets beyond half the cache
    cache_mb: float | None = None  # last-level cache, MiB
    matmul_overhead_us: float | None = None  # dispatch of a MatMul / Gemm / Conv node (else op_overhead_us)
    conv_gflops: float | None = None  # sustained fp32 convolution GFLOP/s (else gflops)
    int8_gops: float | None = None  # sustained int8 GEMM GOP/s (else gflops x the ISA's int8 speed-up)
    int8_conv_gops: float | None = None  # sustained int8 conv GOP/s (else derived, see predict.INT8_SPEEDUP)
    bandwidth_curve: tuple[tuple[float, float], ...] | None = None  # [working set MiB, GB/s] pairs
    calibrated: bool = False  # measured by `edgeopt calibrate` (True) or derived from specs (False)
    perf_source: str = ""  # where gflops / bandwidth / overhead come from
    detect: bool = False  # fields absent from the file are detected from the machine running edgeopt

    @property
    def has_perf_model(self) -> bool:
        return None not in (self.gflops, self.mem_bandwidth_gbs, self.op_overhead_us)


@dataclass(frozen=True)
class Runtime:
    """How onnxruntime runs on the device."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0  # 0: onnxruntime's default (one per physical core)
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    allow_spinning: bool = True
    batch_size: int = 1


@dataclass(frozen=True)
class Budget:
    """What a deployable artifact must meet; None where the profile sets no budget."""

    latency_ms: float | None = None
    latency_percentile: float = 95.0
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None
    min_f1: float | None = None


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
        if text in cls.builtin_names() and not (os.sep in text or text.endswith(".toml")):
            path = _profiles_dir() / f"{text}.toml"
            return _load_path(path, display=f"{text} (built-in, {path})")
        if path.is_file():
            return _load_path(path, display=str(path))
        if path.suffix == ".toml" or os.sep in text:
            raise TargetError(f"target file not found: {text}")
        raise TargetError(
            f"unknown target {text!r}: expected a built-in name ({', '.join(cls.builtin_names())}) or a path to a .toml file"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> Target:
        return _parse(data, source)

    # -- derived
    def with_budget(
        self,
        latency_ms: float | None = None,
        peak_memory_mb: float | None = None,
        model_size_mb: float | None = None,
        min_f1: float | None = None,
        latency_percentile: float | None = None,
    ) -> Target:
        """A copy with the given budget fields replaced (CLI overrides); None leaves a field as is."""
        changes: dict[str, Any] = {}
        for key, value in (("latency_ms", latency_ms), ("peak_memory_mb", peak_memory_mb),
                           ("model_size_mb", model_size_mb)):
            if value is not None:
                changes[key] = _positive(value, f"{key} override", "a number > 0")
        if min_f1 is not None:
            changes["min_f1"] = _check_f1(min_f1, "min_f1 override")
        if latency_percentile is not None:
            changes["latency_percentile"] = _check_percentile(latency_percentile, "latency_percentile override")
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, **changes))

    def is_host(self) -> bool:
        """True when the machine running edgeopt is this device (arch and CPU model match)."""
        if self.device.detect:
            return True
        host = host_facts()
        if self.device.arch != host["arch"]:
            return False
        want, have = _norm(self.device.cpu), _norm(host["cpu"])
        return bool(want) and want in have

    def host_threads(self) -> int:
        """Intra-op threads to use when measuring on this host: the target's, capped at the host's cores."""
        cores = os.cpu_count() or 1
        if self.runtime.intra_op_threads == 0:
            return 0
        if self.is_host():
            return self.runtime.intra_op_threads
        return min(self.runtime.intra_op_threads, cores)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("warnings")
        for section in ("device", "runtime"):
            for k, v in list(d[section].items()):
                if isinstance(v, tuple):
                    d[section][k] = list(v)
        return d

    def to_toml(self) -> str:
        """The profile as TOML (what `edgeopt targets show` prints)."""
        d = self.to_dict()
        lines = [f"name = {_toml_value(d['name'])}", f"description = {_toml_value(d['description'])}"]
        for section in ("device", "runtime", "budget"):
            lines.append(f"\n[{section}]")
            for k, v in d[section].items():
                if v is None or (k == "detect" and not v) or (k == "perf_source" and not v):
                    continue
                lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- host facts
_ARM_PARTS = {
    0xD03: "cortex-a53", 0xD04: "cortex-a35", 0xD05: "cortex-a55", 0xD07: "cortex-a57",
    0xD08: "cortex-a72", 0xD09: "cortex-a73", 0xD0A: "cortex-a75", 0xD0B: "cortex-a76",
    0xD0C: "neoverse-n1", 0xD0D: "cortex-a77", 0xD40: "neoverse-v1", 0xD41: "cortex-a78",
    0xD42: "cortex-a78ae", 0xD44: "cortex-x1", 0xD46: "cortex-a510", 0xD47: "cortex-a710",
    0xD49: "neoverse-n2", 0xD4B: "cortex-a78c",
}


@lru_cache(maxsize=1)
def host_facts() -> dict[str, Any]:
    """Architecture, CPU model, cores, memory and ISA extensions of the machine running edgeopt."""
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    cpu, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and not cpu:
            cpu = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "cpu part" and not cpu:
            try:
                cpu = _ARM_PARTS.get(int(value, 16), f"arm-part-{value}")
            except ValueError:
                pass
    cpu = cpu or platform.processor() or arch
    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                       "amx_tile", "amx_int8", "neon", "asimd", "asimddp", "sve", "i8mm", "bf16") if f in flags]
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        memory_mb = int(psutil.virtual_memory().total // MB)
    except Exception:  # pragma: no cover - psutil is a dependency; be robust anyway
        cores, memory_mb = os.cpu_count() or 1, 0
    return {"arch": arch, "cpu": cpu, "cores": int(cores), "logical_cores": os.cpu_count() or 1,
            "memory_mb": memory_mb, "isa": isa}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# --------------------------------------------------------------------------- parsing
def _profiles_dir() -> Path:
    return Path(str(resources.files("edgeopt.runtime") / "profiles"))


def _load_path(path: Path, *, display: str) -> Target:
    return _parse(_resolved_data(path, display, ()), display, source=str(path))


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


def _resolved_data(path: Path, display: str, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The file's tables with its ``extends`` chain merged in (parent first, the child's keys win)."""
    data = _read_toml(path, display)
    if "extends" not in data:
        return data
    parent_path, parent_display = _parent(data.pop("extends"), path, display)
    real = path.resolve()
    if parent_path.resolve() in (*chain, real):
        names = [p.name for p in (*chain, real, parent_path.resolve())]
        raise TargetError(f"{display}: extends: expected a profile that does not extend itself, found a cycle "
                          f"{' -> '.join(names)}")
    return _merge(_resolved_data(parent_path, parent_display, (*chain, real)), data)


def _parent(spec: Any, child: Path, display: str) -> tuple[Path, str]:
    """Where ``extends = spec`` points: a built-in name, or a path relative to the child file."""
    expected = (f"a built-in target name ({', '.join(Target.builtin_names())}) or a path to a .toml file "
                f"relative to {child.name}")
    if not isinstance(spec, str) or not spec.strip():
        raise TargetError(f"{display}: extends: expected {expected}, found {_shown(spec)}")
    if spec in Target.builtin_names() and not ("/" in spec or os.sep in spec or spec.endswith(".toml")):
        path = _profiles_dir() / f"{spec}.toml"
        return path, f"{spec} (built-in, {path})"
    path = (child.parent / spec)
    if not path.is_file():
        raise TargetError(f"{display}: extends: expected {expected}, found {_shown(spec)} (no such profile)")
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


def _shown(value: Any) -> str:
    return f"{_type_name(value)} {value!r}" if not isinstance(value, dict) else "a table"


_Check = Callable[[Any, str], Any]


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _parse(data: dict[str, Any], display: str, *, source: str | None = None) -> Target:
    def fail(key: str, expected: str, value: Any) -> TargetError:
        shown = f"{_type_name(value)} {value!r}" if not isinstance(value, dict) else "a table"
        return TargetError(f"{display}: {key}: expected {expected}, found {shown}")

    def get(table: dict[str, Any], section: str, key: str, kind: str, *, required: bool = False,
            default: Any = None, choices: tuple[str, ...] = (), minimum: float | None = None,
            exclusive: bool = True, maximum: float | None = None) -> Any:
        full = f"[{section}] {key}" if section else key
        if key not in table:
            if required:
                raise TargetError(f"{display}: {full}: required key is missing")
            return default
        value = orig = table[key]
        if kind == "str":
            if not isinstance(value, str) or (required and not value.strip()):
                raise fail(full, "a non-empty string" if required else "a string", value)
            if choices and value not in choices:
                raise fail(full, "one of " + ", ".join(choices), value)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise fail(full, "true or false", value)
            return value
        if kind == "strs":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(full, "an array of strings", value)
            return tuple(value)
        if kind == "pairs":
            ok = isinstance(value, list) and value and all(
                isinstance(v, list) and len(v) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in v)
                for v in value)
            if not ok:
                raise fail(full, "a non-empty array of [number > 0, number > 0] pairs", value)
            return tuple((float(a), float(b)) for a, b in value)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(full, "an integer", value)
        elif kind == "num":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail(full, "a number", value)
            value = float(value)
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise fail(full, f"{'an integer' if kind == 'int' else 'a number'} {'>' if exclusive else '>='} {minimum:g}", orig)
        if maximum is not None and value > maximum:
            raise fail(full, f"a number <= {maximum:g}", orig)
        return value

    def table(key: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise fail(key, "a table", value)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise TargetError(
                f"{display}: [{key}] {unknown[0]}: unknown key; expected one of {', '.join(sorted(allowed))}"
            )
        return value

    top_allowed = {"name", "description", "device", "runtime", "budget"}
    unknown = sorted(set(data) - top_allowed)
    if unknown:
        raise TargetError(f"{display}: {unknown[0]}: unknown key; expected one of {', '.join(sorted(top_allowed))}")
    device_fields = {f.name for f in dataclasses.fields(Device)}
    runtime_fields = {f.name for f in dataclasses.fields(Runtime)}
    budget_fields = {f.name for f in dataclasses.fields(Budget)}
    dev, rt, bud = table("device", device_fields), table("runtime", runtime_fields), table("budget", budget_fields)
    warnings: list[str] = []

    name = get(data, "", "name", "str", required=True)
    description = get(data, "", "description", "str", default="")
    detect = get(dev, "device", "detect", "bool", default=False)
    facts = host_facts() if detect else {}
    need = not detect
    device = Device(
        arch=get(dev, "device", "arch", "str", required=need, choices=ARCHES if need else (), default=facts.get("arch")),
        cpu=get(dev, "device", "cpu", "str", required=need, default=facts.get("cpu")),
        cores=get(dev, "device", "cores", "int", required=need, minimum=0, default=facts.get("cores")),
        memory_mb=get(dev, "device", "memory_mb", "int", required=need, minimum=0, default=facts.get("memory_mb")),
        isa=get(dev, "device", "isa", "strs", default=tuple(facts.get("isa", ()))),
        gflops=get(dev, "device", "gflops", "num", minimum=0),
        mem_bandwidth_gbs=get(dev, "device", "mem_bandwidth_gbs", "num", minimum=0),
        op_overhead_us=get(dev, "device", "op_overhead_us", "num", minimum=0),
        run_overhead_us=get(dev, "device", "run_overhead_us", "num", minimum=0, exclusive=False),
        dram_bandwidth_gbs=get(dev, "device", "dram_bandwidth_gbs", "num", minimum=0),
        cache_mb=get(dev, "device", "cache_mb", "num", minimum=0),
        matmul_overhead_us=get(dev, "device", "matmul_overhead_us", "num", minimum=0),
        conv_gflops=get(dev, "device", "conv_gflops", "num", minimum=0),
        int8_gops=get(dev, "device", "int8_gops", "num", minimum=0),
        int8_conv_gops=get(dev, "device", "int8_conv_gops", "num", minimum=0),
        bandwidth_curve=get(dev, "device", "bandwidth_curve", "pairs"),
        calibrated=get(dev, "device", "calibrated", "bool", default=False),
        perf_source=get(dev, "device", "perf_source", "str", default=""),
        detect=detect,
    )
    perf = [k for k in ("gflops", "mem_bandwidth_gbs", "op_overhead_us") if k in dev]
    if perf and len(perf) < 3:
        missing = sorted({"gflops", "mem_bandwidth_gbs", "op_overhead_us"} - set(perf))
        raise TargetError(f"{display}: [device] {missing[0]}: required when any of gflops, mem_bandwidth_gbs, "
                          f"op_overhead_us is set (all three describe the device for latency prediction)")

    providers = get(rt, "runtime", "providers", "strs", default=("CPUExecutionProvider",))
    if not providers:
        raise fail("[runtime] providers", "a non-empty array of execution provider names", [])
    for p in providers:
        if p not in KNOWN_PROVIDERS:
            close = difflib.get_close_matches(p, KNOWN_PROVIDERS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise TargetError(f"{display}: [runtime] providers: expected known execution provider names such as "
                              f"CPUExecutionProvider, found unknown provider {p!r}{hint}")
    runtime = Runtime(
        providers=providers,
        intra_op_threads=get(rt, "runtime", "intra_op_threads", "int", default=0, minimum=0, exclusive=False),
        inter_op_threads=get(rt, "runtime", "inter_op_threads", "int", default=1, minimum=0, exclusive=False),
        graph_optimization=get(rt, "runtime", "graph_optimization", "str", default="all", choices=GRAPH_OPTIMIZATIONS),
        allow_spinning=get(rt, "runtime", "allow_spinning", "bool", default=True),
        batch_size=get(rt, "runtime", "batch_size", "int", default=1, minimum=0),
    )
    if device.cores and runtime.intra_op_threads > device.cores:
        warnings.append(f"{display}: [runtime] intra_op_threads = {runtime.intra_op_threads} is more than "
                        f"[device] cores = {device.cores}: threads will contend for cores")

    budget = Budget(
        latency_ms=get(bud, "budget", "latency_ms", "num", minimum=0),
        latency_percentile=get(bud, "budget", "latency_percentile", "num", default=95.0, minimum=0, maximum=100),
        peak_memory_mb=get(bud, "budget", "peak_memory_mb", "num", minimum=0),
        model_size_mb=get(bud, "budget", "model_size_mb", "num", minimum=0),
        min_f1=get(bud, "budget", "min_f1", "num", minimum=0, maximum=1),
    )
    if device.detect and not device.has_perf_model:
        device = _with_host_calibration(device, runtime)
    target = Target(name, description, device, runtime, budget, source or display, tuple(warnings))
    for w in warnings:
        log.warning("warning: %s", w)
    return target


def _with_host_calibration(device: Device, runtime: Runtime) -> Device:
    """Fill a detected device's performance model from the calibration cache, if there is one."""
    from edgeopt.runtime.calibrate import cached_calibration

    cal = cached_calibration(runtime.intra_op_threads)
    if cal is None:
        return device
    return dataclasses.replace(device, gflops=cal["gflops"], mem_bandwidth_gbs=cal["mem_bandwidth_gbs"],
                               op_overhead_us=cal["op_overhead_us"], run_overhead_us=cal.get("run_overhead_us"),
                               dram_bandwidth_gbs=cal.get("dram_bandwidth_gbs"), cache_mb=cal.get("cache_mb"),
                               matmul_overhead_us=cal.get("matmul_overhead_us"), conv_gflops=cal.get("conv_gflops"),
                               int8_gops=cal.get("int8_gops"), int8_conv_gops=cal.get("int8_conv_gops"),
                               bandwidth_curve=tuple(map(tuple, cal["bandwidth_curve"])) if cal.get("bandwidth_curve") else None,
                               calibrated=True, perf_source=f"edgeopt calibrate on this host ({cal['when']})")


def _positive(value: Any, key: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise TargetError(f"{key}: expected {expected}, found {value!r}")
    return float(value)


def _check_f1(value: Any, key: str) -> float:
    value = _positive(value, key, "a number in (0, 1]")
    if value > 1:
        raise TargetError(f"{key}: expected a number in (0, 1], found {value!r}")
    return value


def _check_percentile(value: Any, key: str) -> float:
    value = _positive(value, key, "a number in (0, 100]")
    if value > 100:
        raise TargetError(f"{key}: expected a number in (0, 100], found {value!r}")
    return value


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = ["Target", "Device", "Runtime", "Budget", "host_facts", "KNOWN_PROVIDERS", "MB"]
