"""predict.transfer: the target's memory-bound time does not depend on which host predicts it (issue 10)."""

from __future__ import annotations

import pytest

from edgeopt.runtime.perf import PerfModel
from edgeopt.runtime.predict import run_cost_us, split_cost_us, transfer, transfer_factor

BIG = {
    "op": "MatMul",
    "inputs": [[1, 1024], [1024, 1024]],
    "outputs": [[1, 1024]],
    "activation_bytes": 4096,
    "parameter_bytes": 4 * 2**20,
    "output_bytes": 4096,
}
TINY = {"op": "Add", "inputs": [[1, 16]], "outputs": [[1, 16]], "activation_bytes": 64, "output_bytes": 64}
RPI = PerfModel(gflops=12, mem_bandwidth_gbs=4, op_overhead_us=10, run_overhead_us=30)


def test_memory_bound_prediction_does_not_depend_on_the_host():
    host = PerfModel(gflops=250, mem_bandwidth_gbs=96, op_overhead_us=0.2, run_overhead_us=3)
    modelled = run_cost_us([BIG], host)
    # host A streams as its calibration says; host B (2 threads, aggregate L2) 1.6x faster than modelled
    a, b = transfer([BIG], host, RPI, modelled), transfer([BIG], host, RPI, modelled / 1.6)
    assert a["target_us"] == pytest.approx(b["target_us"], rel=0.03)  # only the 40 us of dispatch differ
    assert a["target_us"] == pytest.approx(run_cost_us([BIG], RPI), rel=0.01)
    # the plain ratio carried host B's memory speed into the target: 1.6x apart
    old_a, old_b = modelled * transfer_factor([BIG], host, RPI), modelled / 1.6 * transfer_factor([BIG], host, RPI)
    assert old_a / old_b == pytest.approx(1.6)


def test_dispatch_error_still_carries_over():
    host = PerfModel(gflops=250, mem_bandwidth_gbs=96, op_overhead_us=0.2, run_overhead_us=3)
    nodes = [TINY] * 20
    modelled = run_cost_us(nodes, host)
    t = transfer(nodes, host, RPI, 1.5 * modelled)  # the host's dispatch is 1.5x its model
    assert t["host_model_error"] == pytest.approx(1.5)
    assert t["target_us"] == pytest.approx(1.5 * run_cost_us(nodes, RPI), rel=0.01)  # element-wise bytes: ~0
    assert t["factor"] == pytest.approx(t["target_us"] / (1.5 * modelled))
    memory, rest = split_cost_us(nodes, RPI)
    assert memory < 1 and memory + rest == pytest.approx(run_cost_us(nodes, RPI))
