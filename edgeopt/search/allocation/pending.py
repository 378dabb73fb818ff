"""The tables' graphs timed side by side (decision 0107): every rung, the empty graphs it is measured less
and the int8 boundaries, queued as the ladder is walked and measured together at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLE_ROUNDS = 5  # rounds of the tables' side-by-side measurement; a rung's latency is their median
TABLE_BLOCK = {"min_iters": 10, "min_time_s": 0.01, "max_iters": 200, "warmup": 3}  # a rung's block, each round


class Pending:
    """The tables' graphs, exported as they are queued (:meth:`add`) and timed together at the end
    (:meth:`measure`, :func:`~edgeopt.runtime.bench.bench_many`: on this host, in one process, a block of
    each per round); a graph's latency is the median over the rounds of each block's median.

    Each rung used to be one short bench of its own, its percentile taken at the budget's (p95), one after
    another. With one core of two busy, MobileNetV3's rungs then read from 2.5x (the median rung) to 10x
    (one in ten) apart between five compiles: a window of other work fell on the few rungs measured in it,
    and the knapsack allocated the noise. The median over interleaved rounds is each rung's own cost on
    this host; the whole graphs of the additivity fit bring the table to the budget's percentile."""

    def __init__(self, target: Any, tmp: Path) -> None:
        self.target, self.tmp = target, tmp
        self.paths: list[Path] = []
        self.ms: list[float] = []

    def add(self, module: Any, shape: tuple[int, ...], *, int8: Any = None) -> int:
        """Queue ``module`` exported at ``shape`` (its ``layer`` quantized to int8 first, with ``int8``: the
        layer's calibration inputs; :func:`~edgeopt.compiler.quantize.quantize_layers`); its index in
        :attr:`ms` once measured."""
        import torch

        from edgeopt.compiler.export import export_onnx

        i = len(self.paths)
        path = self.tmp / f"g{i}.onnx"
        export_onnx(module, torch.randn(*shape), path, verify=False)
        if int8 is not None:
            from edgeopt.compiler.quantize import quantize_layers

            path = quantize_layers(path, self.tmp / f"g{i}.int8.onnx", ["layer"], calibration=int8)
        self.paths.append(path)
        return i

    def measure(self) -> list[float]:
        """Time every queued graph (:data:`TABLE_ROUNDS` rounds); the latencies (ms), also in :attr:`ms`."""
        import numpy as np

        from edgeopt.runtime.bench import bench_many

        rounds = bench_many(self.paths, self.target, rounds=TABLE_ROUNDS, **TABLE_BLOCK)
        self.ms = [float(np.median([np.median(r) for r in rs if len(r)])) for rs in rounds]
        return self.ms


__all__ = ["TABLE_BLOCK", "TABLE_ROUNDS", "Pending"]
