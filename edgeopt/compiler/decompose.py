"""``decompose(model, plan)``: the one verb that turns dense layers into smaller formats.

Also ``plan_cost`` (size and MACs of a plan, without building anything), ``decomposable_layers``
(what the search may change, and how far) and ``layer_reports`` (what a student's layers became).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeopt.compiler.analysis import (
    _Analysis,
    _analyze,
    _as_input,
    _resolve,
    decomposable_layers,
    left_alone,
    normalize_plan,
)
from edgeopt.compiler.attention import swap_attention
from edgeopt.compiler.formats import (
    FormatConfig,
    LayerCost,
    LayerReport,
    get_handler,
    make_report,
)
from edgeopt.compiler.formats._base import BYTES_PER_PARAM
from edgeopt.errors import InputError, ModelError

# Each built layer's report, keyed by the module: nothing is set on torch's objects, and a report goes
# when its module does.
_REPORTS: weakref.WeakKeyDictionary[nn.Module, LayerReport] = weakref.WeakKeyDictionary()

__all__ = [
    "OneLayerStudents",
    "PlanCost",
    "decompose",
    "decomposable_layers",
    "layer_reports",
    "left_alone",
    "normalize_plan",
    "plan_cost",
]


@dataclass(frozen=True)
class PlanCost:
    """Size and compute of a model under a plan, from shapes alone (no SVD, nothing built).

    ``params`` counts every parameter of the model, ``size_bytes`` is them at float32 plus the
    buffers, ``macs`` the multiply-adds per sample of every Linear and Conv (other layers are
    ignored). ``exact`` is False when a tolerance rank makes a layer's cost an upper bound.
    """

    params: int
    size_bytes: int
    macs: int
    layers: dict[str, LayerCost] = field(default_factory=dict)
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["layers"] = {k: v.to_dict() for k, v in self.layers.items()}
        return d


def plan_cost(model: nn.Module, plan: Mapping[str, Any] | None, example_input: Any = None) -> PlanCost:
    """Params, float32 size and MACs per sample of ``decompose(model, plan)``, without building it.

    Ranks given as a tolerance need the weights' spectra; for them the bond maxima are used (an
    upper bound) and ``PlanCost.exact`` is False.
    """
    analysis = _analyze(model, example_input)
    resolved = _resolve(analysis, normalize_plan(plan))
    params, macs, exact, layers = analysis.params, analysis.other_macs, True, {}
    for name, spec in analysis.specs.items():
        if name in resolved:
            config = resolved[name][0]
            cost = get_handler(config).cost(spec, config)
            layers[name] = cost
            params += cost.params - spec.params
            macs += cost.macs
            exact = exact and cost.exact
        else:
            macs += spec.macs
    return PlanCost(
        params=params,
        size_bytes=params * BYTES_PER_PARAM + analysis.buffer_bytes,
        macs=macs,
        layers=layers,
        exact=exact,
    )


def _parents(model: nn.Module, target: nn.Module) -> list[tuple[nn.Module, str]]:
    out = []
    for _, parent in model.named_modules(remove_duplicate=True):
        for attr, child in parent._modules.items():
            if child is target:
                out.append((parent, attr))
    return out


def decompose(model: nn.Module, plan: Mapping[str, Any] | None, *, example_input: Any = None) -> nn.Module:
    """Return a copy of ``model`` whose layers named in ``plan`` are replaced by their formats.

    Parameters
    ----------
    model : torch.nn.Module
        The trained teacher; it is left untouched. In the copy, every supported
        ``nn.MultiheadAttention`` is an equivalent ``LinearAttention`` whose four projections are
        plain ``nn.Linear`` layers a plan can name (``encoder.layers.0.self_attn.q_proj``).
    plan : dict
        Layer name (as in ``model.named_modules()``) -> ``{"format": "lowrank", "rank": 32}``,
        ``{"format": "tt", "rank": [1, 8, 1]}`` (or ``"rank": 8``, or ``"rank": 0.05`` for a
        relative error; ``"ranks"`` is read as a deprecated alias), ``{"format": "prune", "rank":
        16}`` (16 output channels kept), ``{"format": "dense"}``, a ``FormatConfig`` or a format name.
    example_input : tensor or shape, optional
        Traced by the prune format (which needs it); gives conv layers' MACs.

    Returns
    -------
    torch.nn.Module
        The student. :func:`layer_reports` gives each decomposed layer's :class:`LayerReport`. A module
        reachable under several names (tied) stays shared.
    """
    configs = normalize_plan(plan)
    student = copy.deepcopy(model)
    swap_attention(student)  # nn.MultiheadAttention -> LinearAttention (same function, plain Linear projections)
    analysis = _analyze(student, example_input)
    resolved = _resolve(analysis, configs)
    if any(get_handler(cfg).graph_level for cfg, _ in resolved.values()):
        analysis, resolved = _apply_graph_formats(student, analysis, resolved, example_input)
    modules = dict(student.named_modules())
    for canonical, (config, _names) in resolved.items():
        old = modules[canonical]
        try:
            new, report = get_handler(config).build(old, analysis.specs[canonical], config)
        except Exception as exc:
            if isinstance(exc, (InputError, ModelError)):
                raise
            raise ModelError(
                f"Layer '{canonical}': building the '{config.format}' format failed: {type(exc).__name__}: {exc}"
            ) from exc
        all_names = tuple(sorted(n for n, c in analysis.aliases.items() if c == canonical and n != canonical))
        _REPORTS[new] = dataclasses.replace(report, aliases=all_names)
        if new is not old:
            new.train(old.training)
            for p in new.parameters():
                p.requires_grad_(old.weight.requires_grad)
            for parent, attr in _parents(student, old):
                setattr(parent, attr, new)
    if resolved:
        _check_forward(student, _as_input(example_input), sorted(resolved), model.training)
    return student


class OneLayerStudents:
    """Students that each differ from ``model`` in one layer's per-layer format (low-rank, TT, dense,
    not a graph-level one such as prune), for measuring many of them in turn: one copy of the model and
    one analysis serve every student, and :meth:`replaced` swaps the layer in and back out, where
    :func:`decompose` would copy and analyze the whole model per student (on MobileNetV3 the copies and
    analyses were half of the tables' sensitivity time). ``model`` is left untouched."""

    def __init__(self, model: nn.Module, example_input: Any = None) -> None:
        self.base = copy.deepcopy(model).eval()
        swap_attention(self.base)
        self.analysis = _analyze(self.base, example_input)

    @staticmethod
    def supports(entry: Any) -> bool:
        """Whether ``entry`` is a per-layer format (:meth:`replaced` builds it); a graph-level one needs
        :func:`decompose`."""
        return not any(get_handler(cfg).graph_level for cfg in normalize_plan({"_": entry}).values())

    @contextlib.contextmanager
    def replaced(self, name: str, entry: Any) -> Any:
        """The model with layer ``name`` in format ``entry``, for the ``with`` block only."""
        resolved = _resolve(self.analysis, normalize_plan({name: entry}))
        modules = dict(self.base.named_modules())
        swaps = []
        try:
            for canonical, (config, _names) in resolved.items():
                if get_handler(config).graph_level:
                    raise ValueError(f"{config.format!r} is a graph-level format: use decompose()")
                old = modules[canonical]
                new, _report = get_handler(config).build(old, self.analysis.specs[canonical], config)
                if new is not old:
                    new.eval()
                    for parent, attr in _parents(self.base, old):
                        setattr(parent, attr, new)
                        swaps.append((parent, attr, old))
            yield self.base
        finally:
            for parent, attr, old in reversed(swaps):
                setattr(parent, attr, old)


def _check_forward(
    student: nn.Module, inputs: tuple[torch.Tensor, ...] | None, layers: list[str], training: bool
) -> None:
    """The student runs on the example input (when there is one), and is left in the teacher's mode."""
    if inputs is None:
        return
    try:
        with torch.no_grad():
            student.eval()(*inputs)
    except Exception as exc:
        raise ModelError(
            f"The decomposed model fails on example_input ({type(exc).__name__}: {exc}); its forward "
            f"probably reads a replaced layer's weight directly (layers: {layers})."
        ) from exc
    finally:
        student.train(training)


def _apply_graph_formats(
    student: nn.Module,
    analysis: _Analysis,
    resolved: dict[str, tuple[FormatConfig, list[str]]],
    example: Any,
) -> tuple[_Analysis, dict[str, tuple[FormatConfig, list[str]]]]:
    """Prune ``student`` in place for every graph-level entry (``prune``), give each pruned layer its
    report, and return the analysis of the narrower model (the per-layer formats are built on it)
    with the entries left to build."""
    from edgeopt.compiler.prune import prune_channels

    inputs = _as_input(example)
    graph = {c: cfg for c, (cfg, _) in resolved.items() if get_handler(cfg).graph_level}
    modules = dict(student.named_modules())
    norms = {c: float(modules[c].weight.detach().double().norm()) for c in graph}
    prune_channels(student, {c: int(cfg.rank) for c, cfg in graph.items()}, None if inputs is None else inputs[0])
    after = _analyze(student, example)
    for c, cfg in graph.items():
        m, spec = modules[c], analysis.specs[c]
        kept = float(m.weight.detach().double().norm())
        err = math.sqrt(max(0.0, 1 - (kept / norms[c]) ** 2)) if norms[c] > 0 else 0.0
        params = sum(p.numel() for p in m.parameters(recurse=False))
        now = after.specs.get(c, spec)
        cost = LayerCost(cfg.format, params, now.macs, (1, now.out_size, 1), exact=True)
        _REPORTS[m] = make_report(spec, cfg.format, cost, err)
    return after, {c: v for c, v in resolved.items() if not get_handler(v[0]).graph_level}


def layer_reports(student: nn.Module) -> list[LayerReport]:
    """The :class:`LayerReport` of every layer ``decompose`` touched, in module order."""
    out = []
    for name, m in student.named_modules():
        report = _REPORTS.get(m)
        if report is not None:
            out.append(dataclasses.replace(report, name=name) if name and name != report.name else report)
    return out
