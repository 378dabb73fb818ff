"""Format configs, their handlers, and the registry that maps one to the other.

A new decomposition is one new :class:`FormatConfig` subclass plus one :class:`FormatHandler`
registered with :func:`register_format`; ``decompose``, ``plan_cost`` and ``decomposable_layers``
find it through the registry and need no change.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edgeopt.errors import InputError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

BYTES_PER_PARAM = 4  # float32 artifacts


def param_error(owner: str, param: str, expected: str, got: Any, *, layer: str | None = None,
                cls: type[Exception] = InputError) -> Exception:
    """The one error template: ``The 'rank' parameter of TTConfig must be ... Got -3 instead.``"""
    where = f" for layer '{layer}'" if layer else ""
    return cls(f"The '{param}' parameter of {owner}{where} must be {expected}. Got {got!r} instead.")


# --------------------------------------------------------------------------- layer geometry
@dataclass(frozen=True)
class LayerSpec:
    """What the compiler knows about one decomposable layer (no weights, JSON-able).

    ``in_size``/``out_size`` are features (Linear) or channels (Conv); ``kernel_size`` is ``()`` for
    Linear. ``in_positions``/``out_positions`` are the spatial positions per sample the layer reads
    and writes (1 for Linear; ``None`` for a conv when no example input was given, in which case
    MACs are per output position). ``max_rank`` maps each allowed format with a rank to the rank
    above which that format has more parameters than the dense layer. ``tt_in_modes``/``tt_out_modes``
    are the automatically chosen TT-matrix modes (possibly of a zero-padded size), ``notes`` the
    reasons a format was excluded.
    """

    name: str
    kind: str  # "linear" | "conv1d" | "conv2d"
    in_size: int
    out_size: int
    kernel_size: tuple[int, ...]
    bias: bool
    in_positions: int | None
    out_positions: int | None
    params: int
    macs: int
    formats: tuple[str, ...]
    max_rank: dict[str, int] = field(default_factory=dict)
    tt_in_modes: tuple[int, ...] | None = None
    tt_out_modes: tuple[int, ...] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def kernel_numel(self) -> int:
        return math.prod(self.kernel_size) if self.kernel_size else 1

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_size, self.in_size, *self.kernel_size)

    def positions(self, which: str = "out") -> int:
        p = self.out_positions if which == "out" else self.in_positions
        return 1 if p is None else p

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LayerCost:
    """Parameters and multiply-adds per sample of one layer in one format (no weights built)."""

    format: str
    params: int
    macs: int
    ranks: tuple[int, ...] | None = None
    exact: bool = True  # False when ranks come from a tolerance and are only an upper bound

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LayerReport:
    """What a decomposed layer is: its format, ranks, size, cost and reconstruction error."""

    name: str
    format: str
    kind: str
    params: int
    macs: int | None
    rel_error: float
    dense_params: int
    dense_macs: int | None
    ranks: tuple[int, ...] | None = None
    in_modes: tuple[int, ...] | None = None
    out_modes: tuple[int, ...] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def compression(self) -> float:
        return self.dense_params / max(self.params, 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["compression"] = self.compression
        return d


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class FormatConfig:
    """Base of every format config. Subclasses set ``format`` and validate in ``__post_init__``."""

    format: ClassVar[str] = ""
    aliases: ClassVar[dict[str, str]] = {}  # accepted spelling -> field name, e.g. "rank" -> "ranks"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, layer: str | None = None) -> FormatConfig:
        d = dict(d)
        for alias, name in cls.aliases.items():
            if alias in d:
                if name in d:
                    raise param_error(cls.__name__, alias, f"given once (it is another name for '{name}')",
                                      d[alias], layer=layer)
                d[name] = d.pop(alias)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"format"})
        if unknown:
            raise param_error(cls.__name__, unknown[0], f"one of {sorted(names) or '(no options)'}",
                              d[unknown[0]], layer=layer)
        kwargs = {k: v for k, v in d.items() if k != "format"}
        try:
            return cls(**kwargs)
        except InputError as exc:
            if layer and " for layer " not in str(exc):
                msg = str(exc).replace(f"of {cls.__name__} ", f"of {cls.__name__} for layer '{layer}' ", 1)
                raise type(exc)(msg) from None
            raise

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


class FormatHandler:
    """Turns a layer and a config into a module (``build``) or into a cost (``cost``).

    ``kinds`` lists the layer kinds the handler supports; ``check`` returns a reason when a
    particular layer cannot take the format (``None`` when it can).
    """

    config_cls: ClassVar[type[FormatConfig]]
    kinds: ClassVar[tuple[str, ...]] = ("linear", "conv1d", "conv2d")

    def check(self, spec: LayerSpec) -> str | None:
        return None if spec.kind in self.kinds else f"the '{self.config_cls.format}' format does not support {spec.kind} layers"

    def max_rank(self, spec: LayerSpec) -> int | None:
        return None

    def cost(self, spec: LayerSpec, config: FormatConfig) -> LayerCost:  # pragma: no cover
        raise NotImplementedError

    def spec_fields(self, spec: LayerSpec) -> dict[str, Any]:
        """Extra LayerSpec fields this format chooses for a layer (e.g. TT modes)."""
        return {}

    def build(self, module: nn.Module, spec: LayerSpec, config: FormatConfig) -> tuple[nn.Module, LayerReport]:  # pragma: no cover
        raise NotImplementedError


def rel_error(w: Any, w_hat: Any) -> float:
    """||W - W_hat||_F / ||W||_F, in float64."""
    w, w_hat = w.detach().double(), w_hat.detach().double().reshape(w.shape)
    norm = float(w.norm())
    return float((w - w_hat).norm()) / norm if norm > 0 else float((w - w_hat).norm())


def make_report(spec: LayerSpec, fmt: str, cost: LayerCost, err: float, **extra: Any) -> LayerReport:
    macs_known = spec.kind == "linear" or spec.out_positions is not None
    return LayerReport(name=spec.name, format=fmt, kind=spec.kind, params=cost.params,
                       macs=cost.macs if macs_known else None, rel_error=err, dense_params=spec.params,
                       dense_macs=spec.macs if macs_known else None, ranks=cost.ranks, **extra)


_REGISTRY: dict[str, FormatHandler] = {}


def register_format(handler_cls: type[FormatHandler]) -> type[FormatHandler]:
    """Class decorator: register a handler under its config's ``format`` name."""
    name = handler_cls.config_cls.format
    if not name:
        raise ValueError(f"{handler_cls.config_cls.__name__}.format must be a non-empty name")
    _REGISTRY[name] = handler_cls()
    return handler_cls


def registered_formats() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_handler(fmt: str | FormatConfig) -> FormatHandler:
    name = fmt.format if isinstance(fmt, FormatConfig) else fmt
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"Unknown format {name!r}: expected one of {sorted(_REGISTRY)}.") from None


def parse_config(entry: Any, *, layer: str | None = None) -> FormatConfig:
    """One plan entry (a dict, a config object, or a bare format name) -> a validated config."""
    if isinstance(entry, FormatConfig):
        return entry
    if isinstance(entry, str):
        entry = {"format": entry}
    if not isinstance(entry, dict):
        where = f" for layer '{layer}'" if layer else ""
        raise InputError(f"A plan entry{where} must be a dict with a 'format' key or a FormatConfig. Got {entry!r} instead.")
    if "format" not in entry:
        where = f" for layer '{layer}'" if layer else ""
        raise InputError(f"A plan entry{where} must name its 'format' (one of {sorted(_REGISTRY)}). Got {entry!r} instead.")
    handler = get_handler(entry["format"])
    return handler.config_cls.from_dict(entry, layer=layer)


def layer_error(layer: str, msg: str) -> ModelError:
    return ModelError(f"Layer '{layer}': {msg}")
