"""The tables' latencies: each rung of a layer's ladder exported alone, with the layer's real input
shape, and benched on the target (predicted or measured, like every bench); the cost of an empty graph
of the same input (a ReLU) is subtracted, so that the layers add up to the graph. Only a few rungs per
format are measured (:func:`measured_subset`), the others interpolated in rank; a graph-level format's
rungs (prune) are priced from the dense latencies of the layers they narrow (:func:`price_graph_rungs`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

from edgeopt.search.allocation.tables import Candidate, graph_level, rung_rank, spread

MAX_CANDIDATES = 6  # latencies measured per layer, dense included (each an export, and a session held)


def ladder_ranks(hi: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, 24, ... up to ``hi``: powers of two and the rungs half way between
    (in log rank), so that an allocation can fit its budget more closely than a factor of two."""
    ranks = {r for k in range(20) for r in (2**k, 3 * 2**k // 2) if 1 <= r <= hi}
    return sorted(ranks)


def ladder(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """Dense, then for each registered format with a rank the ranks of :func:`ladder_ranks` up to its
    ``max_search_rank`` (the layer's own format list permitting)."""
    from edgeopt.compiler.formats import DEFAULT_FORMAT, get_handler, registered_handlers

    allowed = getattr(spec, "formats", None)
    out: list[tuple[str, dict[str, Any]]] = [("dense", {})]
    for h in registered_handlers():
        if h.name == DEFAULT_FORMAT or not h.has_rank or (allowed is not None and h.name not in allowed):
            continue
        hi = h.max_search_rank(spec)
        ranks = h.search_ranks(spec) if hi >= 1 else None
        out += [(f"{h.name} {r}", get_handler(h.name).plan_entry(r)) for r in (ranks or ladder_ranks(hi))]
    return out


def measured_subset(rungs: list[tuple[str, dict[str, Any]]], limit: int = MAX_CANDIDATES) -> set[int]:
    """Which rungs get their latency measured: dense, and per format the smallest and largest ranks
    and log-evenly spaced ones between, ``limit`` in all; the others are interpolated in rank."""
    by_fmt: dict[str, list[int]] = {}
    for i, (_, entry) in enumerate(rungs):
        if entry:
            by_fmt.setdefault(entry["format"], []).append(i)
    room = max(2, (limit - 1) // max(1, len(by_fmt)))
    keep = {0}
    for idx in by_fmt.values():  # a graph-level format's rungs are priced from the others (price_graph_rungs)
        keep.update(idx if graph_level(rungs[idx[0]][1]) else spread(idx, room))
    return keep


def _interpolate(rows: list[Candidate], measured: set[int]) -> None:
    """Latency of the rungs not measured: linear in rank between the measured neighbours of its format."""
    for i, c in enumerate(rows):
        if i in measured:
            continue
        if not c.entry.get("rank") and not c.entry.get("ranks"):
            continue  # dense int8 is measured or priced, never interpolated
        fmt, r = c.entry["format"], rung_rank(c.entry)
        same = [
            (rung_rank(rows[j].entry), rows[j].latency_ms)
            for j in sorted(measured)
            if rows[j].entry.get("format") == fmt and rows[j].entry.get("rank")
        ]
        if not same:
            continue
        lo = max((p for p in same if p[0] <= r), default=same[0])
        hi = min((p for p in same if p[0] >= r), default=same[-1])
        w = 0.0 if hi[0] == lo[0] else (r - lo[0]) / (hi[0] - lo[0])
        c.latency_ms = lo[1] + w * (hi[1] - lo[1])


def input_shapes(teacher: Any, example: Any, names: list[str]) -> dict[str, tuple[int, ...]]:
    """Each layer's input shape at batch 1 (first call), on the model as ``decompose`` sees it."""
    import torch

    from edgeopt.compiler.decompose import decompose

    model = decompose(teacher, {}).eval()
    mods = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:

        def hook(mod: Any, args: Any, out: Any, name: str = name) -> None:
            shapes.setdefault(name, (1, *tuple(args[0].shape[1:])))

        handles.append(mods[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hd in handles:
            hd.remove()
    return shapes


def boundary_ms(shape: tuple[int, ...], ctx: dict[str, Any]) -> Any:
    """One int8 boundary at ``shape`` (a QuantizeLinear then a DequantizeLinear, exported from torch's fake
    quantization), less the empty graph's floor: a function of the tables' measurements (:class:`Pending`),
    its graph queued once per shape."""
    import torch

    cache = ctx.setdefault("boundary", {})
    if shape not in cache:

        class QDQ(torch.nn.Module):
            def forward(self, x: Any) -> Any:
                return torch.fake_quantize_per_tensor_affine(x, 0.05, 128, 0, 255)

        qdq, floor = ctx["pending"].add(QDQ().eval(), shape), floor_of(shape, ctx)
        cache[shape] = lambda ms: max(0.0, ms[qdq] - floor(ms))
    return cache[shape]


def floor_of(shape: tuple[int, ...], ctx: dict[str, Any]) -> Any:
    """The empty graph of input ``shape`` (a ReLU): what every isolated layer's latency is measured less."""
    import torch

    floor = ctx.setdefault("floor", {})
    if shape not in floor:
        floor[shape] = ctx["pending"].add(Alone.make(torch.nn.ReLU()), shape)
    i = floor[shape]
    return lambda ms: ms[i]


def layer_inputs(teacher: Any, X: Any, names: list[str]) -> dict[str, Any]:
    """Each layer's inputs (numpy) on the training samples ``X``: what its int8 rung is calibrated on."""
    import torch

    from edgeopt.compiler.decompose import decompose

    model = decompose(teacher, {}).eval()
    mods = dict(model.named_modules())
    seen: dict[str, Any] = {}

    def keep(name: str) -> Any:
        def hook(mod: Any, args: Any, out: Any) -> None:  # returns None: the output is left as it is
            seen.setdefault(name, args[0].detach().numpy().copy())

        return hook

    handles = [mods[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            model(torch.as_tensor(X))
    finally:
        for hd in handles:
            hd.remove()
    return seen


class Alone:
    """A module holding one layer (or a ReLU) to export with a fixed input."""

    @staticmethod
    def make(layer: Any) -> Any:
        from torch import nn

        class Alone(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.layer = layer

            def forward(self, x: Any) -> Any:
                return self.layer(x)

        return Alone().eval()


def latency_rows(teacher: Any, name: str, spec: Any, shape: tuple[int, ...], ctx: dict[str, Any]) -> Any:
    """The layer's rungs with their params; their latencies once the queued graphs are measured: a function
    that takes the measurements (:attr:`Pending.ms`) and returns the rows, measured or interpolated, int8
    rungs included (sensitivity not yet)."""
    from edgeopt.compiler.decompose import decompose, plan_cost

    rungs = _buildable(teacher, name, ladder(spec), ctx)
    measured = measured_subset(rungs)
    floor = floor_of(shape, ctx)
    rows: list[Candidate] = []
    queued: dict[int, int] = {}
    for i, (label, entry) in enumerate(rungs):
        if i in measured and not graph_level(entry):  # graph-level rungs: priced later (price_graph_rungs)
            student = decompose(teacher, {name: entry} if entry else {}).eval()
            queued[i] = ctx["pending"].add(Alone.make(student.get_submodule(name)), shape)
        params = (
            int(plan_cost(teacher, {name: entry}, ctx["example"]).layers[name].params) if entry else int(spec.params)
        )
        rows.append(Candidate(label, entry, params, math.nan, math.nan if entry else 0.0))
    int8 = int8_rows(teacher, name, rows, measured, shape, ctx) if ctx.get("int8") else None

    def finish(ms: list[float]) -> list[Candidate]:
        for i, j in queued.items():
            rows[i].latency_ms = max(0.0, ms[j] - floor(ms))
        _interpolate(rows, measured)
        return rows + (int8(ms) if int8 is not None else [])

    return finish


def int8_rows(
    teacher: Any, name: str, rows: list[Candidate], measured: set[int], shape: tuple[int, ...], ctx: dict[str, Any]
) -> Any:
    """Each rung again in int8 (:func:`~edgeopt.compiler.quantize.quantize_layers`): the isolated layer
    exported, quantized and benched. A convolution's static QDQ brings QuantizeLinear/DequantizeLinear in
    and out (calibrated on training samples), whose cost (:func:`boundary_ms`) is taken off: the rung is
    what the layer costs inside a run of int8 layers, where onnxruntime fuses the interior Q/DQ pairs away
    (cnn1d: every conv slower than fp32 alone with its boundaries, the all-int8 graph 1.7x faster). A Linear
    layer's dynamic int8 quantizes its own input in every graph, so its rung is the layer as measured.
    The rungs not measured are interpolated. Queued now (:class:`Pending`); returns the function that makes
    the rows of the measurements."""
    import torch

    from edgeopt.compiler.decompose import decompose
    from edgeopt.compiler.formats import with_precision
    from edgeopt.compiler.quantize import static_layer

    out = [Candidate(f"{c.label} int8", with_precision(c.entry, "int8"), c.params, math.nan, math.nan) for c in rows]
    priced: dict[int, Any] = {}
    floor = floor_of(shape, ctx)
    for i, c in enumerate(rows):
        if i in measured and not graph_level(c.entry):
            student = decompose(teacher, {name: c.entry} if c.entry else {}).eval()
            alone = Alone.make(student.get_submodule(name))
            j = ctx["pending"].add(alone, shape, int8=ctx["calibration"](name))
            if not static_layer(alone):  # dynamic int8 (a Linear layer): no boundary for a run to share
                priced[i] = lambda ms, j=j: max(0.0, ms[j] - floor(ms))
                continue
            with torch.no_grad():
                out_shape = tuple(alone(torch.zeros(shape)).shape)
            b_in, b_out = boundary_ms(shape, ctx), boundary_ms(out_shape, ctx)
            priced[i] = lambda ms, j=j, b_in=b_in, b_out=b_out: max(0.0, ms[j] - floor(ms) - b_in(ms) - b_out(ms))

    def finish(ms: list[float]) -> list[Candidate]:
        for i, price in priced.items():
            out[i].latency_ms = price(ms)
        _interpolate(out, {i for i in measured if not graph_level(rows[i].entry)})
        return out

    return finish


def _buildable(
    teacher: Any, name: str, rungs: list[tuple[str, dict[str, Any]]], ctx: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """``rungs`` less those of a graph-level format that cannot be applied to this layer (pruning the
    classifier changes the output; an attention projection's heads break): tried once, at its
    smallest rank; the reason goes to the tables' notes."""
    from edgeopt.compiler.decompose import decompose
    from edgeopt.errors import ModelError

    out, refused = [], set()
    coupled = ctx.setdefault("coupled", {})  # layer -> the earlier layer whose pruning already prunes it
    for label, entry in rungs:
        fmt = entry.get("format")
        if fmt in refused:
            continue
        if graph_level(entry) and name in coupled:
            refused.add(fmt)  # one choice per dependency group: the group's first layer carries it
            continue
        if graph_level(entry) and fmt not in ctx.setdefault("tried", {}).setdefault(name, set()):
            ctx["tried"][name].add(fmt)
            try:
                student = decompose(teacher, {name: entry}, example_input=ctx["example"])
            except ModelError as exc:
                refused.add(fmt)
                ctx.setdefault("refused", []).append(f"{name}: no {fmt}: {exc}")
                continue
            narrowed, consumers = _narrowed(teacher, student, name)
            for other in narrowed:
                coupled.setdefault(other, name)
            ctx.setdefault("affected", {})[name] = [name, *narrowed, *consumers]
        out.append((label, entry))
    return out


def _narrowed(teacher: Any, student: Any, name: str) -> tuple[list[str], list[str]]:
    """The layers other than ``name`` whose output channels ``student`` lost (its dependency group),
    and those that lost input channels only (its consumers)."""

    def width(m: Any, which: str) -> int:
        return int(getattr(m, f"{which}_features", 0) or getattr(m, f"{which}_channels", 0))

    mods = dict(teacher.named_modules())
    out, cons = [], []
    for n, m in student.named_modules():
        if n == name or n not in mods or not width(m, "out"):
            continue
        if width(m, "out") < width(mods[n], "out"):
            out.append(n)
        elif width(m, "in") < width(mods[n], "in"):
            cons.append(n)
    return out, cons


def price_graph_rungs(rows: dict[str, list[Candidate]], ctx: dict[str, Any]) -> None:
    """A prune rung's latency in the table's terms, from the dense latencies measured alone: keeping a
    share ``r`` of the layer's channels scales the layer and every layer it narrows (its dependency
    group's outputs, its consumers' inputs) by ``r``, so the rung is
    ``r * own - (1 - r) * sum(others)`` (negative when the consumers save more than the layer costs).
    Measuring each rung as a whole graph instead (dense graph less pruned graph) was tried first: on
    mobilenet a layer saves 1-3 % of a 1 ms graph, below the noise of two short benches, and the
    knapsack picked the rungs whose noise looked best (its plans measured 0.3 ms over the table).
    Depthwise convs and BatchNorm, which are not in the table, shrink too: a saving not counted, so
    the price errs slow; the additivity fit and the screens correct the scale."""
    from edgeopt.compiler.formats import precision_of

    dense = {n: cands[0].latency_ms for n, cands in rows.items()}
    for name, cands in rows.items():
        others = sum(dense.get(m, 0.0) for m in ctx.get("affected", {}).get(name, [name]) if m != name)
        own = {precision_of(c.entry): c.latency_ms for c in cands if not c.entry.get("rank")}
        for c in cands:
            if graph_level(c.entry):  # an int8 rung: the layer's own share at its int8 dense latency
                r = int(c.entry["rank"]) / ctx["widths"][name]
                c.latency_ms = r * own.get(precision_of(c.entry), dense[name]) - (1 - r) * others


def refusal_notes(refused: list[str], coupled: dict[str, str]) -> list[str]:
    """One note for the layers a graph-level format could not be applied to (vit: 17 of them), one
    for the layers pruned only with their group's first layer."""
    out = []
    if refused:
        names = [r.split(": ", 1)[0] for r in refused]
        out.append(
            f"{len(refused)} layer(s) cannot be pruned ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''}); "
            f"the first: {refused[0]}"
        )
    if coupled:
        out.append(
            "pruned only with their dependency group's first layer: "
            + ", ".join(f"{n} (with {root})" for n, root in coupled.items())
        )
    return out


@contextlib.contextmanager
def quiet_bench() -> Iterator[None]:
    """The short table measurements are noisy by design: their warnings are not printed one by one."""
    bench_log = logging.getLogger("edgeopt.bench")
    level = bench_log.level
    bench_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bench_log.setLevel(level)


__all__ = [
    "MAX_CANDIDATES",
    "Alone",
    "boundary_ms",
    "floor_of",
    "input_shapes",
    "int8_rows",
    "ladder",
    "ladder_ranks",
    "latency_rows",
    "layer_inputs",
    "measured_subset",
    "price_graph_rungs",
    "quiet_bench",
    "refusal_notes",
]
