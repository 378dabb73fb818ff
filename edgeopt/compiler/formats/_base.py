"""Format configs, their handlers, and the registry that maps one to the other.

A new decomposition is one new :class:`FormatConfig` subclass plus one :class:`FormatHandler`
registered with :func:`register_format`; ``decompose``, ``plan_cost`` and ``decomposable_layers``
find it through the registry and need no change. The handler also answers what the search, the
report and the benchmarks ask about a format (its plan entry for a rank, the rank of an entry, its
short label, the node count of its exported layer, the largest rank worth searching), so nothing
outside this package spells a format's name.

Every format with a rank takes it under one key, ``rank`` (an int for every bond, a per-bond list,
or a float relative error); ``ranks`` is still read, as a deprecated alias, and never written.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from edgeopt._validate import fail
from edgeopt.compiler.formats._precision import precision_of, split_precision
from edgeopt.errors import InputError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

BYTES_PER_PARAM = 4  # float32 artifacts
DEFAULT_FORMAT = "dense"  # what a layer a plan does not name stays
RANK_KEY = "rank"  # the one key of a rank in every plan entry and config
DEPRECATED_RANK_KEYS = ("ranks",)  # still read (older plans and studies), normalized to RANK_KEY


def param_error(
    owner: str, param: str, expected: str, got: Any, *, layer: str | None = None, cls: type[InputError] = InputError
) -> InputError:
    """A bad config value in ``edgeopt._validate``'s one template:
    ``TTConfig, layer 'fc1': rank: expected an int >= 1 ..., found an integer -3``."""
    return fail(_where(owner, layer), param, expected, got, error=cls)


def _where(owner: str, layer: str | None) -> str:
    return f"{owner}, layer '{layer}'" if layer else owner


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
    def from_dict(cls, d: Mapping[str, Any], *, layer: str | None = None) -> FormatConfig:
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        aliases = dict(cls.aliases)
        if RANK_KEY in names:
            aliases.update(dict.fromkeys(DEPRECATED_RANK_KEYS, RANK_KEY))
        for alias, name in aliases.items():
            if alias in d:
                if name in d:
                    raise param_error(
                        cls.__name__, alias, f"given once (it is another name for '{name}')", d[alias], layer=layer
                    )
                if alias in DEPRECATED_RANK_KEYS:
                    warnings.warn(
                        f"plan entry key '{alias}' is deprecated: write '{RANK_KEY}'", DeprecationWarning, stacklevel=3
                    )
                d[name] = d.pop(alias)
        unknown = sorted(set(d) - names - {"format"})
        if unknown:
            raise param_error(
                cls.__name__, unknown[0], f"one of {sorted(names) or '(no options)'}", d[unknown[0]], layer=layer
            )
        kwargs = {k: v for k, v in d.items() if k != "format"}
        try:
            return cls(**kwargs)
        except InputError as exc:
            prefix = f"{cls.__name__}: "
            if layer and str(exc).startswith(prefix):
                raise type(exc)(_where(cls.__name__, layer) + ": " + str(exc)[len(prefix) :]) from None
            raise

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


class FormatHandler:
    """Everything edgeopt knows about one format, answered for whoever asks.

    Building and costing: ``build`` turns a layer and a config into a module, ``cost`` into
    parameters and MACs without building anything; ``kinds`` lists the layer kinds the handler
    supports and ``check`` returns a reason when a particular layer cannot take the format.

    Asked by the search, the report and the benchmarks: ``has_rank``, ``plan_entry(rank)``,
    ``rank_of(entry)``, ``short_label(entry)``, ``onnx_node_count(kind, ranks)``,
    ``max_rank(spec)`` (where the format stops saving parameters) and ``max_search_rank(spec)``
    (the largest rank the search tries: that, capped by ``search_rank_limit``).
    """

    config_cls: ClassVar[type[FormatConfig]]
    kinds: ClassVar[tuple[str, ...]] = ("linear", "conv1d", "conv2d")
    label: ClassVar[str] = ""  # prefix of the short label in reports ("lr" -> "lr8"); the format name if empty
    search_rank_limit: ClassVar[int | None] = None  # the search never tries a larger rank (None: no limit)
    # True: the format changes the layer's neighbours too (``prune``): ``decompose`` applies it to the
    # whole copy before the per-layer formats, and only the allocation (which measures it in the
    # whole graph) offers it; the per-layer search space does not.
    graph_level: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.config_cls.format

    @property
    def has_rank(self) -> bool:
        """Whether the format takes a rank (under ``RANK_KEY``)."""
        return RANK_KEY in {f.name for f in dataclasses.fields(self.config_cls)}

    def plan_entry(self, rank: Any = None) -> dict[str, Any]:
        """The plan entry (a JSON-able dict) of this format at ``rank``, validated."""
        if not self.has_rank:
            if rank is not None:
                raise param_error(self.config_cls.__name__, RANK_KEY, "no rank (the format has none)", rank)
            return self.config_cls.from_dict({}).to_dict()
        return self.config_cls.from_dict({RANK_KEY: rank}).to_dict()

    def rank_of(self, entry: Mapping[str, Any] | FormatConfig) -> Any:
        """The rank a config or plan entry gives (``rank``, or the deprecated ``ranks``), as written; None if none."""
        if isinstance(entry, FormatConfig):
            return getattr(entry, RANK_KEY, None)
        for key in (RANK_KEY, *DEPRECATED_RANK_KEYS):
            if key in entry:
                return entry[key]
        return None

    def short_label(self, entry: Mapping[str, Any] | FormatConfig) -> str:
        """How reports name a layer's format in a line: ``dense``, ``lr8``, ``tt12``, ``tt[1, 4, 1]``."""
        rank = self.rank_of(entry)
        prefix = self.label or self.name
        if isinstance(rank, tuple):
            rank = list(rank)
        return prefix if rank is None else f"{prefix}{rank}"

    def rank_text(self, ranks: Sequence[int] | None, *, width: int | None = None) -> str:
        """How a report prints a layer's bond ``ranks`` (``LayerReport.ranks``, ``[1, 4, 1]``) in words:
        ``rank 4``; ``width`` is the dense layer's output count, for formats that keep a share of it."""
        inner = list(ranks or [])[1:-1]
        if not inner:
            return "–"
        return f"rank {inner[0]}" if len(inner) == 1 else f"ranks {inner}"

    def onnx_node_count(
        self, kind: str, ranks: Sequence[int] | None = None, *, bias: bool = True
    ) -> int:  # pragma: no cover
        """Nodes of the exported graph for one layer of ``kind`` in this format at bond ``ranks``
        (``LayerReport.ranks``), with or without a bias."""
        raise NotImplementedError

    def check(self, spec: LayerSpec) -> str | None:
        return None if spec.kind in self.kinds else f"the '{self.name}' format does not support {spec.kind} layers"

    def max_rank(self, spec: LayerSpec) -> int | None:
        """The rank above which this format has more parameters than the dense layer (None: no rank)."""
        return None

    def max_search_rank(self, spec: Any) -> int:
        """The largest rank worth searching on this layer (0: not offered): ``spec.max_rank`` for
        this format (as ``decomposable_layers`` found it) capped by ``search_rank_limit``."""
        if not self.has_rank:
            return 0
        known = getattr(spec, "max_rank", None)
        hi = known.get(self.name, 0) if isinstance(known, Mapping) else self.max_rank(spec)
        hi = int(hi or 0)
        return hi if self.search_rank_limit is None else min(hi, self.search_rank_limit)

    def search_ranks(self, spec: Any) -> list[int] | None:
        """The ranks the per-layer tables offer on this layer; None: the ladder up to ``max_search_rank``."""
        return None

    def cost(self, spec: LayerSpec, config: FormatConfig) -> LayerCost:  # pragma: no cover
        raise NotImplementedError

    def spec_fields(self, spec: LayerSpec) -> dict[str, Any]:
        """Extra LayerSpec fields this format chooses for a layer (e.g. TT modes)."""
        return {}

    def build(
        self, module: nn.Module, spec: LayerSpec, config: FormatConfig
    ) -> tuple[nn.Module, LayerReport]:  # pragma: no cover
        raise NotImplementedError


