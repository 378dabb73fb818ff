"""A small Vision Transformer built on ``nn.TransformerEncoder`` (``nn.MultiheadAttention`` inside).

A stride-``patch`` conv embeds the image into tokens, a learned position embedding is added, a
pre-norm encoder (``norm_first=True``, batch first, GELU MLP) mixes them, and the mean token goes
through a LayerNorm and a Linear head (mean pooling rather than a class token keeps the exported
graph free of batch-sized Expand/Concat). Dosovitskiy et al., "An Image is Worth 16x16 Words", 2021.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ViT", "vit"]


class ViT(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        patch: int = 4,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.width, self.tokens = width, tokens
        self.patch_embed = nn.Conv2d(in_channels, width, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, int(width * mlp_ratio), dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        # Python-int reshape: only the batch is dynamic in the exported graph (no Shape/Slice/Concat)
        x = self.patch_embed(x).reshape(-1, self.width, self.tokens).transpose(1, 2) + self.pos_embed
        x = self.encoder(x)
        return self.head(self.norm(x.mean(1)))


def vit(
    num_classes: int = 10,
    in_channels: int = 3,
    width: int = 128,
    depth: int = 4,
    heads: int = 4,
    image_size: int = 32,
    patch: int = 8,
) -> ViT:
    """4 layers, width 128, 4 heads, MLP 256, 8x8 patches of a 32x32 image (16 tokens): 0.56M parameters.

    (4x4 patches, 64 tokens, cost 4x the compute and learn the 2,000 digits far slower on a CPU.)"""
    return ViT(num_classes, in_channels, image_size, patch, width, depth, heads)
