"""Decomposition formats: one config and one registered handler per format.

Adding a format: write ``_myformat.py`` with a frozen ``FormatConfig`` subclass (``format = "name"``,
validated in ``__post_init__``) and a ``FormatHandler`` subclass decorated with
:func:`register_format`, and import it below. Nothing else changes.
"""

from edgeopt.compiler.formats._base import (
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerReport,
    LayerSpec,
    get_handler,
    parse_config,
    register_format,
    registered_formats,
)
from edgeopt.compiler.formats._dense import DenseConfig
from edgeopt.compiler.formats._lowrank import LowRankConfig
from edgeopt.compiler.formats._ranks import resolve_ranks, validate_rank_spec
from edgeopt.compiler.formats._tt import TTConfig, balanced_factors, choose_modes

__all__ = [
    "DenseConfig",
    "FormatConfig",
    "FormatHandler",
    "LayerCost",
    "LayerReport",
    "LayerSpec",
    "LowRankConfig",
    "TTConfig",
    "balanced_factors",
    "choose_modes",
    "get_handler",
    "parse_config",
    "register_format",
    "registered_formats",
    "resolve_ranks",
    "validate_rank_spec",
]
