"""Verified ONNX export: ``export_onnx(model, example_input, path) -> Path``.

``export_onnx_info`` does the same and also says what happened (:class:`ExportInfo`: exporter,
seconds, node count, deviation from torch).

Exporter choice, measured on the seed-size MLP (torch 2.13): the TorchScript exporter
(``dynamo=False``) takes ~10 ms per model, the dynamo exporter ~0.8 s; both give the same graph
once the TorchScript exporter's ``Constant`` nodes are turned into initializers. The search
exports many students, so ``exporter="auto"`` uses TorchScript first and falls back to dynamo when
TorchScript fails or its graph does not reproduce torch's outputs in onnxruntime (it is known to
mis-export some ops silently, which is why every export is verified).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt._validate import choice, fail, number
from edgeopt._version import __version__
from edgeopt.compiler._verify import torch_outputs, verify_feeds, verify_or_note
from edgeopt.errors import ModelError

__all__ = ["ExportInfo", "export_onnx", "export_onnx_info", "onnx_node_count", "onnx_op_counts"]

log = logging.getLogger("edgeopt.export")

_EXPORTERS = ("auto", "torchscript", "dynamo")


@dataclass(frozen=True)
class ExportInfo:
    """What one ``export_onnx_info`` call did."""

    path: Path
    exporter: str  # "torchscript" or "dynamo": the one whose graph was written
    export_s: float  # that exporter's own time
    total_s: float  # export, clean-up, checks and verification
    nodes: int  # nodes of the written graph
    max_rel_deviation: float | None  # worst |onnxruntime - torch| / max |torch output|; None unverified


def _load(model_or_path: Any):
    import onnx

    return model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))


def onnx_op_counts(model_or_path: Any) -> Counter:
    """Node count per op type of the main graph."""
    return Counter(n.op_type for n in _load(model_or_path).graph.node)


def onnx_node_count(model_or_path: Any) -> int:
    return len(_load(model_or_path).graph.node)


def _as_inputs(example_input: Any, key: str = "example_input") -> tuple[torch.Tensor, ...]:
    if isinstance(example_input, torch.Tensor):
        items: Sequence = (example_input,)
    elif isinstance(example_input, np.ndarray):
        items = (torch.as_tensor(example_input),)
    elif (
        isinstance(example_input, (tuple, list))
        and example_input
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in example_input)
    ):
        items = [torch.as_tensor(v) for v in example_input]
    else:
        raise fail("export_onnx()", key, "a tensor, an array or a tuple of them", example_input)
    if any(t.dim() == 0 for t in items):
        raise fail("export_onnx()", key, "a batch dimension (dim 0)", "a scalar")
    return tuple(t.detach().float() if t.is_floating_point() else t.detach() for t in items)


@contextlib.contextmanager
def _quiet():
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


@contextlib.contextmanager
def _no_ir_dump():
    """Keep the TorchScript exporter from printing its IR graph when it fails.

    torch (2.7 to at least 2.13) prints "Torch IR graph at exception: ..." (thousands of lines for
    a transformer) to stdout from C++ whenever ONNX logging is on, and its
    ``setup_onnx_logging`` turns logging on for every export and leaves it on: it tests the
    function ``_C._jit_is_onnx_log_enabled`` instead of calling it. Here logging stays at the
    caller's setting during the export, and is restored afterwards.
    """
    try:
        from torch.onnx._internal.torchscript_exporter import utils as ts_utils
    except ImportError:  # another torch layout: nothing to patch
        yield
        return
    original = getattr(ts_utils, "setup_onnx_logging", None)
    was = torch._C._jit_is_onnx_log_enabled()

    @contextlib.contextmanager
    def setup_onnx_logging(verbose: bool):
        torch._C._jit_set_onnx_log_enabled(bool(verbose) or was)
        try:
            yield
        finally:
            torch._C._jit_set_onnx_log_enabled(was)

    if original is not None:
        ts_utils.setup_onnx_logging = setup_onnx_logging
    try:
        yield
    finally:
        if original is not None:
            ts_utils.setup_onnx_logging = original
        torch._C._jit_set_onnx_log_enabled(was)


@contextlib.contextmanager
def _layer_tracker(model: nn.Module, stack: list[str]):
    """Keep the names of the modules being run, so a failure can name its layer."""

    def pre(name):
        return lambda mod, args: stack.append(name)

    def post(mod, args, out):
        if stack:
            stack.pop()

    handles = []
    for name, m in model.named_modules():
        if name:
            handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _export(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    exporter: str,
    opset: int,
    in_names: list[str],
    out_names: list[str],
) -> None:
    with _quiet():
        if exporter == "torchscript":
            axes = {n: {0: "batch"} for n in [*in_names, *out_names]}
            with _no_ir_dump():
                torch.onnx.export(
                    model,
                    inputs,
                    str(path),
                    dynamo=False,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_axes=axes,
                    opset_version=opset,
                    do_constant_folding=True,
                )
        else:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                model,
                inputs,
                str(path),
                dynamo=True,
                input_names=in_names,
                output_names=out_names,
                dynamic_shapes=tuple({0: batch} for _ in inputs),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )


def _cleanup(proto) -> None:
    """Constant nodes -> initializers (they are not work), and drop unused initializers."""
    from onnx import numpy_helper

    graph = proto.graph
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)


def export_onnx(model: nn.Module, example_input: Any, path: str | os.PathLike, **options: Any) -> Path:
    """Export ``model`` to ONNX at ``path``, checked and verified against torch, written atomically.

    Returns the written path; the options are :func:`export_onnx_info`'s, which also says which
    exporter ran, its time, the node count and the deviation from torch.
    """
    return export_onnx_info(model, example_input, path, **options).path


def export_onnx_info(
    model: nn.Module,
    example_input: Any,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    opset: int = 18,
    verify: bool = True,
    verify_inputs: Any = None,
    rtol: float = 1e-4,
    exporter: str = "auto",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> ExportInfo:
    """Export ``model`` to ONNX at ``path``, checked and verified against torch, written atomically;
    returns the written path, the exporter that wrote it, its time, the node count, the deviation.

    Parameters
    ----------
    model : torch.nn.Module
        Exported in eval mode (its train/eval flags are restored afterwards).
    example_input : tensor, array or tuple of them
        Fixes every shape but the batch (dim 0), which is a dynamic axis named ``batch``.
    path : path
        Where the ``.onnx`` file goes; written to a temporary file first, renamed when verified.
    metadata : dict, optional
        Added to ``metadata_props`` next to ``edgeopt_version`` and ``exporter`` (non-str values as JSON).
    opset : int
        ONNX opset, >= 17.
    verify : bool
        Run ``onnx.checker`` and compare onnxruntime with torch (max |diff| <= rtol x max |output|)
        on seeded random inputs at batch 1 and 3, and on ``verify_inputs`` (real data) if given.
    exporter : {"auto", "torchscript", "dynamo"}
        "auto": TorchScript (fast), falling back to dynamo if it fails or does not verify.
    """
    choice(exporter, "export_onnx()", "exporter", _EXPORTERS)
    number(opset, "export_onnx()", "opset", minimum=17, integer=True)
    if not isinstance(model, nn.Module):
        raise fail("export_onnx()", "model", "a torch.nn.Module", type(model).__name__)
    inputs = _as_inputs(example_input)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    in_names, trace_inputs = _trace_inputs(inputs, input_names)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    real = None if verify_inputs is None else _as_inputs(verify_inputs, "verify_inputs")
    feeds = verify_feeds(inputs, real) if verify else []
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        names = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
        graph = (trace_inputs, opset, in_names, output_names, metadata)
        return _first_verified(model, names, graph, tmp, path, feeds if verify else None, rtol)
    finally:
        for m, t in modes.items():
            m.training = t
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _first_verified(
    model: nn.Module, names: list[str], graph: tuple, tmp: Path, path: Path, feeds: list | None, rtol: float
) -> ExportInfo:
    """The first exporter of ``names`` whose graph is written, checked and (``feeds`` not None) verified,
    renamed from ``tmp`` to ``path``; ModelError with every exporter's reason when none is."""
    trace_inputs, opset, in_names, output_names, metadata = graph
    errors: list[str] = []
    for name in names:
        t0 = time.perf_counter()
        export_s = _run_exporter(model, trace_inputs, tmp, name, opset, in_names, output_names, errors)
        if export_s is None:
            continue
        written = _finish_graph(tmp, name, opset, metadata, errors)
        if written is None:
            continue
        deviation = verify_or_note(model, tmp, feeds, rtol, name, errors) if feeds is not None else None
        if feeds is not None and deviation is None:
            continue
        os.replace(tmp, path)
        if errors:  # a fallback: one line, not the failed exporter's output
            log.info("ONNX export of %s: %s; used the %s exporter", type(model).__name__, errors[-1], name)
        return ExportInfo(path, name, export_s, time.perf_counter() - t0, written, deviation)
    raise ModelError(f"ONNX export of {type(model).__name__} failed: " + " | ".join(errors))


