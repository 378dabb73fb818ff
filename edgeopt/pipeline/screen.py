"""The pre-training screen: a plan's untrained graph exported and benchmarked on the target.

Only the plan's structure matters for latency and memory, not its weights, so a trial is measured
before any training and ends there when it is over a budget. Results are cached by
(target, dtype, plan): in the study's database (:class:`~edgeopt.pipeline.study.ScreenCache`, shared
by every worker and later run), or in a JSON file when given a path. Finalists are measured again
without the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt._io import atomic_write_text
from edgeopt.pipeline.config import SCREEN_BENCH
from edgeopt.pipeline.record import ScreenResult
from edgeopt.search.space import plan_key


class Screen:
    """Latency and memory of a plan's untrained graph on the target, cached by plan: ``cache`` is a
    :class:`~edgeopt.pipeline.study.ScreenCache` (the study's database) or a JSON file's path."""

    def __init__(self, task: Any, target: Any, cache: Path | Any) -> None:
        self.task, self.target = task, target
        self.shared = None if isinstance(cache, (str, Path)) else cache
        self.cache_path = Path(cache) if self.shared is None else None
        self.cache: dict[str, Any] = {}
        if self.cache_path is not None and self.cache_path.exists():
            try:
                self.cache = json.loads(self.cache_path.read_text())
            except (OSError, ValueError):
                self.cache = {}

    def key(self, plan: dict[str, Any], dtype: str) -> str:
        return hashlib.sha256(f"{self.target.name}|{dtype}|{plan_key(plan)}".encode()).hexdigest()[:20]

    def export(self, student: Any, dtype: str, tmp: Path, plan: dict[str, Any] | None) -> Path:
        """The ONNX file measured for ``plan`` as it ships (``dtype`` int8: all of it; else the plan's int8
        layers), in ``tmp``: finalists are re-measured from it."""
        return self._export(student, dtype, tmp, plan)

    def measure(
        self,
        student: Any,
        plan: dict[str, Any],
        dtype: str,
        timings: dict[str, float],
        *,
        bench_kwargs: Mapping[str, Any] | None = None,
        cache: bool = True,
    ) -> ScreenResult:
        """Export ``student`` (quantized when ``dtype`` is int8, or the layers ``plan`` runs in int8), bench it
        on the target; add the time
        spent to ``timings`` (``export``, ``bench``)."""
        key = self.key(plan, str(dtype))
        hit = self._get(key) if cache else None
        if hit is not None:
            return ScreenResult.from_dict(hit)
        with tempfile.TemporaryDirectory(prefix="edgeopt-screen-") as tmp:
            t0 = time.perf_counter()
            path = self._export(student, str(dtype), Path(tmp), plan)
            timings["export"] = timings.get("export", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
            result = self._bench(path, bench_kwargs)
            timings["bench"] = timings.get("bench", 0.0) + time.perf_counter() - t0
        if cache:
            self._put(key, result.to_dict())
        return result

    def _get(self, key: str) -> dict[str, Any] | None:
        return self.shared.get(key) if self.shared is not None else self.cache.get(key)

    def _put(self, key: str, value: dict[str, Any]) -> None:
        if self.shared is not None:
            self.shared.put(key, value)
        else:
            self.cache[key] = value
            self._save()

    def _export(self, student: Any, dtype: str, tmp: Path, plan: dict[str, Any] | None = None) -> Path:
        """The graph as it would ship: whole-artifact int8 for ``dtype`` int8, else the plan's int8 layers."""
        from edgeopt.compiler.export import export_onnx
        from edgeopt.compiler.quantize import quantize_onnx, quantize_plan

        path = tmp / "screen.onnx"
        export_onnx(student, self.task.example_input, path, verify=False)
        if dtype == "int8":
            return quantize_onnx(path, tmp / "screen.int8.onnx", calibration=self.task.X_train[:64])
        return quantize_plan(path, tmp / "screen.int8.onnx", plan, calibration=self.task.X_train[:64])

    def _bench(self, path: Path, bench_kwargs: Mapping[str, Any] | None) -> ScreenResult:
        from edgeopt.compiler.export import onnx_node_count
        from edgeopt.runtime.bench import bench

        result = bench(path, self.target, **dict(bench_kwargs or SCREEN_BENCH))
        pct = self.target.budget.latency_percentile or 95
        return ScreenResult(
            latency_ms=float(result.latency_at(pct)),
            latency_p50_ms=float(result.latency_ms["p50"]),
            latency_source=result.latency_source,
            peak_memory_mb=float(result.peak_memory_mb),
            size_bytes=int(result.model_size_bytes),
            nodes=onnx_node_count(path),
            params=int(result.params),
        )

    def _save(self) -> None:
        # The cache is an optimization; a read-only dir must not fail the trial.
        assert self.cache_path is not None
        with contextlib.suppress(OSError):
            atomic_write_text(self.cache_path, json.dumps(self.cache, sort_keys=True))


__all__ = ["Screen"]
