"""What measuring through SSH costs, on a loopback "device".

A real sshd on 127.0.0.1 and a device venv holding only the runtime half (``testkit.sshd``);
the same measurement jobs run locally (``run_child``) and on the device (``run_child`` with a
``remote``), interleaved.

1. Added cost per measurement with multiplexing: wall time of a short measurement (20 runs,
   0.05 s) on the device minus the same measurement here, the connection open and the model
   already uploaded (as in a search); and the first measurement (connect + handshake + upload).
   Goal: <= 1 s added.
2. Agreement: the p50 the device reports vs the local p50, same model and settings (1 thread,
   2 s per measurement), median of 3 interleaved rounds. Goal: within 10%.

    flock /tmp/edgeopt-bench.lock .venv/bin/python -m benchmarks ssh_measurement_overhead
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.suite import Outcome
from edgeopt.runtime import remote
from edgeopt.runtime.bench import run_child
from edgeopt.runtime.host import host_facts
from testkit import graphs
from testkit import sshd as _sshd

BASE = {
    "providers": ["CPUExecutionProvider"],
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "graph_optimization": "all",
    "allow_spinning": True,
    "batch": 1,
    "shapes": {},
    "warmup": 10,
    "max_iters": 1_000_000,
    "profile": False,
    "seed": 0,
}
SHORT = dict(BASE, min_iters=20, min_time_s=0.05, warmup=3)
MODELS = {
    "mlp 64-128-10 (small)": lambda: graphs.mlp((64, 128, 10)),
    "dense digits-mlp 64-1024-1024-10": lambda: graphs.mlp((64, 1024, 1024, 10)),
    "cnn 28x28": lambda: graphs.cnn(),
}


def timed(job: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = run_child(job, timeout_s=300)
    return time.perf_counter() - t0, out


def overhead(path: Path, spec: remote.RemoteSpec, n: int) -> dict:
    first_s, _ = timed(dict(SHORT, model=str(path), remote=spec.to_dict()))
    local, remote_s = [], []
    for _ in range(n):
        local.append(timed(dict(SHORT, model=str(path)))[0])
        remote_s.append(timed(dict(SHORT, model=str(path), remote=spec.to_dict()))[0])
    return {
        "first_remote_s": first_s,
        "local_s": statistics.median(local),
        "remote_s": statistics.median(remote_s),
        "added_s": statistics.median(r - m for r, m in zip(remote_s, local)),
        "n": n,
    }


def agreement(path: Path, spec: remote.RemoteSpec, rounds: int, min_time: float) -> dict:
    job = dict(BASE, model=str(path), min_iters=200, min_time_s=min_time)
    local, dev = [], []
    for _ in range(rounds):
        local.append(float(np.median(run_child(job, timeout_s=300)["samples_ns"])) / 1e3)
        dev.append(float(np.median(run_child(dict(job, remote=spec.to_dict()), timeout_s=300)["samples_ns"])) / 1e3)
    lp, dp = statistics.median(local), statistics.median(dev)
    return {"local_p50_us": lp, "remote_p50_us": dp, "ratio": dp / lp, "local_rounds": local, "remote_rounds": dev}


def markdown(doc: dict) -> str:
    o = doc["overhead"]
    lines = [
        f"# Measuring through SSH on a loopback device ({doc['machine']})",
        "",
        "A real sshd on 127.0.0.1, a device venv with only the runtime half; OpenSSH multiplexing "
        "(ControlMaster/ControlPersist).",
        "",
        "## Added cost per measurement (20 runs, 0.05 s; model already uploaded)",
        "",
        "| | wall time (s) |",
        "|---|---:|",
        f"| local measurement (median of {o['n']}) | {o['local_s']:.3f} |",
        f"| on the device over ssh (median of {o['n']}) | {o['remote_s']:.3f} |",
        f"| **added per measurement** (median of paired differences) | **{o['added_s']:.3f}** |",
        f"| first measurement on the device (connect, handshake, upload) | {o['first_remote_s']:.3f} |",
        "",
        f"Goal ≤ 1 s added: {'met' if o['added_s'] <= 1 else 'MISSED'}.",
        "",
        f"## p50 on the device vs here (1 thread, {doc['min_time_s']:g} s per measurement, median of "
        f"{doc['rounds']} interleaved rounds)",
        "",
        "| model | local p50 (µs) | device p50 (µs) | device / local |",
        "|---|---:|---:|---:|",
    ]
    for name, a in doc["agreement"].items():
        lines.append(f"| {name} | {a['local_p50_us']:.2f} | {a['remote_p50_us']:.2f} | {a['ratio']:.3f} |")
    worst = max(abs(a["ratio"] - 1) for a in doc["agreement"].values())
    lines += [
        "",
        f"Goal within 10%: {'met' if worst <= 0.10 else 'MISSED'} (worst {worst:.1%}).",
        "",
    ]
    return "\n".join(lines)


def run(args: SimpleNamespace) -> Outcome:
    """``n`` paired short measurements for the overhead; ``rounds`` interleaved rounds for the agreement."""
    missing = _sshd.have_openssh()
    if missing:
        raise RuntimeError(f"OpenSSH missing ({missing}): apt-get install -y openssh-server openssh-client")
    with tempfile.TemporaryDirectory(prefix="eo-ro-") as tmp:
        os.environ["EDGEOPT_SSH_CONTROL_DIR"] = str(Path(tmp) / "cm")
        server = _sshd.start_sshd(Path(tmp) / "sshd")
        try:
            spec = remote.RemoteSpec(
                _sshd.ALIAS,
                python=str(_sshd.device_venv()),
                ssh_options=server.ssh_options,
                workdir=str(Path(tmp) / "work"),
            )
            paths = {n: b().save(Path(tmp) / f"m{i}.onnx") for i, (n, b) in enumerate(MODELS.items())}
            over = overhead(paths["mlp 64-128-10 (small)"], spec, args.n)
            agree = {n: agreement(p, spec, args.rounds, args.min_time) for n, p in paths.items()}
        finally:
            server.stop()
    f = host_facts()
    doc = {
        "machine": f"{f['cpu']}, {f['cores']} cores",
        "overhead": over,
        "agreement": agree,
        "min_time_s": args.min_time,
        "rounds": args.rounds,
    }
    return Outcome(doc, markdown(doc))