def rel_error(w: Any, w_hat: Any) -> float:
    """||W - W_hat||_F / ||W||_F, in float64."""
    w, w_hat = w.detach().double(), w_hat.detach().double().reshape(w.shape)
    norm = float(w.norm())
    return float((w - w_hat).norm()) / norm if norm > 0 else float((w - w_hat).norm())


def make_report(spec: LayerSpec, fmt: str, cost: LayerCost, err: float, **extra: Any) -> LayerReport:
    macs_known = spec.kind == "linear" or spec.out_positions is not None
    return LayerReport(
        name=spec.name,
        format=fmt,
        kind=spec.kind,
        params=cost.params,
        macs=cost.macs if macs_known else None,
        rel_error=err,
        dense_params=spec.params,
        dense_macs=spec.macs if macs_known else None,
        ranks=cost.ranks,
        **extra,
    )


_REGISTRY: dict[str, FormatHandler] = {}


def register_format(handler_cls: type[FormatHandler]) -> type[FormatHandler]:
    """Class decorator: register a handler under its config's ``format`` name."""
    name = handler_cls.config_cls.format
    if not name:
        raise ValueError(f"{handler_cls.config_cls.__name__}.format must be a non-empty name")
    _REGISTRY[name] = handler_cls()
    return handler_cls


