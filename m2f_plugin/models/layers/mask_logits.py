"""Mask logits as the product of query embeddings and per-pixel features.

Every prediction set's masks are ``einsum('bqc,bchw->bqhw')`` of its (B, Q, C)
mask embeddings and the (B, C, H, W) mask features shared by all sets. The
(B, Q, H, W) result is large (52 MB a set at batch 8, 512x512 input) while its
factors are small, so training keeps the factors (``MaskLogitSets``) and
multiplies out only what the matcher (no gradient, one set at a time) and the
mask losses (the matched queries only) read.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .splitk_bmm import splitk_bmm

__all__ = ['MaskLogitSets', 'mask_logits_product']


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


class MaskLogitSets(Sequence[Tensor]):
    """S prediction sets' mask logits, kept as their factors.

    Indexing multiplies one set out, ``sets[s]`` -> (B, Q, H, W), with
    gradients when they are enabled; the matcher reads the sets this way,
    one at a time and without gradients, so at most one full set exists.
    ``matched`` multiplies out only the matched queries for the mask losses.
    Compared with keeping every set's (B, Q, H, W) logits, this saves their
    memory in the forward pass (S x 52 MB at batch 8, 512x512) and the dense
    (B, Q, H, W) gradients that indexing them creates in the backward pass.

    Args:
        embeds: S mask embeddings, each (B, Q, C).
        features: Mask features (B, C, H, W).
    """

    def __init__(self, embeds: Sequence[Tensor], features: Tensor) -> None:
        if not embeds:
            raise ValueError('MaskLogitSets needs at least one set')
        b, c = features.shape[:2]
        for e in embeds:
            if e.dim() != 3 or e.shape[0] != b or e.shape[2] != c:
                raise ValueError(
                    f'mask embeddings must be (B={b}, Q, C={c}) to match the '
                    f'features {tuple(features.shape)}, got {tuple(e.shape)}')
        self.embeds: List[Tensor] = list(embeds)
        self.features = features

    def __len__(self) -> int:
        return len(self.embeds)

    def __getitem__(self, index):  # int -> Tensor, slice -> MaskLogitSets
        if isinstance(index, slice):
            return MaskLogitSets(self.embeds[index], self.features)
        return mask_logits_product(self.embeds[index], self.features)

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    @property
    def device(self) -> torch.device:
        """Device of the features."""
        return self.features.device

    def matched(self, matches: Sequence[Tuple[Tensor, Tensor, Tensor]],
                num_targets: int) -> Tensor:
        """Logits of the matched queries, (M, H, W), set by set in match order.

        Row ``m`` is ``sets[s][b_m, q_m]`` for the ``m``-th match of set
        ``s``. The matched embeddings are scattered into a (B, S * G, C)
        block at slot ``s * G + g`` (every set matches each of an image's
        targets once, so slots never collide) and multiplied out in one
        product: S * G rows per image instead of S * Q.

        Args:
            matches: S ``(batch_idx, query_idx, target_idx)``, each (M_s,).
            num_targets: G, the padded target count (``target_idx < G``).
        """
        if len(matches) != len(self):
            raise ValueError(f'{len(matches)} matches for {len(self)} sets')
        b, c, h, w = self.features.shape
        slots = len(self) * num_targets
        b_idx = torch.cat([m[0] for m in matches])
        slot = torch.cat([m[2] + s * num_targets
                          for s, m in enumerate(matches)])
        chosen = torch.cat([e[m[0], m[1]]
                            for e, m in zip(self.embeds, matches)])  # (M, C)
        block = chosen.new_zeros(b, slots, c).index_put((b_idx, slot),
                                                        chosen)
        logits = mask_logits_product(block, self.features)  # (B, S*G, H, W)
        return logits[b_idx, slot]
