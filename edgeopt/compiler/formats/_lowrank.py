"""``lowrank``: truncated SVD of the weight (unfolded as out x in*K for convs)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edgeopt.compiler.formats._base import (
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerSpec,
    make_report,
    register_format,
    rel_error,
)
from edgeopt.compiler.formats._ranks import resolve_ranks, svd_rank_for_tolerance, uniform_max_rank, validate_rank_spec


@dataclass(frozen=True)
class LowRankConfig(FormatConfig):
    """Low-rank factorization ``W ~ U_r S_r V_r^T`` by truncated SVD.

    Parameters
    ----------
    rank : int, float or list
        An int r >= 1 (clipped to the full rank), ``[1, r, 1]``, or a float eps in (0, 1): the
        smallest rank with relative Frobenius error <= eps.
    """

    format = "lowrank"
    rank: int | float | tuple[int, ...] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank", validate_rank_spec(self.rank, owner="LowRankConfig", param="rank", n_bonds=2))


_SVD_CACHE: OrderedDict[tuple, tuple] = OrderedDict()
_SVD_CACHE_SIZE = 16


def _svd(mat):
    """Thin SVD, memoized by the matrix's content.

    A search decomposes the same teacher layers in every trial at different ranks; the SVD does
    not depend on the rank, and a 1024×1024 one costs ~0.3 s, so it is computed once per weight.
    """
    import hashlib

    import torch

    key = (tuple(mat.shape), hashlib.sha1(mat.contiguous().numpy().tobytes()).hexdigest())
    hit = _SVD_CACHE.get(key)
    if hit is None:
        hit = torch.linalg.svd(mat, full_matrices=False)
        _SVD_CACHE[key] = hit
        while len(_SVD_CACHE) > _SVD_CACHE_SIZE:
            _SVD_CACHE.popitem(last=False)
    else:
        _SVD_CACHE.move_to_end(key)
    return hit


def _full_rank(spec: LayerSpec) -> int:
    return min(spec.out_size, spec.in_size * spec.kernel_numel)


def _params(spec: LayerSpec, r: int) -> int:
    return r * (spec.in_size * spec.kernel_numel + spec.out_size) + (spec.out_size if spec.bias else 0)


@register_format
class LowRankHandler(FormatHandler):
    config_cls = LowRankConfig
    label = "lr"
    search_rank_limit = 256

    def onnx_node_count(self, kind: str, ranks=None, *, bias: bool = True) -> int:
        return 2  # two Gemm/MatMul (linear) or two Conv, the bias folded into the second

    def max_rank(self, spec: LayerSpec) -> int:
        return uniform_max_rank(lambda r: _params(spec, r), _full_rank(spec), spec.params)

    def check(self, spec: LayerSpec) -> str | None:
        reason = super().check(spec)
        if reason is None and self.max_rank(spec) < 1:
            reason = (
                f"a rank-1 factorization of a {spec.out_size}x{spec.in_size * spec.kernel_numel} weight "
                "is not smaller than the layer"
            )
        return reason

    def cost(self, spec: LayerSpec, config: LowRankConfig, rank: int | None = None) -> LayerCost:
        if rank is None:
            (_, rank, _), exact = resolve_ranks(
                config.rank, [_full_rank(spec)], owner="LowRankConfig", param="rank", layer=spec.name
            )
        else:
            exact = True
        per_pos = rank * spec.in_size * spec.kernel_numel, rank * spec.out_size
        macs = (per_pos[0] + per_pos[1]) * spec.positions("out")
        return LayerCost(self.name, _params(spec, rank), macs, (1, rank, 1), exact)

    def build(self, module, spec, config):
        import torch

        from edgeopt.compiler.layers import LowRankConv, LowRankLinear

        w = module.weight.detach()
        mat = w.reshape(w.shape[0], -1).double()
        u, s, vh = _svd(mat)
        if isinstance(config.rank, float):
            rank = svd_rank_for_tolerance(s.numpy(), config.rank)
        else:
            (_, rank, _), _ = resolve_ranks(
                config.rank, [_full_rank(spec)], owner="LowRankConfig", param="rank", layer=spec.name
            )
        root = s[:rank].sqrt()
        a = (root[:, None] * vh[:rank]).to(w.dtype)  # (r, in*K)
        b = (u[:, :rank] * root[None, :]).to(w.dtype)  # (out, r)
        new = (
            LowRankLinear(spec.in_size, spec.out_size, rank, bias=spec.bias)
            if spec.kind == "linear"
            else LowRankConv(module, rank)
        )
        new = new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.first.weight.copy_(a.reshape(new.first.weight.shape))
            new.second.weight.copy_(b.reshape(new.second.weight.shape))
            if spec.bias:
                new.second.bias.copy_(module.bias.detach())
        cost = self.cost(spec, config, rank)
        return new, make_report(spec, self.name, cost, rel_error(w, new.reconstruct()))
