"""``bench_many``: many small models timed side by side in one process, a block of each per round (what
the per-layer tables are measured with); real onnxruntime sessions on real files, torch-free."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeopt.runtime.onnx_proto import GraphBuilder
from edgeopt.runtime.targets import Target
from testkit.graphs import save


def chain(layers: int, width: int = 96) -> GraphBuilder:
    """``layers`` x (MatMul + Relu): the cost grows with ``layers``."""
    rng = np.random.default_rng(0)
    g = GraphBuilder("chain")
    h = g.input("x", [8, width])
    for k in range(layers):
        last = k == layers - 1
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        h = g.op("Relu", g.op("MatMul", h, g.const(w)), out="y" if last else None)
    g.output("y", [8, width])
    return g


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    return [save(chain(n), d / f"chain{n}.onnx") for n in (1, 4, 16)]


@pytest.fixture(scope="module")
def host1():
    t = Target.load("host")
    return dataclasses.replace(t, runtime=t.runtime.with_threads(1))


BLOCK = {"min_iters": 10, "min_time_s": 0.005, "max_iters": 200, "warmup": 2}


def test_every_model_gets_a_block_per_round_in_one_process(paths, host1, monkeypatch):
    from edgeopt.runtime import bench as bench_mod
    from testkit.jobs import record_local_jobs

    jobs = record_local_jobs(monkeypatch)
    out = bench_mod.bench_many(paths, host1, rounds=3, **BLOCK)
    assert len(jobs) == 1 and len(jobs[0]["many"]["others"]) == 2  # one process for the three
    assert [len(rs) for rs in out] == [3, 3, 3] and all(len(r) >= 10 for rs in out for r in rs)
    medians = [np.median([np.median(r) for r in rs]) for rs in out]
    assert medians[0] < medians[1] < medians[2], medians  # 1, 4 and 16 layers, in the files' order

    monkeypatch.setattr(bench_mod, "MANY_CHUNK", 2)  # more models than a process holds: in chunks, in order
    jobs.clear()
    again = bench_mod.bench_many(paths, host1, rounds=2, **BLOCK)
    assert len(jobs) == 2 and [len(rs) for rs in again] == [2, 2, 2]
    assert np.median(again[2][0]) > np.median(again[0][0])


def test_the_rounds_alternate_the_order_and_never_overlap(paths, host1):
    from edgeopt.runtime import bench as bench_mod
    from edgeopt.runtime.settings import BenchSettings

    job = bench_mod.measurement_job(
        paths[0].resolve(), host1, BenchSettings(**BLOCK), threads=1, shapes={}, profile=False
    )
    others = [str(p.resolve()) for p in paths[1:]]
    out = bench_mod.run_child(dict(job, many={"others": others, "rounds": 4}), timeout_s=120)
    seq = out["sequence"]
    assert [i for i, _, _ in seq] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0]
    assert all(a[2] <= b[1] for a, b in zip(seq, seq[1:])) and all(t0 < t1 for _, t0, t1 in seq)


def test_a_predicted_target_measures_each_model_alone(paths):
    from edgeopt.runtime.bench import bench_many

    out = bench_many(paths[:2], Target.load("rpi4-demo"), rounds=3, **BLOCK)
    assert [len(rs) for rs in out] == [1, 1]  # one bench each, scaled to the device by its prediction
    assert all(len(rs[0]) >= 3 * BLOCK["min_iters"] for rs in out)
