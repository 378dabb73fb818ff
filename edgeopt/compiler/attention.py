"""Attention with plain ``nn.Linear`` projections, so the compiler can decompose them.

``nn.MultiheadAttention`` keeps q/k/v in one fused ``in_proj_weight`` that its forward reads
functionally (``F.multi_head_attention_forward``), and ``nn.TransformerEncoderLayer``'s inference
fast path reads it too; none of those weights can be replaced by a module. :class:`LinearAttention`
computes the same function with four ``nn.Linear`` (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``) and plain ops (MatMul, Softmax, Reshape, Transpose), so every projection is a Linear
layer that ``decompose`` can turn into low-rank or TT, and it exports with both ONNX exporters.

:func:`swap_attention` replaces every supported ``nn.MultiheadAttention`` of a model (in place;
call it on a copy) and disables the fused fast path of the ``nn.TransformerEncoder`` /
``nn.TransformerEncoderLayer`` that owned it: ``LinearAttention`` has ``in_proj_bias = None`` and
``_qkv_same_embed_dim = False``, which both fast-path checks read as "not eligible", and each
``TransformerEncoder`` whose layers were swapped gets ``use_nested_tensor = False``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearAttention", "attention_refusal", "swap_attention"]


def attention_refusal(mha: nn.MultiheadAttention) -> str | None:
    """Why this ``nn.MultiheadAttention`` cannot be swapped (``None`` when it can)."""
    if mha.bias_k is not None or mha.bias_v is not None:
        return "add_bias_kv=True (learned extra key/value rows) is not supported"
    if mha.add_zero_attn:
        return "add_zero_attn=True is not supported"
    if mha.in_proj_weight is None and mha.q_proj_weight is None:
        return "it has no projection weights"
    return None


class LinearAttention(nn.Module):
    """Multi-head attention with separate ``nn.Linear`` q/k/v/out projections.

    Same call signature and result as ``nn.MultiheadAttention.forward`` (``(output, weights)``;
    ``weights`` is ``None`` unless ``need_weights``), for the configurations
    :func:`attention_refusal` accepts: batch-first or not, with or without bias, ``kdim``/``vdim``
    different from ``embed_dim``, boolean or float ``attn_mask`` (2-D or 3-D) and
    ``key_padding_mask``, ``is_causal``. Attention dropout is applied in training mode as MHA does.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        # What nn.Transformer*'s fast-path checks read: these values make them take the plain path.
        self._qkv_same_embed_dim = False
        self.in_proj_weight = None
        self.in_proj_bias = None

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> LinearAttention:
        """The equivalent module, with ``mha``'s weights copied (device and dtype kept)."""
        why = attention_refusal(mha)
        if why is not None:
            raise ValueError(why)
        e = mha.embed_dim
        bias = mha.in_proj_bias is not None
        new = cls(
            e, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=bias, dropout=mha.dropout, batch_first=mha.batch_first
        )
        ref = mha.out_proj.weight
        new = new.to(device=ref.device, dtype=ref.dtype)
        if mha._qkv_same_embed_dim:
            wq, wk, wv = mha.in_proj_weight.detach().chunk(3)
        else:
            wq, wk, wv = (w.detach() for w in (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight))
        with torch.no_grad():
            for lin, w in zip((new.q_proj, new.k_proj, new.v_proj), (wq, wk, wv)):
                lin.weight.copy_(w)
            if bias:
                for lin, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.detach().chunk(3)):
                    lin.bias.copy_(b)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None and new.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        for p in new.parameters():
            p.requires_grad_(mha.out_proj.weight.requires_grad)
        new.train(mha.training)
        return new

    def _heads(self, x: torch.Tensor, length: int) -> torch.Tensor:
        """(B, L, E) -> (B, H, L, D); the batch is the only dim not fixed by Python ints."""
        return x.reshape(-1, length, self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, scores: torch.Tensor, attn_mask, key_padding_mask, is_causal: bool) -> torch.Tensor:
        lq, lk = scores.shape[-2], scores.shape[-1]
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).triu(1)
        for mask, shape in ((attn_mask, None), (key_padding_mask, "kpm")):
            if mask is None:
                continue
            if shape == "kpm":
                mask = mask.reshape(-1, 1, 1, lk)
            elif mask.dim() == 3:
                mask = mask.reshape(-1, self.num_heads, lq, lk)
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(mask, float("-inf"))
            else:
                scores = scores + mask.to(scores.dtype)
        return scores

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:  # unbatched (L, E): as a batch of one
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first or not batched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        lq, lk = int(query.shape[1]), int(key.shape[1])
        q = self._heads(self.q_proj(query), lq)
        k = self._heads(self.k_proj(key), lk)
        v = self._heads(self.v_proj(value), lk)
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (B, H, Lq, Lk)
        scores = self._mask(scores, attn_mask, key_padding_mask, is_causal)
        weights = scores.softmax(-1)
        attn = F.dropout(weights, p=self.dropout) if self.training and self.dropout > 0 else weights
        out = (attn @ v).transpose(1, 2).reshape(-1, lq, self.embed_dim)  # (B, Lq, E)
        out = self.out_proj(out)
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        w = weights.mean(1) if average_attn_weights else weights
        return out, (w if batched else w.squeeze(0))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def swap_attention(model: nn.Module) -> dict[str, str]:
    """Replace every supported ``nn.MultiheadAttention`` in ``model`` by :class:`LinearAttention`, in place.

    Returns ``{name: why}`` for the attention modules left as they are. A module shared under
    several names is swapped once and stays shared. The caller owns ``model``: pass a copy of
    a teacher (``decompose`` does).
    """
    refused: dict[str, str] = {}
    swapped: dict[int, nn.Module] = {}
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.MultiheadAttention):
            continue
        why = attention_refusal(mod)
        if why is not None:
            refused[name] = why
            continue
        if id(mod) not in swapped:
            swapped[id(mod)] = LinearAttention.from_mha(mod)
    if not swapped:
        return refused
    for parent in model.modules():
        for attr, child in list(parent._modules.items()):
            if child is not None and id(child) in swapped and isinstance(child, nn.MultiheadAttention):
                setattr(parent, attr, swapped[id(child)])
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder):
            m.use_nested_tensor = False  # its nested-tensor fast path reads in_proj_weight
    return refused
