"""Class and mask predictions from decoder queries."""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from ..layers import MLP
from ..layers.mask_logits import mask_logits_product

__all__ = ['MaskClassPredictor', 'mask_logits_product']


class MaskClassPredictor(nn.Module):
    """LayerNorm the queries, then classify them and dot them with pixels.

    Args:
        embed_dims: Query channels C.
        num_classes: Classes K (an extra "no object" logit is added).
        mask_dims: Channels of the per-pixel mask features.
    """

    def __init__(self, embed_dims: int, num_classes: int,
                 mask_dims: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dims)
        self.cls_embed = nn.Linear(embed_dims, num_classes + 1)
        self.mask_embed = MLP(embed_dims, embed_dims, mask_dims, 3)

    def classify_and_embed(self, query: Tensor) -> Tuple[Tensor, Tensor]:
        """Class logits and mask embeddings, without the pixel product.

        Args:
            query: (B, Q, C).

        Returns:
            cls_logits: (B, Q, K + 1).
            mask_embed: (B, Q, C_m).
        """
        query = self.norm(query)
        return self.cls_embed(query), self.mask_embed(query)

    def forward(self, query: Tensor, mask_features: Tensor
                ) -> Tuple[Tensor, Tensor]:
        """Predict.

        Args:
            query: (B, Q, C).
            mask_features: (B, C_m, H, W).

        Returns:
            cls_logits: (B, Q, K + 1).
            mask_logits: (B, Q, H, W).
        """
        cls_logits, mask_embed = self.classify_and_embed(query)
        return cls_logits, mask_logits_product(mask_embed, mask_features)
