"""Class and mask predictions from decoder queries."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..layers import MLP, splitk_bmm

__all__ = ['MaskClassPredictor', 'mask_logits_product']


class _MaskLogits(torch.autograd.Function):
    """(B, Q, C) x (B, C, HW) -> (B, Q, HW), with a split-K backward for the
    embeddings: their gradient (B, Q, HW) x (B, HW, C) reduces over 16k
    pixels into a 100 x 256 output, which cuBLAS's batched GEMM runs on a
    few thread blocks (~0.5 ms per layer on an H100 at batch 2)."""

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


def mask_logits_product(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
    """``einsum('bqc,bchw->bqhw')``; on CUDA with gradients, through
    ``_MaskLogits`` (same values, faster backward).

    Args:
        mask_embed: (B, Q, C).
        mask_features: (B, C, H, W).

    Returns:
        (B, Q, H, W).
    """
    b, c, h, w = mask_features.shape
    if (not mask_features.is_cuda or not torch.is_grad_enabled() or
            torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
        return torch.einsum('bqc,bchw->bqhw', mask_embed, mask_features)
    if torch.is_autocast_enabled(mask_features.device.type):
        # the Function runs outside autocast: cast as autocast would for bmm
        dtype = torch.get_autocast_dtype(mask_features.device.type)
        mask_embed, mask_features = mask_embed.to(dtype), \
            mask_features.to(dtype)
    else:
        dtype = torch.promote_types(mask_embed.dtype, mask_features.dtype)
        mask_embed, mask_features = mask_embed.to(dtype), \
            mask_features.to(dtype)
    with torch.autocast(mask_features.device.type, enabled=False):
        out = _MaskLogits.apply(mask_embed, mask_features.reshape(b, c, h * w))
    return out.view(b, -1, h, w)


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
        query = self.norm(query)
        mask_embed = self.mask_embed(query)
        mask_logits = mask_logits_product(mask_embed, mask_features)
        return self.cls_embed(query), mask_logits
