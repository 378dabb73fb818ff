"""The benchmark contract and the one result schema (``edgeopt.benchmark/1``).

A benchmark is a module with ``run(args) -> Outcome``; ``args`` holds its parameters (full or quick,
overridden with ``--set``) plus ``out`` (the results folder), ``work`` (a folder for artifacts),
``quick``, ``previous`` (the results of its last run in ``out``, or None) and ``save`` (write a
partial result while a long run goes on).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

SCHEMA = "edgeopt.benchmark/1"
ROOT = Path(__file__).resolve().parent.parent
HOST_1T = Path(__file__).resolve().parent / "host-1t.toml"  # this host, one onnxruntime thread
RESULTS = Path(__file__).resolve().parent / "results"  # the committed results, quoted by the docs


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark: the question it answers and the parameters of its full and quick runs."""

    name: str
    question: str
    module: str
    params: dict[str, Any] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)
    length: str = ""  # the full run's length where it was last timed, e.g. "~10 min"


@dataclass
class Outcome:
    """What a benchmark found: JSON-able results, a Markdown body (its tables), notes for the reader."""

    results: Any
    markdown: str
    notes: list[str] = field(default_factory=list)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict[str, Any]:
    """edgeopt's version and the commit (with whether the tree had uncommitted changes)."""
    from edgeopt._version import __version__

    return {"edgeopt": __version__, "commit": _git("rev-parse", "--short", "HEAD"), "dirty": bool(_git("status", "-s"))}


def host() -> dict[str, Any]:
    """CPU, cores, load average and the library versions that decide the timings."""
    import onnxruntime

    from edgeopt.runtime.host import host_facts

    facts = host_facts()
    return {
        "cpu": facts["cpu"],
        "cores": facts["cores"],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "node": platform.node(),
    }


def resolve(bench: Benchmark, *, quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parameters of one run: the full ones, the quick ones over them, then the overrides."""
    unknown = sorted(set(overrides) - set(bench.params))
    if unknown:
        raise ValueError(
            f"--set: {bench.name} has no parameter {', '.join(unknown)} (expected one of {', '.join(bench.params)})"
        )
    return {**bench.params, **(bench.quick if quick else {}), **overrides}


def run(bench: Benchmark, *, out: Path, work: Path, quick: bool, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run one benchmark and write ``OUT/NAME.json`` and ``OUT/NAME.md``; return the document."""
    params = resolve(bench, quick=quick, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    stem = bench.name
    previous = load(out, stem)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    doc = {
        "schema": SCHEMA,
        "name": bench.name,
        "question": bench.question,
        **provenance(),
        "host": host(),
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": None,
        "quick": quick,
        "command": " ".join(
            ["python -m benchmarks", bench.name, *(["--quick"] if quick else [])]
            + [f"--set {k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
        ),
        "parameters": params,
        "results": None,
        "notes": [],
    }

    def save(results: Any, markdown: str, notes: list[str] | None = None) -> None:
        doc.update(results=results, notes=list(notes or []), elapsed_s=round(time.perf_counter() - t0, 1))
        doc["host"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        write(out, stem, doc, markdown)

    args = SimpleNamespace(**params, out=out, work=work / stem, quick=quick, previous=previous, save=save)
    args.work.mkdir(parents=True, exist_ok=True)
    outcome: Outcome = importlib.import_module(bench.module).run(args)
    save(outcome.results, outcome.markdown, outcome.notes)
    return doc


def load(out: Path, stem: str) -> Any:
    """The results of the last run written to ``out`` (None when there is none); a result written before
    this schema is returned whole."""
    try:
        doc = json.loads((out / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    return doc.get("results") if isinstance(doc, dict) and doc.get("schema") == SCHEMA else doc


def header(doc: dict[str, Any]) -> str:
    """The Markdown table every result starts with: what was asked, on what, when, with which parameters."""
    h = doc["host"]
    load_end = h.get("load_average_end", ["?"])[0]
    params = ", ".join(f"{k}={v}" for k, v in doc["parameters"].items()) or "none"
    rows = [
        ("question", doc["question"]),
        ("edgeopt", f"{doc['edgeopt']} at {doc['commit'] or '?'}{' (uncommitted changes)' if doc['dirty'] else ''}"),
        ("host", f"{h['cpu']}, {h['cores']} cores, onnxruntime {h['onnxruntime']}, Python {h['python']}"),
        ("load average", f"{h['load_average'][0]:.2f} at the start, {load_end} at the end"),
        ("started", f"{doc['started']}, {doc['elapsed_s']} s"),
        ("parameters", f"{params}{' (quick)' if doc['quick'] else ''}"),
        ("command", f"`{doc['command']}`"),
    ]
    lines = [f"## {doc['name']}", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def write(out: Path, stem: str, doc: dict[str, Any], markdown: str) -> None:
    """The JSON document and its Markdown, each written whole (a reader never sees half a file)."""
    notes = "".join(f"- {n}\n" for n in doc["notes"])
    md = header(doc) + "\n" + markdown.rstrip() + "\n" + (f"\nNotes:\n\n{notes}" if notes else "")
    for suffix, text in ((".json", json.dumps(doc, indent=1, default=str) + "\n"), (".md", md)):
        tmp = out / f".{stem}{suffix}.tmp"
        tmp.write_text(text)
        tmp.replace(out / f"{stem}{suffix}")


BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])  # the benchmark's pid, given: it may be gone before this line runs
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def one_core_busy() -> Iterator[None]:
    """Keep one core busy (a Python busy loop in a subprocess) for the block: a loaded host on purpose.
    The loop ends by itself when its parent does (a killed benchmark must not leave a core busy behind)."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())])
    try:
        yield
    finally:
        busy.terminate()
        busy.wait()
