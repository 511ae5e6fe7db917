"""``nn.MultiheadAttention`` in plain ops, for backbones that use it.

torch's own implementation writes the key length into a ``Reshape`` of a
TorchScript trace, so a backbone with it (mmseg's MiT and ViT, through
mmcv's ``MultiheadAttention``) would only run at the traced size. The
exporter swaps it for ``TraceableMultiheadAttention`` (same weights) while
it traces, and puts the original back. This package's own layers need no
swap: they trace as they are.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['TraceableMultiheadAttention', 'traceable_attention']


class TraceableMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (eval mode, no masks) in linear, reshape and
    SDPA ops; keeps the wrapped module (and its weights) as ``mha``.

    Args:
        mha: The module to stand in for.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if mha.bias_k is not None or mha.add_zero_attn or \
                not mha._qkv_same_embed_dim:
            raise NotImplementedError(
                'export: nn.MultiheadAttention with bias_k/bias_v, '
                'add_zero_attn or kdim/vdim != embed_dim is not supported')
        self.mha = mha

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True,
                attn_mask: Optional[Tensor] = None,
                average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, None]:
        """As ``nn.MultiheadAttention.forward``: query (L, B, C), key and
        value (S, B, C) (batch first if the module is). Returns (output,
        None): no attention weights."""
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            raise NotImplementedError('export: attention masks in '
                                      'nn.MultiheadAttention are not supported')
        m = self.mha
        if m.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_q, w_k, w_v = m.in_proj_weight.chunk(3)
        b_q, b_k, b_v = (m.in_proj_bias.chunk(3) if m.in_proj_bias is not None
                         else (None, None, None))

        def split_heads(x: Tensor) -> Tensor:  # (L, B, C) -> (B, h, L, C/h)
            return x.reshape(x.shape[0], -1, m.num_heads,
                             m.head_dim).permute(1, 2, 0, 3)

        out = F.scaled_dot_product_attention(
            split_heads(F.linear(query, w_q, b_q)),
            split_heads(F.linear(key, w_k, b_k)),
            split_heads(F.linear(value, w_v, b_v)))
        out = m.out_proj(out.permute(2, 0, 1, 3).flatten(2))  # (L, B, C)
        return (out.transpose(0, 1) if m.batch_first else out), None


@contextlib.contextmanager
def traceable_attention(model: nn.Module) -> Iterator[int]:
    """Temporarily replace every ``nn.MultiheadAttention`` in ``model`` by
    ``TraceableMultiheadAttention``; yields how many were replaced."""
    swapped = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children()
               if isinstance(child, nn.MultiheadAttention)]
    for parent, name, child in swapped:
        setattr(parent, name, TraceableMultiheadAttention(child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
