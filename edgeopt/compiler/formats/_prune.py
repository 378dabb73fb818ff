"""``prune``: structured pruning, the layer's output channels (features) removed for real.

Unlike the other formats this one is not a drop-in for one module: removing a conv's output
channels removes the matching BatchNorm channels, the depthwise convolution that reads them, and
the input channels of every consumer (across residual additions too). ``decompose`` applies it
first, on the whole copy, through torch-pruning's dependency graph (``edgeopt.compiler.prune``);
this handler only validates, labels and prices it. The rank is the number of output channels kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.compiler.formats._base import (
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerSpec,
    param_error,
    register_format,
)

# The search keeps these fractions of a layer's output channels (more than 7/8 barely saves). The narrow
# end is the finest: near a tight budget's floor one rung of a conv is a large share of the model's time.
# 1/8: uniform pruning at 0.8 met cnn1d's 1/4 budget, 1/4 did not; 3/16: the user's 0.8 kept 12 of 64
# channels where the rungs had 8 or 16, and beat every plan at 1/3 of cnn1d's dense p95 (decision 0118).
KEEP_FRACTIONS = (
    0.125,
    0.1875,
    0.25,
    0.375,
    0.5,
    0.625,
    0.75,
    0.875,
)


@dataclass(frozen=True)
class PruneConfig(FormatConfig):
    """Structured pruning: keep ``rank`` output channels (features) of the layer, the ones with the
    largest L2 norm over their whole dependency group (torch-pruning's ``GroupMagnitudeImportance``)."""

    format = "prune"
    rank: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise param_error("PruneConfig", "rank", "an int >= 1 (output channels kept)", self.rank)


def _kept(spec: LayerSpec, config: PruneConfig) -> int:
    return max(1, min(int(config.rank), spec.out_size))


def _round_channels(n: float, out: int) -> int:
    """Channel counts a kernel likes: on layers of 32 or more channels multiples of 8, and of 4 below 16
    kept (a multiple of 8 there halves or doubles the layer: 8 or 16 of 64, nothing between); else of 1."""
    step = 1 if out < 32 else (8 if n >= 16 else 4)
    return int(max(step, min(out - 1, step * round(n / step))))


@register_format
class PruneHandler(FormatHandler):
    config_cls = PruneConfig
    label = "pr"
    graph_level = True

    def onnx_node_count(self, kind: str, ranks=None, *, bias: bool = True) -> int:
        return 1  # still one Gemm or Conv, narrower

    def rank_text(self, ranks=None, *, width: int | None = None) -> str:
        kept = list(ranks or [])[1:-1]
        if not kept:
            return "–"
        return f"{kept[0]:,} of {width:,} outputs" if width else f"{kept[0]:,} outputs kept"

    def max_rank(self, spec: LayerSpec) -> int:
        return spec.out_size - 1  # keeping every channel is dense

    def check(self, spec: LayerSpec) -> str | None:
        reason = super().check(spec)
        if reason is None and spec.out_size < 2:
            reason = "a layer with one output channel has nothing to prune"
        return reason

    def search_ranks(self, spec: LayerSpec) -> list[int]:
        """The channel counts the tables offer: :data:`KEEP_FRACTIONS` of the layer's, rounded."""
        return sorted({_round_channels(f * spec.out_size, spec.out_size) for f in KEEP_FRACTIONS} - {spec.out_size})

    def cost(self, spec: LayerSpec, config: PruneConfig) -> LayerCost:
        """This layer's own share: its weight rows kept (its consumers and BatchNorm shrink too, which
        only the built model counts, so the figure is an upper bound: ``exact=False``)."""
        keep = _kept(spec, config)
        per_out = spec.in_size * spec.kernel_numel
        params = keep * per_out + (keep if spec.bias else 0)
        macs = keep * per_out * spec.positions("out")
        return LayerCost(self.name, params, macs, (1, keep, 1), exact=False)

    def build(self, module, spec, config):  # pragma: no cover - decompose prunes through the graph
        raise NotImplementedError("the 'prune' format is applied by edgeopt.compiler.prune on the whole model")
