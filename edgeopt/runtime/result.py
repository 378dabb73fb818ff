"""What one benchmark measured (:class:`BenchResult`, the ``edgeopt.bench/1`` document) and how
samples become one (:func:`bench_result`): percentiles, robust dispersion with stalls counted apart
(``stats.dispersion``), throughput from the median, and predicted tails that host stalls do not set.

A prediction's samples are ``predict.predicted_samples``: this host's, stalls clipped, scaled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeopt.runtime import stats
from edgeopt.runtime.host import MB
from edgeopt.runtime.predict import predicted_samples

log = logging.getLogger("edgeopt.bench")
SCHEMA = "edgeopt.bench/1"
THROUGHPUT_BASIS = "batch / p50"
PREDICTED_TAIL = (
    "this host's run-to-run spread scaled to the target, its {stalls} stall(s) clipped to {threshold:.4g} ms "
    "first; the target's own stalls (other processes, throttling) are not predicted"
)


@dataclass(frozen=True)
class BenchResult:
    """What one benchmark measured. ``latency_ms`` is the target's number (measured or predicted)."""

    model: str
    target: dict[str, Any]
    latency_ms: dict[str, float]
    host_latency_ms: dict[str, float]
    latency_source: str  # "measured" | "predicted"
    samples_ms: tuple[float, ...]  # the target's scale (predicted: host samples, stalls clipped, x factor)
    host_samples_ms: tuple[float, ...]
    iterations: int
    throughput_per_s: float
    batch_size: int
    peak_memory_mb: float
    process_peak_memory_mb: float
    model_size_bytes: int
    params: int
    session_create_ms: float
    first_inference_ms: float
    cv: float  # std / mean of this host's samples: kept in the document; one stall sets it (use dispersion)
    environment: dict[str, Any]
    prediction: dict[str, Any] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    dispersion: stats.Dispersion | None = None  # of this host's samples: median, MAD, stalls

    def latency_at(self, percentile: float) -> float:
        """The target's latency at any percentile (nearest rank), in ms."""
        return stats.percentile(self.samples_ms, percentile)

    @property
    def model_size_mb(self) -> float:
        return self.model_size_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        """The ``edgeopt.bench/1`` document."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            "target": self.target,
            "latency_ms": self.latency_ms,
            "latency_source": self.latency_source,
            "host_latency_ms": self.host_latency_ms,
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "throughput_per_s": self.throughput_per_s,
            "cv": self.cv,
            "dispersion": self.dispersion.to_dict() if self.dispersion is not None else None,
            "throughput_basis": THROUGHPUT_BASIS,
            "session_create_ms": self.session_create_ms,
            "first_inference_ms": self.first_inference_ms,
            "peak_memory_mb": self.peak_memory_mb,
            "process_peak_memory_mb": self.process_peak_memory_mb,
            "model_size_bytes": self.model_size_bytes,
            "params": self.params,
            "environment": self.environment,
            "prediction": self.prediction,
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        """A readable table for stdout."""
        where = self.environment.get("measured_on", "this host")
        here = self.environment.get("remote_host") or "this host"
        src = (
            (
                f"measured on the device ({here}, over ssh)"
                if self.environment.get("remote_host")
                else "measured on the target"
            )
            if self.latency_source == "measured"
            else (
                f"PREDICTED for {self.target['name']} from {where} "
                f"(per-node roofline, x{self.prediction['factor']:.2f})"
            )
        )
        lines = [
            f"model      {self.model}",
            f"target     {self.target['name']}: {self.target['description']}",
            f"latency    {src}",
            f"measured   {where}, {self.iterations} runs, batch {self.batch_size}, "
            f"{self.environment.get('intra_op_threads_used') or 'default'} intra-op threads",
            "",
            f"{'latency (ms)':<14}" + "".join(f"{k:>10}" for k in stats.SUMMARY_KEYS),
            f"{self.target['name'][:13]:<14}" + "".join(f"{self.latency_ms[k]:>10.4f}" for k in stats.SUMMARY_KEYS),
        ]
        if self.latency_source == "predicted":
            lines.append(
                f"{'this host':<14}" + "".join(f"{self.host_latency_ms[k]:>10.4f}" for k in stats.SUMMARY_KEYS)
            )
        lines += ["", *self._noise_lines()]
        lines += [
            f"throughput         {self.throughput_per_s:,.1f} inferences/s ({self.latency_source}, batch / p50)",
            f"session create     {self.session_create_ms:.2f} ms ({here})",
            f"first inference    {self.first_inference_ms:.3f} ms ({here})",
            f"peak memory        {self.peak_memory_mb:.2f} MB added by the model "
            f"(process peak {self.process_peak_memory_mb:.1f} MB, {here})",
            f"model size         {self.model_size_bytes:,} bytes ({self.model_size_mb:.3f} MB)",
            f"parameters         {self.params:,}",
            f"onnxruntime        {self.environment.get('onnxruntime')} "
            f"{', '.join(self.environment.get('providers', []))}",
        ]
        return "\n".join(lines)

    def _noise_lines(self) -> list[str]:
        """The spread and the stalls of this host's runs, and what a predicted tail means."""
        d = self.dispersion
        if d is None:
            return []
        where = self.environment.get("remote_host") or "this host"
        lines = [
            f"spread             {d.relative_spread:.3f} relative (1.48 x MAD / median, {where})"
            + (f"  (noisy: > {stats.NOISY_SPREAD:.2f})" if d.relative_spread > stats.NOISY_SPREAD else ""),
            f"stalls             {d.stalls} of {self.iterations} runs ({d.stall_share:.1%}) > "
            f"{d.stall_threshold_ms:.4g} ms, {d.stall_ms:.3g} ms lost ({where})"
            + (f"  (noisy: > {stats.NOISY_STALL_SHARE:.0%})" if d.stall_share > stats.NOISY_STALL_SHARE else ""),
        ]
        if self.prediction is not None and self.prediction.get("tail"):
            lines.append(f"predicted tails    {self.prediction['tail']}")
        return lines