def unregister_format(name: str) -> None:
    """Remove a format from the registry (a plugin unloading, a test cleaning up)."""
    _REGISTRY.pop(name, None)


def registered_formats() -> tuple[str, ...]:
    """The registered format names, in registration order (the search offers them in this order)."""
    return tuple(_REGISTRY)


def registered_handlers() -> tuple[FormatHandler, ...]:
    """The registered handlers, in registration order."""
    return tuple(_REGISTRY.values())


def get_handler(fmt: str | FormatConfig | Mapping[str, Any]) -> FormatHandler:
    """The handler of a format name, a config, or a plan entry."""
    if isinstance(fmt, FormatConfig):
        name = fmt.format
    elif isinstance(fmt, Mapping):
        name = fmt.get("format")
    else:
        name = fmt
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise fail("plan", "format", f"one of {', '.join(map(repr, _REGISTRY))}", name) from None


def short_label(entry: Mapping[str, Any] | FormatConfig | str | None) -> str:
    """A plan entry's label in one line of a report (``lr8``); tolerant of formats no longer registered."""
    if entry is None or isinstance(entry, str):
        entry = {"format": entry or DEFAULT_FORMAT}
    handler = _REGISTRY.get(entry.format if isinstance(entry, FormatConfig) else entry.get("format"))
    q = "+int8" if precision_of(entry) == "int8" else ""
    if handler is not None:
        return handler.short_label(entry) + q
    rank = next((entry[k] for k in (RANK_KEY, *DEPRECATED_RANK_KEYS) if k in entry), None)
    return f"{entry.get('format')}{'' if rank is None else rank}{q}"


def rank_text(fmt: str, ranks: Sequence[int] | None, *, width: int | None = None) -> str:
    """A layer's ranks in words (``rank 4``, ``256 of 1024 outputs``), as its format reads them; tolerant
    of formats no longer registered."""
    handler = _REGISTRY.get(fmt)
    if handler is None:
        return "–" if not ranks else str(list(ranks))
    return handler.rank_text(ranks, width=width)


def layer_onnx_node_count(fmt: str, kind: str, ranks: Sequence[int] | None = None, *, bias: bool = True) -> int:
    """Nodes of one exported layer of ``kind`` in format ``fmt`` at bond ``ranks`` (as ``LayerReport.ranks``)."""
    return get_handler(fmt).onnx_node_count(kind, tuple(ranks) if ranks else None, bias=bias)


def parse_config(entry: Any, *, layer: str | None = None) -> FormatConfig:
    """One plan entry (a dict, a config object, or a bare format name) -> a validated config."""
    if isinstance(entry, FormatConfig):
        return entry
    if isinstance(entry, str):
        entry = {"format": entry}
    where = f"plan['{layer}']" if layer else "plan entry"
    if not isinstance(entry, Mapping):
        raise fail(where, "format", "a table with a 'format' key, or a FormatConfig", entry)
    if "format" not in entry:
        raise fail(where, "format", f"one of {', '.join(map(repr, _REGISTRY))}", None)
    entry = split_precision(entry, where)[0]  # the precision is the exporter's business, not the format's
    try:
        handler = _REGISTRY[entry["format"]]
    except (KeyError, TypeError):
        raise fail(where, "format", f"one of {', '.join(map(repr, _REGISTRY))}", entry["format"]) from None
    return handler.config_cls.from_dict(entry, layer=layer)


def layer_error(layer: str, msg: str) -> ModelError:
    return ModelError(f"Layer '{layer}': {msg}")
