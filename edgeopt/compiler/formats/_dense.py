"""``dense``: keep the layer as it is."""

from __future__ import annotations

from dataclasses import dataclass

from edgeopt.compiler.formats._base import (
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

    format = "dense"


@register_format
class DenseHandler(FormatHandler):
    config_cls = DenseConfig

    def cost(self, spec: LayerSpec, config: FormatConfig) -> LayerCost:
        return LayerCost("dense", spec.params, spec.macs)

    def build(self, module, spec, config):
        return module, make_report(spec, "dense", self.cost(spec, config), 0.0)
