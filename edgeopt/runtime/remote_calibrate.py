"""``edgeopt calibrate --target PROFILE`` for a profile with a ``[remote]``: the calibration
micro-models run on the device (under its lease), and ``--write`` stores the measured performance
model in the profile's ``[device]`` table -- atomically, keeping every other line of the file
(comments, other tables, the device facts) as it was.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_path
from edgeopt.errors import InputError
from edgeopt.runtime.backends import backend_for
from edgeopt.runtime.calibrate import Calibration, snippet
from edgeopt.runtime.perf import KEYS as PERF_KEYS
from edgeopt.runtime.targets import Target

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
#: what calibration replaces in [device]: the performance model and its provenance
REPLACED = (*PERF_KEYS, "calibrated", "perf_source")


def calibrate_on_device(target: Target, threads: int, budget_s: float = 2.0) -> tuple[Calibration, dict[str, Any]]:
    """Run ``edgeopt calibrate`` on the target's device; (the calibration, the device's environment)."""
    if target.remote is None:  # pragma: no cover - the CLI checks first
        raise InputError(f"{target.name}: no [remote] to calibrate on; use --remote HOST")
    raw = backend_for(target).calibrate(threads, target.runtime.allow_spinning, budget_s)
    env = raw.pop("device")
    return Calibration.from_dict(raw), env


def device_lines(cal: Calibration, host: str) -> list[str]:
    """The ``[device]`` lines for a calibration made on ``host`` (the snippet, provenance naming the host)."""
    lines = snippet(cal).splitlines()
    source = f'perf_source = "edgeopt calibrate on {host} ({cal.cpu}, onnxruntime {cal.onnxruntime}), {cal.when}"'
    return [source if ln.startswith("perf_source") else ln for ln in lines]


def _value_end(lines: list[str], i: int) -> int:
    """Index after the value starting on line ``i`` (a multi-line array runs until its brackets close)."""
    depth, j = 0, i
    while j < len(lines):
        text = re.sub(
            r"\"(?:\\.|[^\"\\])*\"|'[^']*'",
            "",
            lines[j].split("#", 1)[0] if j > i or "=" not in lines[j] else lines[j].split("=", 1)[1].split("#", 1)[0],
        )
        depth += text.count("[") - text.count("]")
        j += 1
        if depth <= 0:
            return j
    return j


def merged_text(text: str, new_lines: list[str]) -> str:
    """``text`` with the performance-model keys of its ``[device]`` table replaced by ``new_lines``
    (a ``[device]`` table is added when there is none); everything else untouched."""
    lines = text.splitlines()
    start = next(
        (
            i
            for i, ln in enumerate(lines)
            if (m := _HEADER.match(ln)) and m.group(1) == "device" and not ln.lstrip().startswith("[[")
        ),
        None,
    )
    if start is None:
        return text.rstrip("\n") + "\n\n[device]\n" + "\n".join(new_lines) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    body, i = [], start + 1
    while i < end:
        m = _KEY.match(lines[i])
        if m and m.group(1) in REPLACED:
            i = _value_end(lines, i)
            continue
        if lines[i].startswith("# measured by `edgeopt calibrate`"):  # our own previous comment
            i += 1
            continue
        body.append(lines[i])
        i += 1
    while body and not body[-1].strip():
        body.pop()
    tail = [""] if end < len(lines) else []
    out = lines[: start + 1] + body + new_lines + tail + lines[end:]
    return "\n".join(out) + "\n"


def write_profile(path: str | Path, cal: Calibration, host: str) -> Path:
    """Store the calibration in the profile file at ``path`` atomically; the result must load."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new = merged_text(text, device_lines(cal, host))
    with atomic_path(path) as tmp:
        tmp.write_text(new, encoding="utf-8")
        Target.load(tmp)  # refuses (TargetError) before anything is replaced
    return path


def writable_profile(spec: str) -> Path:
    """The file ``--write`` will change; a built-in profile cannot be written."""
    if spec in Target.builtin_names() and not spec.endswith(".toml"):
        raise InputError(
            f"--write: {spec} is a built-in profile; make your own that extends it "
            f'(printf \'extends = "{spec}"\\nname = "my-{spec}"\\n\' > my-{spec}.toml) and write that'
        )
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--write: {spec}: no such profile file")
    return path


def report(cal: Calibration, env: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of a device calibration."""
    return {**cal.to_dict(), "device": env}


__all__ = ["calibrate_on_device", "device_lines", "merged_text", "write_profile", "writable_profile", "report"]
