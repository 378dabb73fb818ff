"""Facts about the machine running edgeopt: architecture, CPU model, cores, memory, ISA extensions.

A leaf module (standard library; psutil when installed): profiles (``targets``) and calibration
(``calibrate``) both read it, neither through the other.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

MB = 1024 * 1024  # budgets in "MB" are MiB throughout edgeopt

_ARM_PARTS = {
    0xD03: "cortex-a53",
    0xD04: "cortex-a35",
    0xD05: "cortex-a55",
    0xD07: "cortex-a57",
    0xD08: "cortex-a72",
    0xD09: "cortex-a73",
    0xD0A: "cortex-a75",
    0xD0B: "cortex-a76",
    0xD0C: "neoverse-n1",
    0xD0D: "cortex-a77",
    0xD40: "neoverse-v1",
    0xD41: "cortex-a78",
    0xD42: "cortex-a78ae",
    0xD44: "cortex-x1",
    0xD46: "cortex-a510",
    0xD47: "cortex-a710",
    0xD49: "neoverse-n2",
    0xD4B: "cortex-a78c",
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
            with contextlib.suppress(ValueError):
                cpu = _ARM_PARTS.get(int(value, 16), f"arm-part-{value}")
    cpu = cpu or platform.processor() or arch
    isa = [
        f
        for f in (
            "sse4_2",
            "avx",
            "avx2",
            "fma",
            "avx512f",
            "avx512_vnni",
            "avx_vnni",
            "avx512_bf16",
            "amx_tile",
            "amx_int8",
            "neon",
            "asimd",
            "asimddp",
            "sve",
            "i8mm",
            "bf16",
        )
        if f in flags
    ]
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        memory_mb = int(psutil.virtual_memory().total // MB)
    except Exception:  # pragma: no cover - psutil is a dependency; be robust anyway
        cores, memory_mb = os.cpu_count() or 1, 0
    return {
        "arch": arch,
        "cpu": cpu,
        "cores": int(cores),
        "logical_cores": os.cpu_count() or 1,
        "memory_mb": memory_mb,
        "isa": isa,
    }


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def cpu_matches(want: str, have: str) -> bool:
    """True when CPU model ``want`` (a profile's ``cpu``) names the CPU ``have`` (this host's)."""
    want, have = _norm(want), _norm(have)
    return bool(want) and want in have


__all__ = ["host_facts", "cpu_matches", "MB"]
