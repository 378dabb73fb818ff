"""Verification of an exported graph: onnxruntime's outputs against torch's on the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeopt.errors import ModelError
from edgeopt.runtime.session import Runtime, open_session

_VERIFY_RUNTIME = Runtime(intra_op_threads=1, inter_op_threads=1)  # one thread: the check is not a benchmark


def torch_outputs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().float().numpy() for o in outs]


def _verify(model: nn.Module, path: Path, feeds: list[tuple[str, tuple[torch.Tensor, ...]]], rtol: float) -> float:
    """Compare onnxruntime with torch on each feed; raise ModelError on the first mismatch."""
    sess = open_session(path, _VERIFY_RUNTIME)
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for label, inputs in feeds:
        ref = torch_outputs(model, inputs)
        got = sess.run(None, {n: t.cpu().numpy() for n, t in zip(names, inputs)})
        for k, (a, b) in enumerate(zip(got, ref)):
            if a.shape != b.shape:
                raise ModelError(f"ONNX output {k} has shape {a.shape} on {label} inputs; torch gives {b.shape}.")
            scale = float(np.abs(b).max()) if b.size else 0.0
            dev = float(np.abs(a.astype(np.float64) - b).max()) if b.size else 0.0
            if not np.isfinite(a).all() or dev > rtol * max(scale, 1e-6):
                raise ModelError(
                    f"ONNX output {k} differs from torch on {label} inputs: max |diff| {dev:.3g} "
                    f"> {rtol:g} x max |output| {scale:.3g}."
                )
            worst = max(worst, dev / max(scale, 1e-6))
    return worst


def verify_or_note(
    model: nn.Module, tmp: Path, feeds: list, rtol: float, exporter: str, errors: list[str]
) -> float | None:
    """The worst relative deviation from torch, or None when the graph does not verify (reason added to ``errors``)."""
    try:
        return _verify(model, tmp, feeds, rtol)
    except ModelError as exc:
        errors.append(f"{exporter} exporter: {exc}")
        return None


def verify_feeds(
    inputs: tuple[torch.Tensor, ...], real: tuple[torch.Tensor, ...] | None
) -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """Seeded random inputs at batch 1 and 3 (integer inputs repeat the example), and the real ones if given."""
    gen = torch.Generator().manual_seed(0)
    feeds = []
    for b in (1, 3):
        feeds.append(
            (
                f"random batch-{b}",
                tuple(
                    torch.randn((b, *t.shape[1:]), generator=gen)
                    if t.is_floating_point()
                    else t[:1].expand(b, *t.shape[1:])
                    for t in inputs
                ),
            )
        )
    if real is not None:
        feeds.append(("the given real", real))
    return feeds
