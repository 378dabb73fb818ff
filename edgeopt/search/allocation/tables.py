"""The per-layer tables: for each decomposable layer, a ladder of candidates (dense, then formats and
ranks), each with its latency on the target and its sensitivity, and what the report shows of them.

How they are built: :mod:`.build` (latencies :mod:`.latency`, the additivity fit :mod:`.additivity`,
sensitivities :mod:`.sensitivity`). Cached in the out dir (``tables.json``), keyed by a hash of the
model, the input and the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "edgeopt.tables/10"  # 4: int8 rungs (entries with a precision); 5: the fastest fp32 plan measured whole;
# 6: fitted through it when the int8 plan runs slower, int8 rungs charged the difference; 7: the sensitivities'
# batch sized by work, not by a timing (and the rungs measured in timings["sensitivity_rungs"]); 8: the rungs
# timed side by side in rounds, each the median of its rounds' medians (pending.Pending); 9: int8 rungs priced
# through a whole int8 graph when the fit goes through fp32 plans (additivity.whole_int8), and a Linear layer's
# int8 rung dynamic, not static QDQ (quantize.quantize_layers); 10: prune rungs at 3/16 and multiples of 4 below
# 16 channels kept (decision 0118)


@dataclass
class Candidate:
    """One way to build one layer: its plan entry (``{}`` is dense), params, latency (ms) and sensitivity."""

    label: str
    entry: dict[str, Any]
    params: int
    latency_ms: float
    sensitivity: float


@dataclass
class Tables:
    layers: dict[str, list[Candidate]]
    dense_ms: float  # the whole dense graph
    rest_ms: float  # dense graph less the dense layers
    build_s: float
    key: str = ""
    cached: bool = False
    fixed_params: int = 0  # parameters outside the decomposable layers
    notes: list[str] = field(default_factory=list)
    additivity: dict[str, Any] = field(default_factory=dict)  # the whole graphs measured against the table
    calibration: int = 0  # samples the sensitivities were computed on
    timings: dict[str, Any] = field(default_factory=dict)  # seconds: latencies, additivity, sensitivity; rungs measured

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "key": self.key,
            "dense_ms": self.dense_ms,
            "rest_ms": self.rest_ms,
            "build_s": self.build_s,
            "fixed_params": self.fixed_params,
            "notes": self.notes,
            "additivity": self.additivity,
            "calibration": self.calibration,
            "timings": self.timings,
            "layers": {n: [asdict(c) for c in cands] for n, cands in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tables:
        layers = {n: [Candidate(**c) for c in cands] for n, cands in d["layers"].items()}
        return cls(
            layers,
            float(d["dense_ms"]),
            float(d["rest_ms"]),
            float(d["build_s"]),
            d.get("key", ""),
            True,
            int(d.get("fixed_params", 0)),
            list(d.get("notes", [])),
            dict(d.get("additivity") or {}),
            int(d.get("calibration", 0)),
            dict(d.get("timings") or {}),
        )

    def summary(self) -> dict[str, Any]:
        """What the report shows of the tables: size, build time, the additivity check."""
        return {
            "layers": len(self.layers),
            "candidates": sum(map(len, self.layers.values())),
            "build_s": self.build_s,
            "cached": self.cached,
            "dense_ms": self.dense_ms,
            "rest_ms": self.rest_ms,
            "calibration_samples": self.calibration,
            "timings": self.timings,
            "additivity": self.additivity,
            "notes": self.notes,
        }

    def report(self, plan: dict[str, Any], measured_ms: float | None) -> dict[str, Any]:
        """:meth:`summary`, the shipped ``plan``'s table latency against ``measured_ms`` (one more
        additivity check, on the plan that matters; None: not comparable), and per layer the chosen
        rung and why, in the table's terms."""
        out = self.summary()
        predicted = self.latency_of(plan)
        if predicted is not None and measured_ms:
            out["shipped"] = {
                "table_ms": round(predicted, 5),
                "measured_ms": round(measured_ms, 5),
                "error_pct": round(100 * (predicted / measured_ms - 1), 2),
            }
        out["rows"] = []
        for name, cands in self.layers.items():
            hit = next((c for c in cands if c.entry == (plan.get(name) or {})), cands[0])
            out["rows"].append(
                {
                    "layer": name,
                    "candidates": len(cands),
                    "dense_ms": round(cands[0].latency_ms, 5),
                    "chosen": hit.label,
                    "chosen_ms": round(hit.latency_ms, 5),
                    "sensitivity": hit.sensitivity,
                    "why": _why(cands, hit),
                }
            )
        return out

    def plan_of(self, choice: dict[str, int]) -> dict[str, Any]:
        """The plan of an allocation (layer -> candidate index); dense layers are left out."""
        return {n: dict(self.layers[n][i].entry) for n, i in choice.items() if self.layers[n][i].entry}

    def latency_of(self, plan: dict[str, Any]) -> float | None:
        """The table's prediction for ``plan`` (rest included), None when a layer's entry is not in the table."""
        total = self.rest_ms
        for name, cands in self.layers.items():
            entry = plan.get(name) or {}
            if entry.get("format") == "dense":  # dense fp32 is {} in the table; dense int8 keeps its entry
                from edgeopt.compiler.formats import precision_of, with_precision

                entry = with_precision(entry, precision_of(entry))
            hit = next((c for c in cands if c.entry == entry), None)
            if hit is None:
                return None
            total += hit.latency_ms
        return total


def _why(cands: list[Candidate], hit: Candidate) -> str:
    """Why a layer ships as it does, in the table's terms."""
    if hit.entry:
        return f"saves {cands[0].latency_ms - hit.latency_ms:+.4f} ms against dense in the table"
    if min(c.latency_ms for c in cands) >= cands[0].latency_ms:
        return "dense: no rank of any format is faster than dense here"
    return "dense: under this budget its cheaper rungs cost more sensitivity than elsewhere"


def power_of_two(r: int) -> bool:
    return r & (r - 1) == 0


def graph_level(entry: dict[str, Any]) -> bool:
    from edgeopt.compiler.formats import get_handler

    return bool(entry) and get_handler(entry["format"]).graph_level


def spread(idx: list[int], room: int) -> list[int]:
    """``room`` of ``idx``: the first, the last and evenly spaced ones between."""
    if len(idx) <= room:
        return list(idx)
    step = (len(idx) - 1) / (room - 1)
    return [idx[round(j * step)] for j in range(room)]


def rung_rank(entry: dict[str, Any]) -> int:
    from edgeopt.compiler.formats import get_handler

    r = get_handler(entry["format"]).rank_of(entry)
    return int(max(r) if isinstance(r, (list, tuple)) else r)


__all__ = ["SCHEMA", "Candidate", "Tables", "graph_level", "power_of_two", "rung_rank", "spread"]
