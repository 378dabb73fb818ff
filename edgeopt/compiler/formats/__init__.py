"""Decomposition formats: one config and one registered handler per format.

Adding a format: write ``_myformat.py`` with a frozen ``FormatConfig`` subclass (``format = "name"``,
a ``rank`` field if it has one, validated in ``__post_init__``) and a ``FormatHandler`` subclass
(``build``, ``cost``, ``onnx_node_count``; ``max_rank`` and ``search_rank_limit`` if it has a rank)
decorated with :func:`register_format`, and import it below. Nothing else changes: the search
space, ``plan_cost``, ``decompose``, export and the report reach it through the registry
(``registered_handlers``, ``get_handler``) and the module functions ``short_label``, ``rank_text`` and
``layer_onnx_node_count``. ``tests/compiler/test_format_contract.py`` shows it with a format
defined only in the test.
"""

from edgeopt.compiler.formats._base import (
    DEFAULT_FORMAT,
    RANK_KEY,
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerReport,
    LayerSpec,
    get_handler,
    layer_onnx_node_count,
    make_report,
    parse_config,
    rank_text,
    register_format,
    registered_formats,
    registered_handlers,
    rel_error,
    short_label,
    unregister_format,
)
from edgeopt.compiler.formats._dense import DenseConfig
from edgeopt.compiler.formats._lowrank import LowRankConfig
from edgeopt.compiler.formats._precision import (
    PRECISION_KEY,
    PRECISIONS,
    all_int8,
    fp32_plan,
    int8_layers,
    is_dense_plan,
    precision_of,
    with_precision,
)
from edgeopt.compiler.formats._ranks import resolve_ranks, validate_rank_spec
from edgeopt.compiler.formats._tt import TTConfig, balanced_factors, choose_modes

# isort: off
from edgeopt.compiler.formats._prune import PruneConfig  # registered last: the ladder offers it after lowrank and tt
# isort: on

__all__ = [
    "DEFAULT_FORMAT",
    "PRECISIONS",
    "PRECISION_KEY",
    "RANK_KEY",
    "DenseConfig",
    "FormatConfig",
    "FormatHandler",
    "LayerCost",
    "LayerReport",
    "LayerSpec",
    "LowRankConfig",
    "PruneConfig",
    "TTConfig",
    "balanced_factors",
    "choose_modes",
    "all_int8",
    "fp32_plan",
    "get_handler",
    "is_dense_plan",
    "int8_layers",
    "layer_onnx_node_count",
    "make_report",
    "parse_config",
    "precision_of",
    "rank_text",
    "register_format",
    "registered_formats",
    "registered_handlers",
    "rel_error",
    "resolve_ranks",
    "short_label",
    "unregister_format",
    "validate_rank_spec",
    "with_precision",
]
