"""Rank specs, normalized in one place, and the SVD / TT-SVD that realise them.

A rank spec is accepted in three forms and turned into one canonical tuple of bond ranks here,
and nowhere else:

* an ``int`` r >= 1: every internal bond gets ``min(r, that bond's maximum)``;
* a sequence of ints ``(1, r1, ..., 1)``, one per bond (clipped to each bond's maximum);
* a ``float`` eps in (0, 1): the smallest ranks whose truncation keeps the relative Frobenius
  reconstruction error <= eps (Eckart-Young for SVD; Oseledets' delta-truncation for TT-SVD).

References
----------
I. V. Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), 2011.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.compiler.formats._base import param_error

RankSpec = int | float | tuple[int, ...]

RANK_EXPECTED = "an int >= 1, a float in (0, 1) (relative error), or a list of ints >= 1 that starts and ends with 1"


def validate_rank_spec(spec: Any, *, owner: str, param: str = "rank", n_bonds: int | None = None) -> RankSpec:
    """Check a rank spec's form (no layer needed) and return it canonical: int, float or tuple."""
    if isinstance(spec, bool):
        raise param_error(owner, param, RANK_EXPECTED, spec)
    if isinstance(spec, (int, np.integer)):
        if spec < 1:
            raise param_error(owner, param, RANK_EXPECTED, spec)
        return int(spec)
    if isinstance(spec, (float, np.floating)):
        if not 0.0 < float(spec) < 1.0:
            raise param_error(owner, param, RANK_EXPECTED, spec)
        return float(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        ranks = tuple(spec)
        if (
            len(ranks) < 3
            or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in ranks)
            or ranks[0] != 1
            or ranks[-1] != 1
        ):
            raise param_error(owner, param, RANK_EXPECTED, list(spec))
        if n_bonds is not None and len(ranks) != n_bonds + 1:
            raise param_error(owner, param, f"a list of {n_bonds + 1} ranks (1, r1, ..., 1)", list(spec))
        return tuple(int(r) for r in ranks)
    raise param_error(owner, param, RANK_EXPECTED, spec)


def resolve_ranks(
    spec: RankSpec,
    max_ranks: Sequence[int],
    *,
    owner: str,
    param: str = "rank",
    layer: str | None = None,
    shape: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], bool]:
    """Turn a spec into ``(1, r1, ..., 1)`` for bonds whose maxima are ``max_ranks``.

    Returns ``(ranks, exact)``; for a tolerance the ranks are the bond maxima (an upper bound,
    ``exact=False``) since the true ranks need the weights: see :func:`svd_rank_for_tolerance`
    and :func:`tt_ranks_for_tolerance`.
    """
    inner = list(max_ranks)
    if isinstance(spec, float):
        ranks, exact = [1, *inner, 1], False
    elif isinstance(spec, int):
        ranks, exact = [1, *(min(spec, m) for m in inner), 1], True
    elif len(spec) != len(inner) + 2:
        raise param_error(
            owner, param, f"a list of {len(inner) + 2} ranks (1, r1, ..., 1) for this layer", list(spec), layer=layer
        )
    else:
        ranks, exact = [1, *(min(r, m) for r, m in zip(spec[1:-1], inner)), 1], True
    if shape is not None:  # a bond cannot exceed what its neighbours can carry (TT-SVD would clip it)
        for k in range(1, len(ranks) - 1):
            ranks[k] = min(ranks[k], ranks[k - 1] * shape[k - 1])
        for k in range(len(ranks) - 2, 0, -1):
            ranks[k] = min(ranks[k], ranks[k + 1] * shape[k])
    return tuple(ranks), exact


def uniform_max_rank(params_of_rank, max_bond: int, budget: int) -> int:
    """Largest uniform rank r <= max_bond with params_of_rank(r) <= budget (0 if none)."""
    lo, hi = 0, max_bond
    while lo < hi:  # params grow with r: binary search
        mid = (lo + hi + 1) // 2
        if params_of_rank(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def svd_rank_for_tolerance(s: np.ndarray, eps: float) -> int:
    """Smallest r with ||s[r:]|| <= eps * ||s|| (Eckart-Young: that is the truncation error)."""
    tail = np.sqrt(np.cumsum((s.astype(np.float64) ** 2)[::-1])[::-1])  # tail[r] = ||s[r:]||
    total = tail[0] if tail.size else 0.0
    for r in range(1, s.size + 1):
        if r == s.size or tail[r] <= eps * total:
            return r
    return max(1, s.size)


def tt_ranks_for_tolerance(tensor: np.ndarray, eps: float) -> tuple[int, ...]:
    """Ranks of Oseledets' delta-truncated TT-SVD (Algorithm 1) for relative error <= eps.

    Written by hand because tensorly's ``tensor_train`` takes ranks, not a tolerance; the cores
    are then computed by tensorly with these ranks, which is the same sequential truncation.
    """
    shape = tensor.shape
    d = len(shape)
    delta = eps * float(np.linalg.norm(tensor)) / math.sqrt(max(d - 1, 1))
    ranks = [1]
    c = np.asarray(tensor, dtype=np.float64)
    for k in range(d - 1):
        c = c.reshape(ranks[-1] * shape[k], -1)
        u, s, vt = np.linalg.svd(c, full_matrices=False)
        tail = np.sqrt(np.cumsum((s**2)[::-1])[::-1])
        r = next((i for i in range(1, s.size) if tail[i] <= delta), s.size)
        ranks.append(r)
        c = s[:r, None] * vt[:r]
    return (*ranks, 1)


def tt_max_ranks(shape: Sequence[int]) -> tuple[int, ...]:
    """Largest useful internal bond ranks of a TT over ``shape``: min(prod left, prod right)."""
    out = []
    for k in range(1, len(shape)):
        out.append(min(math.prod(shape[:k]), math.prod(shape[k:])))
    return tuple(out)


_TT_CACHE: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
_TT_CACHE_SIZE = 32


def tt_svd(tensor: np.ndarray, ranks: Sequence[int]) -> list[np.ndarray]:
    """TT-SVD cores (r_{k-1}, n_k, r_k) of ``tensor`` at the given ranks, by tensorly.

    Memoized by content and ranks: a search decomposes the same teacher weights again and again.
    Small ranks of large unfoldings use randomized SVD (Halko et al. 2011), which is ~10x faster
    there and accurate enough for an initialization that distillation then refines.
    """
    import hashlib

    import tensorly as tl
    from tensorly.decomposition import tensor_train

    key = (tensor.shape, tuple(int(r) for r in ranks), hashlib.sha1(np.ascontiguousarray(tensor).tobytes()).hexdigest())
    hit = _TT_CACHE.get(key)
    if hit is not None:
        _TT_CACHE.move_to_end(key)
        return [f.copy() for f in hit]
    tl.set_backend("numpy")
    big = tensor.size > 250_000 and max(ranks) * 4 < min(tensor.shape[0], tensor.size // tensor.shape[0])
    tt = tensor_train(
        tensor, rank=list(ranks), svd="randomized_svd" if big else "truncated_svd", random_state=0 if big else None
    )
    factors = [np.asarray(f) for f in tt.factors]
    _TT_CACHE[key] = factors
    while len(_TT_CACHE) > _TT_CACHE_SIZE:
        _TT_CACHE.popitem(last=False)
    return [f.copy() for f in factors]
