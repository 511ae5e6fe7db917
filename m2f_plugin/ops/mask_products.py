"""Mask logits, ``einsum('bqc,bchw->bqhw')``, and long, thin products with
the reduction split across the GPU.

Mask2Former has several products whose output is tiny and whose reduction is
long: the matcher's costs, (B, Q, P) x (B, P, G) with P = 12544, and the
gradient of the mask embeddings, (B, Q, HW) x (B, HW, C) with HW = 16384.
cuBLAS's batched GEMM does not split the reduction, so such a product runs on
a handful of thread blocks (2 x 4 tiles of 64 x 64 at batch 2) and takes
~0.3-0.5 ms on an H100 where 30 us would do. Splitting K into ``splits``
independent products (one batched GEMM of ``B * splits`` problems) and summing
them fills the GPU. On the CPU every product here is the plain one.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['mask_logits', 'mask_logits_splitk_backward', 'splitk_bmm']


def mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """Mask logits ``einsum('bqc,bchw->bqhw')``.

    Args:
        mask_embed: (B, Q, C).
        mask_features: (B, C, H, W).

    Returns:
        (B, Q, H, W).
    """
    return torch.einsum('bqc,bchw->bqhw', mask_embed, mask_features)


def _auto_splits(batch: int, m: int, n: int, k: int) -> int:
    """Enough pieces for ~128 output tiles of 64 x 64, each >= 512 deep; 1
    (plain bmm) when fewer than 4 pieces would do: splitting copies the left
    operand, which only pays when it multiplies the parallelism."""
    tiles = batch * -(-m // 64) * -(-n // 64)
    splits = max(1, min(128 // max(tiles, 1), k // 512))
    return splits if splits >= 4 else 1


def splitk_bmm(a: Tensor, b: Tensor, splits: int = 0) -> Tensor:
    """``torch.bmm(a, b)`` with the reduction split into ``splits`` pieces.

    Args:
        a: (B, M, K).
        b: (B, K, N).
        splits: Pieces of K (0: chosen from the shapes; 1: plain bmm). Only
            used on CUDA; elsewhere this is ``torch.bmm``.

    Returns:
        (B, M, N), summed in the matmul's output dtype.
    """
    batch, m, k = a.shape
    n = b.shape[-1]
    if splits == 0:
        splits = _auto_splits(batch, m, n, k) if a.is_cuda else 1
    if splits <= 1:
        return torch.bmm(a, b)
    chunk = -(-k // splits)
    pad = chunk * splits - k
    if pad:  # zero padding adds nothing to the sums
        a = F.pad(a, (0, pad))
        b = F.pad(b, (0, 0, 0, pad))
    # (B, M, s, c) -> (B, s, M, c): one copy of a; b's pieces are views
    a = a.reshape(batch, m, splits, chunk).transpose(1, 2).reshape(
        batch * splits, m, chunk)
    b = b.reshape(batch * splits, chunk, n)
    return torch.bmm(a, b).view(batch, splits, m, n).sum(1)


class _MaskLogits(torch.autograd.Function):
    """(B, Q, C) x (B, C, HW) -> (B, Q, HW), with a split-K backward for the
    embeddings: their gradient (B, Q, HW) x (B, HW, C) reduces over 16k
    pixels into a 100 x 256 output."""

    @staticmethod
    def forward(ctx, embed: Tensor, feats: Tensor) -> Tensor:
        """embed (B, Q, C), feats (B, C, HW) -> (B, Q, HW)."""
        ctx.save_for_backward(embed, feats)
        return torch.bmm(embed, feats)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor],
                                              Optional[Tensor]]:
        """grad (B, Q, HW) -> grads of embed (split-K) and feats."""
        embed, feats = ctx.saved_tensors
        grad_embed = grad_feats = None
        if ctx.needs_input_grad[0]:
            grad_embed = splitk_bmm(grad, feats.transpose(1, 2)).to(
                embed.dtype)
        if ctx.needs_input_grad[1]:
            grad_feats = torch.bmm(embed.transpose(1, 2), grad).to(
                feats.dtype)
        return grad_embed, grad_feats


def mask_logits_splitk_backward(mask_embed: Tensor,
                                mask_features: Tensor) -> Tensor:
    """``mask_logits`` whose backward splits the embeddings' gradient over
    the pixels (``splitk_bmm``). Same values and gradients as the einsum, in
    the dtype autocast would give ``bmm``.

    Args:
        mask_embed: (B, Q, C).
        mask_features: (B, C, H, W).

    Returns:
        (B, Q, H, W).
    """
    b, c, h, w = mask_features.shape
    device = mask_features.device.type
    if torch.is_autocast_enabled(device):
        # the Function runs outside autocast: cast as autocast would for bmm
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(mask_embed.dtype, mask_features.dtype)
    with torch.autocast(device, enabled=False):
        out = _MaskLogits.apply(mask_embed.to(dtype),
                                mask_features.to(dtype).reshape(b, c, h * w))
    return out.view(b, -1, h, w)
