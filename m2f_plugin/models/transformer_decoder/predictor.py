"""Class and mask predictions from decoder queries."""
from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from ..layers import MLP

__all__ = ['MaskClassPredictor']


class MaskClassPredictor(nn.Module):
    """LayerNorm the queries, then classify them and embed them for masks.

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

    def forward(self, query: Tensor) -> Tuple[Tensor, Tensor]:
        """Class logits and mask embeddings (the masks are their product with
        the mask features, see ``Predictions``).

        Args:
            query: (B, Q, C).

        Returns:
            cls_logits: (B, Q, K + 1).
            mask_embed: (B, Q, C_m).
        """
        query = self.norm(query)
        return self.cls_embed(query), self.mask_embed(query)
