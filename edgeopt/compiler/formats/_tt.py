"""``tt``: tensor-train formats, initialised by TT-SVD (tensorly).

* Linear: a TT-matrix (Oseledets 2011; Novikov et al., "Tensorizing Neural Networks", 2015) over
  ``in_features = n1*...*nd`` and ``out_features = m1*...*md``; ranks ``(1, r1, ..., r_{d-1}, 1)``.
* Conv1d/Conv2d: a TT over (in channels, kernel, out channels), ranks ``(1, r1, r2, 1)``,
  run as ``1x1`` conv -> ``k x k`` conv -> ``1x1`` conv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgeopt.compiler.formats._base import (
    FormatConfig,
    FormatHandler,
    LayerCost,
    LayerSpec,
    layer_error,
    make_report,
    param_error,
    register_format,
    rel_error,
)
from edgeopt.compiler.formats._ranks import (
    resolve_ranks,
    tt_max_ranks,
    tt_ranks_for_tolerance,
    tt_svd,
    uniform_max_rank,
    validate_rank_spec,
)
from edgeopt.errors import ModelError

MAX_PAD_FRACTION = 0.25  # pad a badly factoring size by at most this much
MAX_MODE_RATIO = 4.0  # "balanced": largest mode at most this times the smallest


@lru_cache(maxsize=4096)
def balanced_factors(n: int, d: int) -> tuple[int, ...] | None:
    """The factorization of n into d factors >= 2 with the smallest max/min ratio (ascending), or None."""
    best: list = [None, math.inf]

    def rec(rest: int, k: int, lo: int, acc: tuple[int, ...]) -> None:
        if k == 1:
            if rest >= lo:
                f = (*acc, rest)
                ratio = f[-1] / f[0]
                if ratio < best[1]:
                    best[:] = [f, ratio]
            return
        f = lo
        while f**k <= rest:
            if rest % f == 0:
                rec(rest // f, k - 1, f, (*acc, f))
            f += 1

    rec(n, d, 2, ())
    return best[0]


def default_num_cores(n_in: int, n_out: int) -> int:
    # Each core costs a Reshape + MatMul (~2 us each to dispatch); two cores keep modes <= 64 up
    # to 4096 features, past that a third core keeps the cores (and their MACs) small.
    big = max(n_in, n_out)
    return 2 if big <= 4096 else 3 if big <= 262_144 else 4


@lru_cache(maxsize=4096)
def choose_modes(n: int, d: int) -> tuple[tuple[int, ...] | None, str]:
    """Balanced modes for a size n (padded with zeros up to 25% when n factors badly), or a reason."""
    for size in range(n, int(n * (1 + MAX_PAD_FRACTION)) + 2):
        f = balanced_factors(size, d)
        if f is not None and f[-1] / f[0] <= MAX_MODE_RATIO:
            return f, ""
    return None, f"{n} has no balanced factorization into {d} modes (even padded by {MAX_PAD_FRACTION:.0%})"


@dataclass(frozen=True)
class TTConfig(FormatConfig):
    """Tensor-train format.

    Parameters
    ----------
    rank : int, float or list
        An int r >= 1 (every internal bond ``min(r, bond max)``), a list ``(1, r1, ..., 1)`` (one per
        bond; 4 entries for a conv), or a float eps in (0, 1): TT-SVD truncated so that the relative
        Frobenius error is <= eps. A plan entry's ``ranks`` is still read as a deprecated alias.
    in_modes, out_modes : list of int, optional
        Linear only: factorizations of in/out features (products may exceed the size: zero
        padding). Chosen as balanced factorizations when omitted.
    num_cores : int, optional
        Linear only: number of cores d when the modes are chosen automatically.
    """

    format = "tt"
    rank: int | float | tuple[int, ...] = 0
    in_modes: tuple[int, ...] | None = None
    out_modes: tuple[int, ...] | None = None
    num_cores: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rank", validate_rank_spec(self.rank, owner="TTConfig", param="rank"))
        for name in ("in_modes", "out_modes"):
            v = getattr(self, name)
            if v is None:
                continue
            if (
                isinstance(v, (str, bytes))
                or not hasattr(v, "__len__")
                or len(v) < 2
                or any(isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 for m in v)
            ):
                raise param_error("TTConfig", name, "a list of at least 2 ints >= 1", v)
            object.__setattr__(self, name, tuple(int(m) for m in v))
        if self.num_cores is not None and (
            isinstance(self.num_cores, bool) or not isinstance(self.num_cores, int) or self.num_cores < 2
        ):
            raise param_error("TTConfig", "num_cores", "an int >= 2", self.num_cores)
        lengths = {len(v) for v in (self.in_modes, self.out_modes) if v is not None}
        if self.num_cores is not None:
            lengths.add(self.num_cores)
        if isinstance(self.rank, tuple) and (self.in_modes or self.out_modes or self.num_cores):
            lengths.add(len(self.rank) - 1)
        if len(lengths) > 1:
            raise param_error(
                "TTConfig",
                "in_modes",
                "as many modes as out_modes, num_cores and ranks-1 imply",
                {
                    "in_modes": self.in_modes,
                    "out_modes": self.out_modes,
                    "num_cores": self.num_cores,
                    "rank": self.rank,
                },
            )


@dataclass(frozen=True)
class _TTLinearPlan:
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: tuple[int, ...]
    exact: bool


def _num_cores(spec: LayerSpec, config: TTConfig | None) -> int:
    if config is not None:
        if config.in_modes:
            return len(config.in_modes)
        if config.out_modes:
            return len(config.out_modes)
        if config.num_cores:
            return config.num_cores
        if isinstance(config.rank, tuple):
            return len(config.rank) - 1
    return default_num_cores(spec.in_size, spec.out_size)


def _linear_modes(spec: LayerSpec, config: TTConfig | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    d = _num_cores(spec, config)
    modes = {}
    for side, size in (("in", spec.in_size), ("out", spec.out_size)):
        given = getattr(config, f"{side}_modes", None) if config is not None else None
        if given is not None:
            if math.prod(given) < size:
                raise param_error(
                    "TTConfig",
                    f"{side}_modes",
                    f"modes whose product is >= {size}",
                    list(given),
                    layer=spec.name,
                    cls=ModelError,
                )
            modes[side] = given
            continue
        f, reason = choose_modes(size, d)
        if f is None:
            raise layer_error(
                spec.name, f"cannot use the '{TTConfig.format}' format: {reason}; name in_modes/out_modes in the plan"
            )
        modes[side] = f
    return modes["in"], modes["out"]


def _tt_linear_params(in_modes, out_modes, ranks) -> int:
    return sum(ranks[k] * out_modes[k] * in_modes[k] * ranks[k + 1] for k in range(len(in_modes)))


def _conv_shape(spec: LayerSpec) -> tuple[int, int, int]:
    return spec.in_size, spec.kernel_numel, spec.out_size


@register_format
class TTHandler(FormatHandler):
    config_cls = TTConfig
    # A TT layer with bonds above this loses to dense on CPUs (every core adds nodes and the
    # contraction becomes compute-bound), so the search does not spend trials there.
    search_rank_limit = 32

    def rank_text(self, ranks=None, *, width: int | None = None) -> str:
        return f"TT {list(ranks)}" if ranks else "–"  # the boundary 1s are how TT ranks are written

    def onnx_node_count(self, kind: str, ranks=None, *, bias: bool = True) -> int:
        if kind != "linear":
            return 3  # 1x1 conv -> k x k conv -> 1x1 conv (bias in the last)
        cores = len(ranks) - 1 if ranks and len(ranks) > 1 else 2
        return 2 * cores + 1 + int(bias)  # a Reshape and a MatMul per core, a Reshape out, the bias Add

    # ---- linear
    def _linear_plan(self, spec: LayerSpec, config: TTConfig, ranks_spec=None) -> _TTLinearPlan:
        in_modes, out_modes = _linear_modes(spec, config)
        shape = [m * n for m, n in zip(out_modes, in_modes)]
        ranks, exact = resolve_ranks(
            config.rank if ranks_spec is None else ranks_spec,
            tt_max_ranks(shape),
            owner="TTConfig",
            layer=spec.name,
            shape=shape,
        )
        return _TTLinearPlan(in_modes, out_modes, ranks, exact)

    def spec_fields(self, spec: LayerSpec) -> dict:
        if spec.kind != "linear":
            return {}
        d = default_num_cores(spec.in_size, spec.out_size)
        fin, fout = choose_modes(spec.in_size, d)[0], choose_modes(spec.out_size, d)[0]
        return {"tt_in_modes": fin, "tt_out_modes": fout} if fin and fout else {}

    def check(self, spec: LayerSpec) -> str | None:
        reason = super().check(spec)
        if reason is None and spec.kind == "linear":
            d = default_num_cores(spec.in_size, spec.out_size)
            for size in (spec.in_size, spec.out_size):
                f, why = choose_modes(size, d)
                if f is None:
                    return why
        if reason is None and self.max_rank(spec) < 1:
            reason = "even rank 1 has more parameters than the dense layer"
        return reason

    def max_rank(self, spec: LayerSpec) -> int:
        bias = spec.out_size if spec.bias else 0
        if spec.kind == "linear":
            try:
                in_modes, out_modes = _linear_modes(spec, None)
            except Exception:
                return 0
            shape = [m * n for m, n in zip(out_modes, in_modes)]
            bonds = tt_max_ranks(shape)

            def params(r: int) -> int:
                ranks, _ = resolve_ranks(r, bonds, owner="TTConfig", shape=shape)
                return _tt_linear_params(in_modes, out_modes, ranks) + bias
        else:
            shape = _conv_shape(spec)
            bonds = tt_max_ranks(shape)

            def params(r: int) -> int:
                ranks, _ = resolve_ranks(r, bonds, owner="TTConfig", shape=shape)
                return _tt_conv_params(shape, ranks) + bias

        return uniform_max_rank(params, max(bonds), spec.params)

    # ---- both
    def cost(self, spec: LayerSpec, config: TTConfig, ranks: tuple[int, ...] | None = None) -> LayerCost:
        from edgeopt.compiler.layers import best_tt_order

        bias = spec.out_size if spec.bias else 0
        if spec.kind == "linear":
            plan = self._linear_plan(spec, config, ranks)
            _, macs = best_tt_order(plan.in_modes, plan.out_modes, plan.ranks)
            return LayerCost(
                self.name,
                _tt_linear_params(plan.in_modes, plan.out_modes, plan.ranks) + bias,
                macs,
                plan.ranks,
                plan.exact if ranks is None else True,
            )
        ranks_, exact = self._conv_ranks(spec, config, ranks)
        cin, k, cout = _conv_shape(spec)
        macs = cin * ranks_[1] * spec.positions("in") + (ranks_[1] * k * ranks_[2] + ranks_[2] * cout) * spec.positions(
            "out"
        )
        return LayerCost(
            self.name, _tt_conv_params(_conv_shape(spec), ranks_) + bias, macs, ranks_, exact if ranks is None else True
        )

    def _conv_ranks(self, spec: LayerSpec, config: TTConfig, ranks=None):
        if config.in_modes or config.out_modes or config.num_cores:
            raise param_error(
                "TTConfig",
                "in_modes",
                "left out for a conv layer (its TT is over in channels, kernel, out channels)",
                config.in_modes or config.out_modes or config.num_cores,
                layer=spec.name,
                cls=ModelError,
            )
        shape = _conv_shape(spec)
        return resolve_ranks(
            config.rank if ranks is None else ranks, tt_max_ranks(shape), owner="TTConfig", layer=spec.name, shape=shape
        )

    def build(self, module, spec, config):
        import torch

        from edgeopt.compiler.layers import TTConv, TTLinear

        w = module.weight.detach()
        dt = np.float64 if w.numel() <= 1 << 21 else np.float32
        if spec.kind == "linear":
            plan = self._linear_plan(spec, config)
            (n, m) = plan.in_modes, plan.out_modes
            d = len(n)
            full = np.zeros((math.prod(m), math.prod(n)), dtype=dt)
            full[: spec.out_size, : spec.in_size] = w.cpu().numpy()
            # tensorly's tensor_train_matrix does this interleave then tensor_train; done here so the
            # same tensor also feeds the tolerance-based ranks (and large layers can use randomized SVD).
            t = full.reshape(*m, *n).transpose([i for k in range(d) for i in (k, d + k)])
            t = t.reshape([m[k] * n[k] for k in range(d)])
            ranks = tt_ranks_for_tolerance(t, config.rank) if isinstance(config.rank, float) else plan.ranks
            factors = tt_svd(t, ranks)
            cores = [
                torch.from_numpy(np.ascontiguousarray(f)).reshape(f.shape[0], m[k], n[k], f.shape[-1])
                for k, f in enumerate(factors)
            ]
            ranks = (1, *(c.shape[-1] for c in cores))
            new = TTLinear(spec.in_size, spec.out_size, n, m, ranks, bias=spec.bias)
            new.load_cores([c.to(w.dtype) for c in cores])
            extra = {"in_modes": n, "out_modes": m}
        else:
            t = w.reshape(spec.out_size, spec.in_size, -1).permute(1, 2, 0).cpu().numpy().astype(dt)
            if isinstance(config.rank, float):
                ranks = tt_ranks_for_tolerance(t, config.rank)
            else:
                ranks, _ = self._conv_ranks(spec, config)
            factors = tt_svd(t, ranks)
            ranks = (1, factors[0].shape[-1], factors[1].shape[-1], 1)
            new = TTConv(module, ranks)
            new.load_cores(*[torch.from_numpy(np.ascontiguousarray(f)).to(w.dtype) for f in factors])
            extra = {}
        new = new.to(device=w.device, dtype=w.dtype)
        if spec.bias:
            with torch.no_grad():
                (new.bias if spec.kind == "linear" else new.last.bias).copy_(module.bias.detach())
        cost = self.cost(spec, config, tuple(ranks))
        return new, make_report(spec, self.name, cost, rel_error(w, new.reconstruct()), **extra)


def _tt_conv_params(shape: tuple[int, int, int], ranks) -> int:
    return shape[0] * ranks[1] + ranks[1] * shape[1] * ranks[2] + ranks[2] * shape[2]