def summary(
    samples: np.ndarray,
    host_samples: np.ndarray,
    batch: int,
    prediction: dict[str, Any] | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The statistics part of a BenchResult: latency summaries, dispersion, throughput, cv, and a
    "noisy measurement" warning (appended to ``warnings`` and logged) saying why."""
    disp = stats.dispersion(host_samples)
    host_summary = stats.summarize(host_samples)
    cv = host_summary["std"] / host_summary["mean"] if host_summary["mean"] > 0 else 0.0
    reason = disp.noisy
    if reason:
        msg = f"noisy measurement: {reason}; close other work or raise --min-time"
        warnings.append(msg)
        log.warning("warning: %s", msg)
    target = samples if prediction is None else predicted_samples(host_samples, prediction["factor"], disp)
    if prediction is not None:
        prediction = dict(
            prediction,
            tail=PREDICTED_TAIL.format(stalls=disp.stalls, threshold=disp.stall_threshold_ms),
            stalls_clipped=disp.stalls,
        )
    p50_s = stats.percentile(target, 50) / 1e3
    return {
        "latency_ms": stats.summarize(target),
        "host_latency_ms": host_summary,
        "samples_ms": tuple(float(x) for x in target),
        "host_samples_ms": tuple(float(x) for x in host_samples),
        "iterations": len(host_samples),
        "throughput_per_s": batch / p50_s if p50_s > 0 else float("inf"),
        "cv": cv,
        "dispersion": disp,
        "prediction": prediction,
    }


def bench_result(
    model: str,
    target: dict[str, Any],
    samples: Sequence[float],
    host_samples: Sequence[float],
    prediction: dict[str, Any] | None,
    warnings: list[str],
    **figures: Any,
) -> BenchResult:
    """A BenchResult from the target's samples (``samples``: measured; predicted ones are made again
    from ``host_samples`` with their stalls clipped), the host's, the prediction and the other
    ``figures`` (memory, size, session times, environment)."""
    s = summary(
        np.asarray(samples, dtype=float),
        np.asarray(host_samples, dtype=float),
        figures["batch_size"],
        prediction,
        warnings,
    )
    return BenchResult(
        model=model,
        target=target,
        latency_source="measured" if prediction is None else "predicted",
        warnings=tuple(warnings),
        **s,
        **figures,
    )


__all__ = ["BenchResult", "bench_result", "summary", "SCHEMA", "THROUGHPUT_BASIS"]
