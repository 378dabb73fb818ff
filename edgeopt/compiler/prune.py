"""Structured pruning through torch-pruning's dependency graph (the ``prune`` format's engine).

``prune_channels(model, {layer: channels kept}, example)`` removes, in place, the output channels
of each named layer with the smallest group L2 norm, and with them every coupled channel that the
dependency graph finds: BatchNorm and depthwise-conv channels, consumers' input channels, the other
branches of a residual addition. The model stays a plain ``nn.Module`` (narrower Conv/Linear/BN),
so export and onnxruntime need nothing new.

A layer whose pruning would change the model's output (the classifier, or a layer tied to it) or
break its forward (an attention projection, whose heads are reshaped by channel count) is refused
with a :class:`~edgeopt.errors.ModelError` that names it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from edgeopt.errors import ModelError

__all__ = ["prune_channels"]


def _out_size(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _graph(model: nn.Module, example: torch.Tensor) -> Any:
    import torch_pruning as tp

    with warnings.catch_warnings(), torch.enable_grad():  # the graph is traced through autograd
        warnings.simplefilter("ignore")  # torch-pruning warns about every unwrapped parameter it skips
        return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)


def _prune_one(dg: Any, model: nn.Module, name: str, keep: int) -> None:
    import torch_pruning as tp

    m = model.get_submodule(name)
    out = _out_size(m)
    if keep >= out:
        return  # an earlier layer of its group already took it to (or below) this width
    fn = tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels
    group = dg.get_pruning_group(m, fn, idxs=list(range(out)))
    scores = tp.importance.GroupMagnitudeImportance(p=2)(group)
    if scores is None:
        raise ModelError(f"Layer '{name}': torch-pruning found no prunable channels in its dependency group.")
    drop = torch.argsort(scores)[: out - keep].tolist()
    group = dg.get_pruning_group(m, fn, idxs=sorted(drop))
    if not dg.check_pruning_group(group):
        raise ModelError(f"Layer '{name}': pruning to {keep} channels would leave a coupled layer with none.")
    group.prune()


def prune_channels(model: nn.Module, keep: dict[str, int], example: Any) -> nn.Module:
    """Prune ``model`` in place: layer name -> output channels kept; returns it.

    Layers are pruned in model order, on one dependency graph; a layer coupled to one pruned before
    it (the same residual group) keeps the narrower of the two widths.
    """
    if not keep:
        return model
    if example is None:
        raise ModelError(
            "the 'prune' format needs an example input to trace the model "
            f"(layers {sorted(keep)}): pass example_input to decompose"
        )
    example = torch.as_tensor(example)[:1]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = model(example)
    try:
        dg = _graph(model, example)
        order = [n for n, _ in model.named_modules() if n in keep]
        for name in order:
            _prune_one(dg, model, name, int(keep[name]))
        with torch.no_grad():
            after = model(example)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"Layer(s) {sorted(keep)}: pruning through the dependency graph failed "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc
    finally:
        model.train(was_training)
    if after.shape != before.shape:
        raise ModelError(
            f"Layer(s) {sorted(keep)}: pruning changes the model's output shape "
            f"{tuple(before.shape)} -> {tuple(after.shape)}; the layer feeds the output"
        )
    return model
