"""What a model offers a plan: its decomposable layers (:func:`decomposable_layers`), the layers left
alone and why (:func:`left_alone`), and a plan's entries checked against them (:func:`normalize_plan`)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeopt.compiler.attention import attention_refusal, swap_attention
from edgeopt.compiler.formats import FormatConfig, LayerSpec, get_handler, parse_config, registered_formats
from edgeopt.errors import InputError, ModelError

_LEFT_ALONE: tuple[tuple[type, str], ...] = (
    (nn.Embedding, "embeddings are table lookups, not matrix products"),
    (nn.EmbeddingBag, "embeddings are table lookups, not matrix products"),
    (nn.RNNBase, "recurrent layers keep their gate structure (not supported)"),
    (
        nn.MultiheadAttention,
        "this attention's configuration has no plain-Linear equivalent (add_bias_kv or "
        "add_zero_attn); supported ones are swapped for LinearAttention",
    ),
    (nn.modules.batchnorm._NormBase, "normalization layers have no matrix to decompose"),
    (nn.LayerNorm, "normalization layers have no matrix to decompose"),
    (nn.GroupNorm, "normalization layers have no matrix to decompose"),
    (nn.modules.conv._ConvTransposeNd, "transposed convolutions are not supported"),
    (nn.Conv3d, "3-D convolutions are not supported"),
)


@dataclass
class _Analysis:
    specs: dict[str, LayerSpec]  # canonical name -> spec, decomposable layers only
    refused: dict[str, str]  # name -> why it is left alone
    aliases: dict[str, str]  # every name of a module -> its canonical (first) name
    params: int
    buffer_bytes: int
    other_macs: int  # MACs of linear/conv layers that are not decomposable (grouped convs, ...)


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, nn.Conv1d):
        return "conv1d"
    if isinstance(m, nn.Conv2d):
        return "conv2d"
    return None


def _refusal(m: nn.Module) -> str | None:
    for cls, why in _LEFT_ALONE:
        if isinstance(m, cls):
            return why
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups != 1:
        return f"grouped/depthwise convolutions (groups={m.groups}) are left alone"
    if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
        return "its parameters are not initialized yet (run the model once first)"
    if _kind(m) is None:
        return f"{type(m).__name__} is not a Linear, Conv1d or Conv2d layer"
    return None


def _as_input(example_input: Any) -> tuple[torch.Tensor, ...] | None:
    if example_input is None:
        return None
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)) and example_input and all(isinstance(v, int) for v in example_input):
        return (torch.zeros(*example_input),)
    if isinstance(example_input, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in example_input):
        return tuple(example_input)
    try:
        import numpy as np

        if isinstance(example_input, np.ndarray):
            return (torch.as_tensor(example_input, dtype=torch.float32),)
    except ImportError:  # pragma: no cover
        pass
    raise InputError(
        f"example_input must be a tensor, a tuple of tensors or an input shape (ints). "
        f"Got {type(example_input).__name__} instead."
    )


def _positions(model: nn.Module, inputs: tuple[torch.Tensor, ...] | None) -> dict[int, list[int]]:
    """id(module) -> [input positions, output positions] per sample, summed over every call."""
    if inputs is None:
        return {}
    seen: dict[int, list[int]] = {}
    batch = inputs[0].shape[0] if inputs[0].dim() > 0 else 1

    def hook(mod, args, out):
        x = args[0]
        acc = seen.setdefault(id(mod), [0, 0])
        if isinstance(mod, nn.Linear):
            p = x.numel() // (x.shape[-1] * batch)
            acc[0] += p
            acc[1] += p
        else:
            acc[0] += math.prod(x.shape[2:])
            acc[1] += math.prod(out.shape[2:])

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
    ]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    except Exception as exc:
        raise ModelError(
            f"The model failed on example_input of shape {[tuple(t.shape) for t in inputs]}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    return seen


def _dense_cost(m: nn.Module, pos: list[int] | None) -> tuple[int, int | None]:
    params = sum(p.numel() for p in m.parameters(recurse=False))
    if isinstance(m, nn.Linear):
        return params, m.in_features * m.out_features * (pos[1] if pos else 1)
    w = m.weight
    per_pos = w.shape[0] * math.prod(w.shape[1:])
    return params, per_pos * pos[1] if pos else None


def _with_plain_attention(model: nn.Module) -> nn.Module:
    """``model`` itself, or a copy whose ``nn.MultiheadAttention`` are :class:`LinearAttention` (same names
    plus ``.q_proj``/``.k_proj``/``.v_proj``/``.out_proj``), so their projections can be named in a plan."""
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return model
    view = copy.deepcopy(model)
    swap_attention(view)
    return view


def _analyze(model: nn.Module, example_input: Any = None) -> _Analysis:
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module. Got {type(model).__name__} instead.")
    model = _with_plain_attention(model)
    positions = _positions(model, _as_input(example_input))
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if name:
            aliases[name] = first.setdefault(id(m), name)
    specs: dict[str, LayerSpec] = {}
    refused: dict[str, str] = {}
    other = 0
    mods = dict(model.named_modules())
    owners = [n + "." for n, m in mods.items() if n and isinstance(m, nn.MultiheadAttention)]
    for name, m in model.named_modules():
        if not name:
            continue
        why = _refusal(m)
        if why is None and any(name.startswith(o) for o in owners):
            owner = next(mods[o[:-1]] for o in owners if name.startswith(o))
            why = (
                f"it belongs to a MultiheadAttention that reads its weights directly and cannot be swapped for "
                f"plain Linears ({attention_refusal(owner)})"
            )
        if why is not None:
            refused[name] = why
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not isinstance(m, nn.modules.lazy.LazyModuleMixin):
                other += _dense_cost(m, positions.get(id(m)))[1] or 0
            continue
        pos = positions.get(id(m))
        kind = _kind(m)
        params, macs = _dense_cost(m, pos)
        linear = kind == "linear"
        spec = LayerSpec(
            name=name,
            kind=kind,
            in_size=m.in_features if linear else m.in_channels,
            out_size=m.out_features if linear else m.out_channels,
            kernel_size=() if linear else tuple(m.kernel_size),
            bias=m.bias is not None,
            in_positions=(pos[0] if pos else 1) if linear else (pos[0] if pos else None),
            out_positions=(pos[1] if pos else 1) if linear else (pos[1] if pos else None),
            params=params,
            macs=macs if macs is not None else m.weight.numel(),
            formats=(),
        )
        specs[name] = _with_formats(spec)
    params = sum(p.numel() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return _Analysis(specs, refused, aliases, params, buffer_bytes, other)


def _with_formats(spec: LayerSpec) -> LayerSpec:
    """``spec`` with the registered formats that accept it, their rank caps and why the others refuse."""
    formats, max_rank, notes, extra = [], {}, {}, {}
    for fmt in registered_formats():
        handler = get_handler(fmt)
        reason = handler.check(spec)
        if reason is not None:
            notes[fmt] = reason
            continue
        formats.append(fmt)
        r = handler.max_rank(spec)
        if r is not None:
            max_rank[fmt] = r
        extra.update(handler.spec_fields(spec))
    return dataclasses.replace(spec, formats=tuple(formats), max_rank=max_rank, notes=notes, **extra)


def decomposable_layers(model: nn.Module, example_input: Any = None) -> dict[str, LayerSpec]:
    """The layers a plan may name, keyed as in ``model.named_modules()``, with what each allows.

    Grouped/depthwise convs, recurrent layers, embeddings and normalization layers are absent.
    ``nn.MultiheadAttention`` is seen as the :class:`~edgeopt.compiler.attention.LinearAttention` that
    ``decompose`` swaps it for: its projections appear as ``<name>.q_proj``, ``.k_proj``, ``.v_proj``
    and ``.out_proj`` (``model`` is not changed). A tied module appears once, under its first name.
    Conv MACs need ``example_input`` (a tensor or an input shape such as ``(1, 3, 32, 32)``); without it
    they count one output position.
    """
    return _analyze(model, example_input).specs


def left_alone(model: nn.Module, example_input: Any = None) -> dict[str, str]:
    """The modules with weights of their own that no plan may decompose (depthwise convolutions,
    normalization, recurrent layers, embeddings, ...), each with the reason, as the report shows them."""
    analysis = _analyze(model, example_input)
    mods = dict(_with_plain_attention(model).named_modules())
    return {
        name: why
        for name, why in analysis.refused.items()
        if name in mods and any(True for _ in mods[name].parameters(recurse=False))
    }


def normalize_plan(plan: Mapping[str, Any] | None) -> dict[str, FormatConfig]:
    """Validate every entry of a plan (dicts, configs or format names) into configs."""
    if plan is None:
        return {}
    if not isinstance(plan, Mapping):
        raise InputError(f"A plan must be a dict mapping layer names to formats. Got {type(plan).__name__} instead.")
    out = {}
    for name, entry in plan.items():
        if not isinstance(name, str):
            raise InputError(f"Plan keys must be layer names (str). Got {name!r} instead.")
        out[name] = parse_config(entry, layer=name)
    return out


def _resolve(analysis: _Analysis, configs: dict[str, FormatConfig]) -> dict[str, tuple[FormatConfig, list[str]]]:
    """canonical name -> (config, plan names that refer to it), with clear errors."""
    resolved: dict[str, tuple[FormatConfig, list[str]]] = {}
    for name, config in configs.items():
        canonical = analysis.aliases.get(name)
        if canonical is None:
            known = ", ".join(sorted(analysis.specs)) or "(none)"
            raise ModelError(f"Layer '{name}' named in the plan is not in the model; decomposable layers: {known}.")
        if canonical in analysis.refused:
            raise ModelError(f"Layer '{name}' cannot be decomposed: {analysis.refused[canonical]}.")
        spec = analysis.specs[canonical]
        if config.format not in spec.formats:
            reason = spec.notes.get(config.format, "not allowed")
            raise ModelError(
                f"Layer '{name}' ({spec.kind} {spec.out_size}x{spec.in_size}) cannot use the "
                f"'{config.format}' format: {reason}."
            )
        if canonical in resolved:
            prev, names = resolved[canonical]
            if prev != config:
                raise ModelError(
                    f"Layer '{name}' is the same module as '{names[0]}' (tied) but the plan gives "
                    f"them different formats: {config.to_dict()} vs {prev.to_dict()}."
                )
            names.append(name)
        else:
            resolved[canonical] = (config, [name])
    return resolved
