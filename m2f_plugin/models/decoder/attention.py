"""Multi-head attention with ``nn.MultiheadAttention``'s parameters, run by SDPA.

Keeping the parameter layout (``in_proj_weight``, ``in_proj_bias``, ``out_proj``)
keeps checkpoints compatible; calling ``F.scaled_dot_product_attention`` lets the
attention mask broadcast over heads, so it is never repeated per head.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['MultiheadAttention']


class MultiheadAttention(nn.Module):
    """``out = query + out_proj(attn(query + query_pos, key + key_pos, value))``.

    Args:
        embed_dims: Channels C.
        num_heads: Heads.
        dropout: Attention-probability dropout (training only).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims,
                                                       embed_dims))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dims))
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                query_pos: Optional[Tensor] = None,
                key_pos: Optional[Tensor] = None,
                attend_mask: Optional[Tensor] = None) -> Tensor:
        """Attend and add the residual.

        Args:
            query: (B, Q, C).
            key, value: (B, N, C).
            query_pos: (B, Q, C) added to the query, or None.
            key_pos: (B, N, C) added to the key, or None.
            attend_mask: bool (B, Q, N), True where a query MAY attend.

        Returns:
            (B, Q, C).
        """
        b, nq, c = query.shape
        h = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query if query_pos is None else query + query_pos, w_q, b_q)
        k = F.linear(key if key_pos is None else key + key_pos, w_k, b_k)
        v = F.linear(value, w_v, b_v)
        # (B, N, C) -> (B, heads, N, C/heads)
        q = q.view(b, nq, h, -1).transpose(1, 2)
        k = k.view(b, k.shape[1], h, -1).transpose(1, 2)
        v = v.view(b, v.shape[1], h, -1).transpose(1, 2)
        mask = None if attend_mask is None else attend_mask[:, None]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, nq, c)
        return query + self.out_proj(out)
