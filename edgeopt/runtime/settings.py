"""How long and how a benchmark measures: :class:`BenchSettings`, shared by ``bench()``, the
measurement child process and the ``bench`` / ``gate`` command lines. Defaults and bounds are
declared once, here. A leaf module: standard library and ``edgeopt._validate`` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt._validate import check_fields, spec, specs
from edgeopt.errors import InputError

WHERE = "bench settings"


@dataclass(frozen=True)
class BenchSettings:
    """Warm-up, then timed runs until both ``min_iters`` and ``min_time_s`` are met, at most
    ``max_iters``. The defaults fit a quick check on a laptop; raise them for release-grade runs
    (e.g. ``min_iters=1000, min_time_s=10``). Validated when built (InputError, one line)."""

    warmup: int = spec("int", default=10, minimum=0, doc="untimed warm-up runs")
    min_iters: int = spec("int", default=100, minimum=1, doc="minimum timed runs")
    min_time_s: float = spec("num", default=1.0, minimum=0, doc="minimum timed seconds")
    max_iters: int = spec("int", default=10000, minimum=1, doc="maximum timed runs")
    #: size of a symbolic batch dimension; None: the target's batch_size
    batch: int | None = spec("int", default=None, minimum=1, optional=True, doc="size of a symbolic batch dimension")
    seed: int = spec("int", default=0, doc="seed of the generated inputs")

    def __post_init__(self) -> None:
        for name, value in check_fields(self, WHERE).items():
            object.__setattr__(self, name, value)
        if self.max_iters < self.min_iters:
            raise InputError(
                f"{WHERE}: max_iters: expected an integer >= min_iters ({self.min_iters}), "
                f"found an integer {self.max_iters}"
            )

    def updated(self, **changes: Any) -> BenchSettings:
        """A copy with the given fields replaced; None leaves a field as it is (keyword API, CLI flags)."""
        unknown = sorted(set(changes) - set(specs(BenchSettings)))
        if unknown:
            raise InputError(
                f"{WHERE}: {unknown[0]}: unknown setting; expected one of {', '.join(specs(BenchSettings))}"
            )
        given = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BenchSettings:
        """The settings in a flat mapping (a measurement job); other keys are ignored."""
        return cls(**{k: data[k] for k in specs(cls) if k in data and data[k] is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def timeout_s(self) -> float:
        """How long the measurement child may run: generous, a slow first run is not a hang."""
        return max(120.0, 30.0 + 20.0 * float(self.min_time_s))


#: the ``gate`` command's defaults: twice the runs and time of ``bench``, to bound a p95
GATE_SETTINGS = BenchSettings(min_iters=200, min_time_s=2.0)

__all__ = ["BenchSettings", "GATE_SETTINGS"]
