"""The decomposed layers: plain torch modules whose forward exports to a few ONNX nodes.

Every forward uses only Reshape, MatMul/Gemm, Conv and Add, with static shapes except the batch
(``reshape(-1, ...)`` with Python ints), and no Einsum: onnxruntime dispatches each node for about
2 microseconds at these sizes and runs one Einsum several times slower than the same MatMuls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}


class LowRankLinear(nn.Module):
    """``Linear(in, r)`` then ``Linear(r, out)``: W ~ U_r S_r V_r^T."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def reconstruct(self) -> torch.Tensor:
        return self.second.weight @ self.first.weight


class LowRankConv(nn.Module):
    """A ``k x k`` conv to r channels (original stride, padding, dilation) then a ``1 x 1`` conv."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, rank: int) -> None:
        super().__init__()
        dims = len(conv.kernel_size)
        self.rank = rank
        self.first = _CONV[dims](
            conv.in_channels,
            rank,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False,
            padding_mode=conv.padding_mode,
        )
        self.second = _CONV[dims](rank, conv.out_channels, 1, bias=conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def reconstruct(self) -> torch.Tensor:
        a = self.first.weight.flatten(1)  # (r, in*K)
        b = self.second.weight.flatten(1)  # (out, r)
        return (b @ a).reshape(b.shape[0], *self.first.weight.shape[1:])


class TTConv(nn.Module):
    """TT over (in channels, kernel, out channels): ``1x1`` conv -> ``k x k`` conv -> ``1x1`` conv.

    Cores G1 (1, in, r1), G2 (r1, K, r2), G3 (r2, out, 1) are stored directly as the three conv
    weights, so the forward is exactly three Conv nodes. The ``1x1`` convs are pointwise linear
    maps, so they commute with any padding mode and the middle conv keeps the original geometry.
    """

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, ranks: Sequence[int]) -> None:
        super().__init__()
        dims = len(conv.kernel_size)
        r1, r2 = int(ranks[1]), int(ranks[2])
        self.ranks = (1, r1, r2, 1)
        self.first = _CONV[dims](conv.in_channels, r1, 1, bias=False)
        self.core = _CONV[dims](
            r1,
            r2,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False,
            padding_mode=conv.padding_mode,
        )
        self.last = _CONV[dims](r2, conv.out_channels, 1, bias=conv.bias is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))

    def load_cores(self, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor) -> None:
        ks = self.core.kernel_size
        with torch.no_grad():
            self.first.weight.copy_(g1[0].T.reshape(self.first.weight.shape))
            self.core.weight.copy_(g2.permute(2, 0, 1).reshape(g2.shape[2], g2.shape[0], *ks))
            self.last.weight.copy_(g3[:, :, 0].T.reshape(self.last.weight.shape))

    def reconstruct(self) -> torch.Tensor:
        a = self.first.weight.flatten(1)  # (r1, in)
        c = self.core.weight.flatten(2)  # (r2, r1, K)
        b = self.last.weight.flatten(1)  # (out, r2)
        w = torch.einsum("ob,bak,ai->oik", b, c, a)  # reconstruction only, never in forward
        return w.reshape(b.shape[0], a.shape[1], *self.core.kernel_size)


def tt_matrix_macs(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int], order: str) -> int:
    """Multiply-adds per sample of the sweep ``order`` ("rtl": last core first, or "ltr")."""
    d = len(in_modes)
    total = 0
    for k in range(d):
        core = ranks[k] * out_modes[k] * in_modes[k] * ranks[k + 1]
        if order == "rtl":  # untouched: inputs before k, outputs after k
            total += math.prod(in_modes[:k]) * math.prod(out_modes[k + 1 :]) * core
        else:
            total += math.prod(out_modes[:k]) * math.prod(in_modes[k + 1 :]) * core
    return total


def best_tt_order(in_modes: Sequence[int], out_modes: Sequence[int], ranks: Sequence[int]) -> tuple[str, int]:
    """The sweep direction with fewer multiply-adds (ties go to right-to-left)."""
    rtl = tt_matrix_macs(in_modes, out_modes, ranks, "rtl")
    ltr = tt_matrix_macs(in_modes, out_modes, ranks, "ltr")
    return ("rtl", rtl) if rtl <= ltr else ("ltr", ltr)


class TTLinear(nn.Module):
    """A TT-matrix Linear layer: W[(m1..md), (n1..nd)] = G1[m1,n1] ... Gd[md,nd].

    The forward sweeps the cores one at a time, each step one Reshape and one MatMul, no
    Transpose: every core is stored as the matrix its step multiplies by, in the layout that
    makes the next step's operand contiguous (the transposes are folded into the weights).
    The sweep runs right-to-left or left-to-right, whichever needs fewer multiply-adds.

    Right-to-left, step k multiplies ``C_k (r_{k-1} m_k, n_k r_k)`` into the state
    ``(B n_<k, n_k r_k, m_>k)``; its result ``(B n_<k, r_{k-1} m_k, m_>k)`` is, read in row-major
    order, already ``(B n_<k-1, n_{k-1} r_{k-1}, m_>k-1)``. Left-to-right is the mirror image.
    Sizes that do not factor well are zero-padded to ``prod(in_modes)``/``prod(out_modes)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        ranks: Sequence[int],
        bias: bool = True,
        order: str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.in_modes, self.out_modes = tuple(int(n) for n in in_modes), tuple(int(m) for m in out_modes)
        self.ranks = tuple(int(r) for r in ranks)
        self.order = order or best_tt_order(self.in_modes, self.out_modes, self.ranks)[0]
        self.padded_in, self.padded_out = math.prod(self.in_modes), math.prod(self.out_modes)
        d, r, n, m = len(self.in_modes), self.ranks, self.in_modes, self.out_modes
        shapes = []
        for k in range(d):
            if self.order == "rtl":
                shapes.append((n[k], r[k] * m[k]) if k == d - 1 else (r[k] * m[k], n[k] * r[k + 1]))
            else:
                shapes.append((r[k] * n[k], m[k]) if k == d - 1 else (m[k] * r[k + 1], r[k] * n[k]))
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(s)) for s in shapes])
        for c in self.cores:
            nn.init.normal_(c, std=(1.0 / c.shape[0]) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    # -- core layout <-> stored step matrices
    def load_cores(self, cores: Sequence[torch.Tensor]) -> None:
        """Load TT-matrix cores shaped (r_{k-1}, m_k, n_k, r_k)."""
        d = len(cores)
        with torch.no_grad():
            for k, g in enumerate(cores):
                if self.order == "rtl":
                    mat = g.reshape(g.shape[0] * g.shape[1], -1)
                    mat = mat.T if k == d - 1 else mat
                else:
                    mat = g.permute(1, 3, 0, 2).reshape(g.shape[1] * g.shape[3], -1)
                    mat = mat.T if k == d - 1 else mat
                self.cores[k].copy_(mat)

    def tt_cores(self) -> list[torch.Tensor]:
        d, r, n, m = len(self.in_modes), self.ranks, self.in_modes, self.out_modes
        out = []
        for k, c in enumerate(self.cores):
            mat = c.T if k == d - 1 else c
            if self.order == "rtl":
                out.append(mat.reshape(r[k], m[k], n[k], r[k + 1]))
            else:
                out.append(mat.reshape(m[k], r[k + 1], r[k], n[k]).permute(2, 0, 3, 1))
        return out

    def reconstruct(self) -> torch.Tensor:
        """The dense (out, in) weight this layer applies."""
        d = len(self.in_modes)
        full = torch.ones(1, 1, 1, dtype=self.cores[0].dtype)  # (M, N, r)
        for g in self.tt_cores():
            full = torch.einsum("MNa,amnb->MmNnb", full, g)  # reconstruction only, never in forward
            full = full.reshape(full.shape[0] * full.shape[1], full.shape[2] * full.shape[3], -1)
        del d
        return full[: self.out_features, : self.in_features, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1] if x.dim() != 2 else None  # 2-D input keeps every shape static
        if self.padded_in != self.in_features:
            x = F.pad(x, (0, self.padded_in - self.in_features))
        n, m, r, d = self.in_modes, self.out_modes, self.ranks, len(self.in_modes)
        c = self.cores
        if self.order == "rtl":
            h = x.reshape(-1, n[d - 1]) @ c[d - 1]  # (B n_<d, r_{d-1} m_d)
            for k in range(d - 2, -1, -1):
                h = c[k] @ h.reshape(-1, n[k] * r[k + 1], math.prod(m[k + 1 :]))
        else:
            h = x.reshape(-1, n[0], math.prod(n[1:]))
            for k in range(d - 1):
                h = c[k] @ h
                rest = math.prod(n[k + 2 :])
                h = h.reshape(-1, r[k + 1] * n[k + 1], rest) if k < d - 2 else h.reshape(-1, r[k + 1] * n[k + 1])
            h = h @ c[d - 1]
        h = h.reshape(-1, self.padded_out)
        if self.padded_out != self.out_features:
            h = h[:, : self.out_features]
        if self.bias is not None:
            h = h + self.bias
        return h if lead is None else h.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, in_modes={self.in_modes}, "
            f"out_modes={self.out_modes}, ranks={self.ranks}, order={self.order!r}"
        )