def _trace_inputs(
    inputs: tuple[torch.Tensor, ...], input_names: Sequence[str] | None
) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """The graph's input names, and the inputs to trace with: batch 2, since the dynamo exporter
    specializes a size-1 dim to a constant."""
    in_names = (
        list(input_names)
        if input_names
        else (["input"] if len(inputs) == 1 else [f"input_{i}" for i in range(len(inputs))])
    )
    return in_names, tuple(t[:1].expand(2, *t.shape[1:]).contiguous() if t.shape[0] == 1 else t for t in inputs)


def _run_exporter(
    model: nn.Module,
    trace_inputs: tuple[torch.Tensor, ...],
    tmp: Path,
    name: str,
    opset: int,
    in_names: list[str],
    output_names: Sequence[str] | None,
    errors: list[str],
) -> float | None:
    """Run one exporter into ``tmp``; its seconds, or None (the reason, naming the layer, added to ``errors``)."""
    t0 = time.perf_counter()
    stack: list[str] = []
    try:
        with _layer_tracker(model, stack), torch.no_grad():
            out_names = list(output_names) if output_names else None
            if out_names is None:
                n_out = len(torch_outputs(model, trace_inputs))
                out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
            stack.clear()
            _export(model, trace_inputs, tmp, name, opset, in_names, out_names)
    except Exception as exc:
        where = f" in layer '{stack[-1]}'" if stack else ""
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        first = next((ln for ln in text.splitlines() if ln.strip()), type(exc).__name__)
        errors.append(f"{name} exporter failed{where}: {type(exc).__name__}: {first}")
        return None
    return time.perf_counter() - t0


def _finish_graph(
    tmp: Path, exporter: str, opset: int, metadata: Mapping[str, Any] | None, errors: list[str]
) -> int | None:
    """Clean up the exported graph, stamp its metadata, check it and save it back; its node count, or None."""
    import onnx

    proto = onnx.load(str(tmp))
    _cleanup(proto)
    props = {"edgeopt_version": __version__, "exporter": exporter, "opset": str(opset)}
    for k, v in (metadata or {}).items():
        props[str(k)] = v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "edgeopt"
    proto.producer_version = __version__
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        errors.append(f"{exporter} exporter wrote a model onnx.checker rejects: {str(exc).splitlines()[0]}")
        return None
    onnx.save(proto, str(tmp))
    return len(proto.graph.node)
