"""What the device side of remote measurement reports about its board: the CPU facts, the newest
ONNX opset and IR version its onnxruntime loads (probed), and the conditions that can spoil a
measurement (governor, temperatures, throttling, load), each with a warning sentence. Standard
library only; onnxruntime is passed in by the caller.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any


def host_facts() -> dict[str, Any]:
    from edgeopt.runtime.host import host_facts

    return dict(host_facts())


def _probe_model(ir_version: int, opset: int, domain: str = "") -> bytes:
    """A one-node model (Identity) at an IR version and standard-domain opset."""
    from edgeopt.runtime import onnx_proto as p

    g = p.GraphBuilder("probe")
    x = g.input("x", [1])
    g.op("Identity", x, out="y")
    g.output("y", [1])
    model = g.to_bytes(opset=opset)
    assert model.startswith(p._int(1, 8))  # the writer puts ir_version first
    return p._int(1, ir_version) + model[len(p._int(1, 8)) :]


def _loads(ort: Any, model: bytes) -> bool:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    try:
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def onnx_limits(ort: Any) -> dict[str, Any]:
    """Newest standard-domain opset and IR version this onnxruntime loads, found by loading
    one-node models (a few ms); the schema registry's newest ``since_version`` seeds the search."""
    seed = 13
    domains: dict[str, int] = {}
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        for s in state.get_all_operator_schema():
            d = "ai.onnx" if s.domain in ("", "ai.onnx") else s.domain
            domains[d] = max(domains.get(d, 0), int(s.since_version))
        seed = domains.get("ai.onnx", seed)
    except Exception:  # a build without the schema API: probe from opset 13 up
        pass
    opset = seed if _loads(ort, _probe_model(7, seed)) else 7
    while opset > 7 and not _loads(ort, _probe_model(7, opset)):
        opset -= 1
    while opset < 64 and _loads(ort, _probe_model(7, opset + 1)):
        opset += 1
    ir = 7
    while ir < 64 and _loads(ort, _probe_model(ir + 1, min(opset, 13))):
        ir += 1
    out = {"max_opset": {"ai.onnx": opset}, "max_ir_version": ir}
    if "ai.onnx.ml" in domains:
        out["max_opset"]["ai.onnx.ml"] = domains["ai.onnx.ml"]
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def throttled_flags(value: int) -> dict[str, Any]:
    """Decode ``vcgencmd get_throttled``: bits 0-3 now, 16-19 since boot."""
    names = ("under_voltage", "arm_freq_capped", "throttled", "soft_temp_limit")
    return {
        "raw": hex(value),
        **{n: bool(value >> i & 1) for i, n in enumerate(names)},
        **{f"{n}_since_boot": bool(value >> (16 + i) & 1) for i, n in enumerate(names)},
    }


def _vcgencmd() -> dict[str, Any] | None:
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        return throttled_flags(int(out.strip().split("=", 1)[1], 16))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def conditions() -> dict[str, Any]:
    """What the board is doing: CPU governors and frequencies, temperatures, throttling, load."""
    cpus = sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*"), key=lambda p: int(p.name[3:]))
    governors = sorted({g for g in (_read(str(c / "cpufreq/scaling_governor")) for c in cpus) if g})
    freqs = [_read(str(c / "cpufreq/scaling_cur_freq")) for c in cpus]
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        t = _read(str(zone / "temp"))
        if t and t.lstrip("-").isdigit():
            temps[_read(str(zone / "type")) or zone.name] = int(t) / 1000.0
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out: dict[str, Any] = {
        "governor": governors[0] if len(governors) == 1 else (governors or None),
        "cur_freq_mhz": [int(f) // 1000 for f in freqs if f and f.isdigit()] or None,
        "temperature_c": temps or None,
        "throttled": _vcgencmd(),
        "load_avg": load,
        "cpus": os.cpu_count() or 1,
        "when": time.time(),
    }
    out["warnings"] = condition_warnings(out)
    return out


def condition_warnings(c: dict[str, Any]) -> list[str]:
    """A sentence per condition that can spoil a measurement."""
    w = []
    thr = c.get("throttled") or {}
    now = [k for k in ("under_voltage", "arm_freq_capped", "throttled", "soft_temp_limit") if thr.get(k)]
    if now:
        w.append(
            f"the board is throttled now ({', '.join(now)}; vcgencmd get_throttled = {thr['raw']}): "
            f"latency is not representative"
        )
    hot = max((c.get("temperature_c") or {}).values(), default=None)
    if hot is not None and hot >= 80:
        w.append(f"the board is hot ({hot:.0f} C): it may throttle during the measurement")
    load, cpus = c.get("load_avg"), c.get("cpus") or 1
    if load and load[0] > 0.5 * cpus:
        w.append(
            f"the board is busy (load average {load[0]:.2f} over {cpus} CPUs): other work competes with the measurement"
        )
    if c.get("governor") == "powersave":
        w.append("CPU governor is powersave: the clock stays low (set performance for release runs)")
    return w


__all__ = ["host_facts", "onnx_limits", "throttled_flags", "conditions", "condition_warnings"]
