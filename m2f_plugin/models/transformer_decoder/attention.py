"""Multi-head attention with ``nn.MultiheadAttention``'s parameters.

Keeping the parameter layout (``in_proj_weight``, ``in_proj_bias``, ``out_proj``)
keeps checkpoints compatible. The attention mask broadcasts over heads, so it is
never repeated per head.

Two kernels: ``F.scaled_dot_product_attention`` (memory-efficient: no (Q, N)
probabilities kept for backward) and plain batched matmuls + softmax. With
Mask2Former's 100 queries the fused kernels parallelise over query blocks and
heads only (2 x 8 blocks per image), so the matmul form is several times faster
against thousands of keys; it keeps the (B, heads, Q, N) probabilities for
backward, which costs memory in training.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['MultiheadAttention', 'ATTN_IMPLS']

# 'auto': matmuls in eval mode (inference), SDPA in training mode
ATTN_IMPLS = ('auto', 'sdpa', 'math')


def _math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor],
                    dropout_p: float) -> Tensor:
    """softmax(q k^T / sqrt(d), masked) v with (B, h, Q, d) / (B, h, N, d)
    inputs and a bool mask broadcastable to (B, h, Q, N), True = attend."""
    logits = torch.matmul(q * q.shape[-1]**-0.5, k.transpose(-2, -1))
    if mask is not None:  # in place: matmul's backward does not need it
        logits.masked_fill_(~mask, float('-inf'))
    attn = logits.softmax(-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return torch.matmul(attn.to(v.dtype), v)


class MultiheadAttention(nn.Module):
    """``out = query + out_proj(attn(query + query_pos, key + key_pos, value))``.

    Args:
        embed_dims: Channels C.
        num_heads: Heads.
        dropout: Attention-probability dropout (training only).
        impl: 'sdpa', 'math' or 'auto' (math in eval mode, SDPA in
            training mode); see the module docstring.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 dropout: float = 0.0, impl: str = 'auto') -> None:
        super().__init__()
        if impl not in ATTN_IMPLS:
            raise ValueError(f'attention impl={impl!r}: choose one of '
                             f'{ATTN_IMPLS}')
        self.impl = impl
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
        dropout_p = self.dropout if self.training else 0.0
        impl = self.impl
        if impl == 'auto':
            impl = 'sdpa' if self.training else 'math'
        if impl == 'math':
            out = _math_attention(q, k, v, mask, dropout_p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(b, nq, c)
        return query + self.out_proj(out)
