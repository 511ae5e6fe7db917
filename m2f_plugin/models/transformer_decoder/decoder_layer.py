"""One masked-attention decoder layer (post-norm)."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..layers import FFN
from .attention import MultiheadAttention

__all__ = ['MaskedDecoderLayer']


class MaskedDecoderLayer(nn.Module):
    """Masked cross-attention -> norm -> self-attention -> norm -> FFN -> norm.

    Cross-attention comes first (the paper's order): the queries look at the
    image before talking to each other.

    Args:
        embed_dims: Channels C.
        num_heads: Attention heads.
        ffn_dims: FFN hidden channels.
        dropout: Dropout in attention and FFN.
        cross_attn_impl: Kernel of the masked cross-attention, see
            ``MultiheadAttention`` (self-attention over 100 queries is small
            and always uses SDPA).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 ffn_dims: int = 2048, dropout: float = 0.0,
                 cross_attn_impl: str = 'auto') -> None:
        super().__init__()
        self.cross_attn = MultiheadAttention(
            embed_dims, num_heads, dropout, impl=cross_attn_impl)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.self_attn = MultiheadAttention(embed_dims, num_heads, dropout,
                                            impl='sdpa')
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, ffn_dims, dropout)
        self.norm3 = nn.LayerNorm(embed_dims)

    def forward(self, query: Tensor, memory: Tensor, query_pos: Tensor,
                memory_pos: Tensor, attend_mask: Optional[Tensor]) -> Tensor:
        """Update the queries.

        Args:
            query: (B, Q, C).
            memory: (B, N, C) one level of the pixel decoder.
            query_pos: (B, Q, C).
            memory_pos: (B, N, C).
            attend_mask: bool (B, Q, N), True where a query may attend.

        Returns:
            (B, Q, C).
        """
        query = self.norm1(self.cross_attn(query, memory, memory, query_pos,
                                           memory_pos, attend_mask))
        query = self.norm2(self.self_attn(query, query, query, query_pos,
                                          query_pos))
        return self.norm3(self.ffn(query))
