"""``predicted``: measured here in a fresh process with a per-node profile, the target's latency
predicted by the per-node roofline transfer (``edgeopt.runtime.predict``) and labelled as such."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ModelError, TargetError
from edgeopt.runtime.backends.local import LocalBackend
from edgeopt.runtime.calibrate import host_calibration
from edgeopt.runtime.perf import PerfModel
from edgeopt.runtime.predict import breakdown, run_cost_us, transfer

if TYPE_CHECKING:
    from edgeopt.runtime.targets import Target

_METHOD = "per-node roofline transfer: host samples x "


def _perf(model: PerfModel, calibrated: Any, **extra: Any) -> dict[str, Any]:
    return {
        "gflops": model.gflops,
        "mem_bandwidth_gbs": model.mem_bandwidth_gbs,
        "op_overhead_us": model.op_overhead_us,
        "run_overhead_us": model.run_overhead_us,
        "calibrated": calibrated,
        **extra,
    }


class PredictedBackend(LocalBackend):
    """This host measures (at most its own cores' threads); the target's performance model scales it."""

    name = "predicted"
    predicts = True

    def __init__(self, target: Target):
        if not target.device.has_perf_model:
            raise TargetError(
                f"{target.source}: [device] gflops: expected a performance model (gflops, mem_bandwidth_gbs, "
                f"op_overhead_us) to predict {target.name} latency from this host, found none; run "
                f"`edgeopt calibrate` on the device and paste its snippet, or pass --on-device"
            )
        super().__init__(target)

    @property
    def threads(self) -> int:
        return self.target.host_threads()

    def predict(
        self, nodes: list[dict[str, Any]] | None, *, model: str, warnings: Sequence[str], host_p50_ms: float | None
    ) -> dict[str, Any]:
        """The per-node roofline transfer from this host to the target (the ``prediction`` document).
        With the host's measured median (``host_p50_ms``) the target's memory-bound time is its own,
        not scaled by this host's memory error (``predict.transfer``); without it, the plain model ratio."""
        target = self.target
        if not nodes:
            raise ModelError(
                f"{model}: no per-node profile to predict {target.name} latency from "
                f"({'; '.join(warnings) or 'the profiler reported no nodes'}); "
                "pass --on-device to report the host measurement"
            )
        cal = host_calibration(self.threads, target.runtime.allow_spinning)
        host_model, target_model = cal.perf, PerfModel.of(target.device)
        host_us, target_us = run_cost_us(nodes, host_model), run_cost_us(nodes, target_model)
        if host_p50_ms:
            t = transfer(nodes, host_model, target_model, host_p50_ms * 1e3)
            method = (
                _METHOD + "factor; the host's model error scales the target's dispatch and compute time, "
                "the target's memory-bound time is its own"
            )
        else:
            t, method = {"factor": target_us / host_us}, _METHOD + "cost(target) / cost(host)"
        return {
            "method": method,
            **t,
            "host_model_us": host_us,
            "target_model_us": target_us,
            "host_perf": _perf(host_model, cal.when),
            "target_perf": _perf(target_model, target.device.calibrated, source=target.device.perf_source),
            "nodes": len(nodes),
            "target_breakdown_us": breakdown(nodes, target_model),
        }


__all__ = ["PredictedBackend"]
