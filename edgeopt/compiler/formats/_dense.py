"""``dense``: keep the layer as it is."""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.compiler.formats._base import (
    DEFAULT_FORMAT,
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerSpec,
    make_report,
    register_format,
)


@dataclass(frozen=True)
class DenseConfig(FormatConfig):
    """Keep the layer dense (the default for every layer a plan does not name)."""

    format = DEFAULT_FORMAT


@register_format
class DenseHandler(FormatHandler):
    config_cls = DenseConfig

    def onnx_node_count(self, kind: str, ranks=None, *, bias: bool = True) -> int:
        return 1  # Gemm or Conv

    def cost(self, spec: LayerSpec, config: FormatConfig) -> LayerCost:
        return LayerCost(self.name, spec.params, spec.macs)

    def build(self, module, spec, config):
        return module, make_report(spec, self.name, self.cost(spec, config), 0.0)
