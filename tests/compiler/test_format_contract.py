"""The contract every registered format passes, for every layer kind it supports.

A new format registered with ``register_format`` is picked up here automatically. The last tests
prove that a new format is one config and one handler: ``blocklowrank``, defined only in this file,
goes through the search space (sampled by a real Optuna trial), ``plan_cost``, ``decompose``,
``export_onnx`` (verified against torch in onnxruntime) and the report's per-layer label and node
count, without any other file knowing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.compile

torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")
import numpy as np  # noqa: E402  (imported after the importorskip guards)
import onnxruntime as ort  # noqa: E402  (imported after the importorskip guards)
from torch import nn  # noqa: E402  (imported after the importorskip guards)

from edgeopt._validate import number  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.decompose import decomposable_layers, decompose, layer_reports, plan_cost  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.export import export_onnx, export_onnx_info, onnx_op_counts  # noqa: E402  (imported after the importorskip guards)
from edgeopt.compiler.formats import (  # noqa: E402  (imported after the importorskip guards)
    DEFAULT_FORMAT,
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerSpec,
    get_handler,
    layer_onnx_node_count,
    make_report,
    parse_config,
    register_format,
    registered_formats,
    rel_error,
    short_label,
    unregister_format,
)
from edgeopt.search.space import SearchSpace  # noqa: E402  (imported after the importorskip guards)

LAYERS = {
    "linear": (lambda: nn.Linear(24, 36), (3, 24)),
    "conv1d": (lambda: nn.Conv1d(6, 10, 3, padding=1), (3, 6, 16)),
    "conv2d": (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (3, 6, 9, 9)),
}
# The per-layer contract: a layer in, a module of the same function out. Graph-level formats (prune)
# change the layer's neighbours and its width, so they have their own tests (tests/compiler/test_prune.py).
CASES = [
    (fmt, kind)
    for fmt in registered_formats()
    for kind in LAYERS
    if kind in get_handler(fmt).kinds and not get_handler(fmt).graph_level
]
RANKED = [c for c in CASES if get_handler(c[0]).has_rank]


def _model(kind):
    make, shape = LAYERS[kind]
    torch.manual_seed(0)
    return nn.Sequential(make()), torch.randn(*shape)


def _max_bond(model, x, fmt):
    spec = decomposable_layers(model, x)["0"]
    handler = get_handler(fmt)
    cost = handler.cost(spec, parse_config(handler.plan_entry(10_000)))
    return max(cost.ranks)


def _plan(fmt, rank):
    handler = get_handler(fmt)
    return {"0": handler.plan_entry(rank if handler.has_rank else None)}


@pytest.mark.parametrize("fmt,kind", CASES)
def test_shape_preserved_and_teacher_untouched(fmt, kind):
    model, x = _model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    student = decompose(model, _plan(fmt, 2))
    assert student(x).shape == model(x).shape
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("fmt,kind", RANKED)
def test_error_non_increasing_in_rank_and_full_rank_exact(fmt, kind):
    model, x = _model(kind)
    top = _max_bond(model, x, fmt)
    errors = [layer_reports(decompose(model, _plan(fmt, r)))[0].rel_error for r in range(1, top + 1)]
    assert all(b <= a + 1e-9 for a, b in zip(errors, errors[1:])), errors
    full = decompose(model, _plan(fmt, top))
    assert errors[-1] < 1e-5
    torch.testing.assert_close(full(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt,kind", CASES)
@pytest.mark.parametrize("rank", [1, 3])
def test_params_equal_plan_cost_and_the_plan_entry_round_trips(fmt, kind, rank):
    model, x = _model(kind)
    plan = _plan(fmt, rank)
    handler = get_handler(fmt)
    assert parse_config(plan["0"]).to_dict() == plan["0"]
    assert handler.rank_of(plan["0"]) == (rank if handler.has_rank else None)
    student = decompose(model, plan, example_input=x)
    counted = sum(p.numel() for p in student.parameters())
    report = layer_reports(student)[0]
    assert report.params == counted and report.format == fmt
    cost = plan_cost(model, plan, x)
    assert cost.params == counted and cost.size_bytes == 4 * counted
    assert cost.macs == report.macs


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("rank", [1, 3])
def test_built_in_formats_have_their_closed_form_sizes(kind, rank):
    """The parameter formulas of the formats edgeopt ships (lowrank: r(in*K + out); TT: sum of cores)."""
    model, x = _model(kind)
    w = model[0].weight
    out_size, in_size, k = w.shape[0], w.shape[1], w[0, 0].numel()
    bias = out_size
    lowrank = decompose(model, {"0": {"format": "lowrank", "rank": rank}})
    r = layer_reports(lowrank)[0].ranks[1]
    assert sum(p.numel() for p in lowrank.parameters()) == r * (in_size * k + out_size) + bias
    tt = decompose(model, {"0": {"format": "tt", "rank": rank}})
    report, counted = layer_reports(tt)[0], sum(p.numel() for p in tt.parameters())
    if kind == "linear":
        rk, n, m = report.ranks, report.in_modes, report.out_modes
        assert counted == sum(rk[i] * n[i] * m[i] * rk[i + 1] for i in range(len(n))) + bias
        assert tt[0].reconstruct().shape == w.shape
    else:
        _, r1, r2, _ = report.ranks
        assert counted == in_size * r1 + r1 * k * r2 + r2 * out_size + bias


@pytest.mark.parametrize("fmt,kind", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_onnx_round_trip_no_einsum_and_the_handler_knows_its_node_count(fmt, kind, bias, tmp_path):
    model, x = _model(kind)
    if not bias:
        model[0].bias = None
    student = decompose(model, _plan(fmt, 3))
    path = export_onnx(student, x[:1], tmp_path / "m.onnx", verify_inputs=x)
    ops = onnx_op_counts(path)
    assert "Einsum" not in ops
    assert not {"Shape", "Gather", "Concat"} & set(ops), ops  # static shapes except batch
    report = layer_reports(student)[0]
    assert sum(ops.values()) == layer_onnx_node_count(fmt, kind, report.ranks, bias=bias), ops


def test_rank_key_and_search_limits_come_from_the_handlers():
    for fmt in registered_formats():
        handler = get_handler(fmt)
        if not handler.has_rank:
            assert handler.plan_entry() == {"format": fmt} and handler.max_search_rank(None) == 0
            continue
        assert handler.plan_entry(8) == {"format": fmt, "rank": 8}
        with pytest.warns(DeprecationWarning):
            assert handler.rank_of({"format": fmt, "ranks": 8}) == 8 == parse_config({"format": fmt, "ranks": 8}).rank
    model, x = _model("linear")
    spec = decomposable_layers(model, x)["0"]
    for fmt, hi in spec.max_rank.items():
        handler = get_handler(fmt)
        limit = handler.search_rank_limit
        assert handler.max_search_rank(spec) == (hi if limit is None else min(hi, limit))


def test_report_labels():
    assert short_label({"format": DEFAULT_FORMAT}) == DEFAULT_FORMAT == short_label(None)
    assert short_label({"format": "lowrank", "rank": 8}) == "lr8"
    assert short_label({"format": "tt", "rank": 12}) == "tt12"
    assert short_label({"format": "tt", "ranks": [1, 4, 1]}) == "tt[1, 4, 1]"  # an older study's plan
    assert short_label({"format": "gone", "rank": 2}) == "gone2"  # a format no longer registered


# --------------------------------------------------------------------------- a fourth format, only here
@dataclass(frozen=True)
class BlockLowRankConfig(FormatConfig):
    """Two output blocks, each with its own rank-r truncated SVD: ``W = [B1 A1; B2 A2]``."""

    format = "blocklowrank"
    rank: int = 0

    def __post_init__(self) -> None:
        number(self.rank, "BlockLowRankConfig", "rank", minimum=1, integer=True)


class BlockLowRank(nn.Module):
    def __init__(self, in_size: int, out_sizes: tuple[int, int], rank: int, bias: bool) -> None:
        super().__init__()
        self.rank = rank
        self.first = nn.Linear(in_size, 2 * rank, bias=False)  # [A1; A2]
        self.top = nn.Linear(rank, out_sizes[0], bias=False)  # B1
        self.bottom = nn.Linear(rank, out_sizes[1], bias=False)  # B2
        self.bias = nn.Parameter(torch.zeros(sum(out_sizes))) if bias else None

    def forward(self, x):
        a, b = self.first(x).split(self.rank, dim=-1)
        y = torch.cat([self.top(a), self.bottom(b)], dim=-1)
        return y if self.bias is None else y + self.bias

    def reconstruct(self):
        a = self.first.weight
        return torch.cat([self.top.weight @ a[: self.rank], self.bottom.weight @ a[self.rank :]])


@register_format
class BlockLowRankHandler(FormatHandler):
    config_cls = BlockLowRankConfig
    kinds = ("linear",)
    label = "blr"

    @staticmethod
    def _params(spec: LayerSpec, r: int) -> int:
        return r * (2 * spec.in_size + spec.out_size) + (spec.out_size if spec.bias else 0)

    @staticmethod
    def _full_rank(spec: LayerSpec) -> int:
        return min(spec.in_size, spec.out_size // 2)

    def max_rank(self, spec: LayerSpec) -> int:
        fits = (spec.params - (spec.out_size if spec.bias else 0)) // (2 * spec.in_size + spec.out_size)
        return max(0, min(fits, self._full_rank(spec)))

    def check(self, spec: LayerSpec) -> str | None:
        reason = super().check(spec)
        if reason is None and self.max_rank(spec) < 1:
            reason = "even rank 1 is not smaller than the layer"
        return reason

    def cost(self, spec: LayerSpec, config: BlockLowRankConfig) -> LayerCost:
        r = min(config.rank, self._full_rank(spec))
        return LayerCost(self.name, self._params(spec, r), r * (2 * spec.in_size + spec.out_size), (1, r, 1))

    def onnx_node_count(self, kind: str, ranks=None, *, bias: bool = True) -> int:
        return 5 + int(bias)  # MatMul, Split, two MatMul, Concat (+ Add)

    def build(self, module, spec, config):
        cost = self.cost(spec, config)
        r, w = cost.ranks[1], module.weight.detach()
        half = spec.out_size // 2
        new = BlockLowRank(spec.in_size, (half, spec.out_size - half), r, spec.bias)
        with torch.no_grad():
            for block, rows, cols in ((new.top, w[:half], slice(0, r)), (new.bottom, w[half:], slice(r, 2 * r))):
                u, s, vh = torch.linalg.svd(rows.double(), full_matrices=False)
                root = s[:r].sqrt()
                new.first.weight[cols] = (root[:, None] * vh[:r]).to(w.dtype)
                block.weight.copy_((u[:, :r] * root[None, :]).to(w.dtype))
            if spec.bias:
                new.bias.copy_(module.bias.detach())
        return new, make_report(spec, self.name, cost, rel_error(w, new.reconstruct()))


unregister_format(BlockLowRankConfig.format)  # registered only while a test asks for it (the fixture)


@pytest.fixture
def blocklowrank():
    register_format(BlockLowRankHandler)
    try:
        yield BlockLowRankConfig.format
    finally:
        unregister_format(BlockLowRankConfig.format)


def _teacher():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 36), nn.ReLU(), nn.Linear(36, 8)), torch.randn(5, 24)


def test_a_new_format_is_one_config_and_one_handler(blocklowrank, tmp_path):
    model, x = _teacher()
    layers = decomposable_layers(model, x)
    assert blocklowrank in layers["0"].formats and layers["0"].max_rank[blocklowrank] == 10

    # search space: offered after the built-in formats, sampled by a real Optuna trial
    space = SearchSpace(layers)
    choice = next(c for c in space.choices if c.name == "0")
    assert choice.formats[-1] == blocklowrank and choice.rank_bounds[blocklowrank] == (1, 10)
    plan = space.uniform_plan(blocklowrank, 3, only={"0"})
    assert plan["0"] == {"format": blocklowrank, "rank": 3}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(space.trial_params(plan))
    assert space.sample(study.ask()) == plan
    for _ in range(20):  # random trials stay within the handler's bounds
        entry = space.sample(study.ask())["0"]
        if entry["format"] == blocklowrank:
            assert 1 <= entry["rank"] <= 10

    # plan cost = what decompose builds; the reconstruction is exact at full rank
    student = decompose(model, plan, example_input=x)
    counted = sum(p.numel() for p in student.parameters())
    assert plan_cost(model, plan, x).params == counted == 3 * (48 + 36) + 36 + 36 * 8 + 8
    report = layer_reports(student)[0]
    assert report.format == blocklowrank and report.ranks == (1, 3, 1) and 0 < report.rel_error < 1
    exact = decompose(model, {"0": {"format": blocklowrank, "rank": 18}})
    torch.testing.assert_close(exact(x), model(x), rtol=1e-4, atol=1e-5)

    # export, verified against torch in onnxruntime (and checked again here)
    info = export_onnx_info(student, x[:1], tmp_path / "blr.onnx", verify_inputs=x)
    assert info.max_rel_deviation is not None and info.max_rel_deviation <= 1e-4
    sess = ort.InferenceSession(str(info.path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], student(x).numpy(), rtol=1e-4, atol=1e-5)

    # the report's per-layer label and node count (1 ReLU and the dense head besides)
    assert short_label(plan["0"]) == "blr3"
    dense_nodes = layer_onnx_node_count(DEFAULT_FORMAT, "linear")
    assert info.nodes == layer_onnx_node_count(blocklowrank, "linear", report.ranks) + 1 + dense_nodes

    # the one rank key, with its deprecated alias, comes with the base config
    with pytest.warns(DeprecationWarning):
        assert parse_config({"format": blocklowrank, "ranks": 3}) == BlockLowRankConfig(rank=3)


def test_an_unregistered_format_is_gone(blocklowrank):
    unregister_format(blocklowrank)
    assert blocklowrank not in registered_formats()
    with pytest.raises(Exception, match="format: expected one of 'dense', 'lowrank', 'tt'"):
        parse_config({"format": blocklowrank, "rank": 3})
