"""Semantic results from the final prediction set.

``sum_q softmax(cls)[q, k] * sigmoid(up(mask_q))``, as mmseg's and mmdet's
Mask2Former compute it, made one band of output rows at a time so that the
(B, Q, H, W) upsampled masks never exist at the output size.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .kept_masks import MaskGeometry

__all__ = ['semantic_labels', 'semantic_logits', 'semantic_map']


def _resize_grid(size: int, align_corners: bool, device: torch.device
                 ) -> Tensor:
    """Normalised source coordinates of ``F.interpolate``'s bilinear resize
    along one axis, for ``F.grid_sample`` (its border padding reproduces
    interpolate's edge clamping). Independent of the input size."""
    dst = torch.arange(size, dtype=torch.float32, device=device)
    if align_corners:
        return dst * (2.0 / max(size - 1, 1)) - 1.0
    return (2.0 * dst + 1.0) / size - 1.0


def semantic_logits(cls_logits: Tensor, mask_logits: Tensor,
                    size: Tuple[int, int], align_corners: bool = False,
                    chunk: int = 1 << 24) -> Tensor:
    """Per-class logits ``sum_q softmax(cls)[q, k] * sigmoid(up(mask_q))``.

    The same as upsampling every mask to ``size`` at once (bilinear, as
    ``F.interpolate``) and contracting over queries, but done for a band of
    output rows at a time: only (B, Q, rows, W) upsampled masks exist at once
    (``chunk`` elements), and each output element is written once. Peak extra
    memory is about ``chunk`` floats instead of (B, Q, H, W). Float32.

    Args:
        cls_logits: (B, Q, K + 1); the last class ("no object") is dropped.
        mask_logits: (B, Q, h, w).
        size: Output (H, W).
        align_corners: As in ``F.interpolate``.
        chunk: Upsampled-mask elements alive at once; <= 0: the plain
            upsample-all formula in one step (no loop over rows: what
            tracing and ONNX export need; chosen while tracing anyway).

    Returns:
        (B, K, H, W) float32.
    """
    probs = cls_logits.float().softmax(-1)[..., :-1]  # (B, Q, K)
    if chunk <= 0 or torch.jit.is_tracing():
        up = F.interpolate(mask_logits.float(), size=size, mode='bilinear',
                           align_corners=align_corners).sigmoid()
        return torch.einsum('bqk,bqhw->bkhw', probs, up)
    batch, num_queries, num_classes = probs.shape
    height, width = size
    masks = mask_logits.float()
    gx = _resize_grid(width, align_corners, masks.device)
    gy = _resize_grid(height, align_corners, masks.device)
    rows = max(1, chunk // max(1, batch * num_queries * width))
    out = probs.new_empty(batch, num_classes, height * width)
    # (B, K, Q), contiguous: a view of the sliced (B, Q, K + 1) probabilities
    # has an odd leading dimension (K + 1 = 151), which sends cuBLAS to its
    # unaligned kernels for every band
    probs_t = probs.transpose(1, 2).contiguous()
    needs_grad = probs.requires_grad or masks.requires_grad
    for top, up in _sigmoid_bands(masks, gx, gy, rows, align_corners):
        # (B, K, Q) @ (B, Q, rows*W) -> this band of the output, written in
        # place (a strided output cuBLAS takes as is: no temporary, no copy);
        # out= has no autograd, so with gradients assign the band instead
        cols = slice(top * width, (top + up.shape[2]) * width)
        if needs_grad:
            out[:, :, cols] = torch.bmm(probs_t, up.flatten(2))
        else:
            torch.bmm(probs_t, up.flatten(2), out=out[:, :, cols])
    return out.view(batch, num_classes, height, width)


def semantic_map(cls_logits: Tensor, mask_logits: Tensor,
                 geometry: MaskGeometry, align_corners: bool = False,
                 chunk: int = 1 << 24) -> Tuple[Tensor, Tensor]:
    """Labels and per-class scores of one image at ``geometry.output``, as
    mmseg's ``EncoderDecoder`` makes them: per-class logits at the padded
    input, the padding cropped, a bilinear resize, the argmax.

    Args:
        cls_logits: (1, Q, K + 1).
        mask_logits: (1, Q, h, w).
        geometry: Where the mask maps sit and the output size (H, W).
        align_corners: The head's.
        chunk: As in ``semantic_logits``.

    Returns:
        ``labels`` (H, W) long and ``scores`` (K, H, W) float32.
    """
    logits = semantic_logits(cls_logits, mask_logits, geometry.padded,
                             align_corners, chunk)
    logits = logits[:, :, :geometry.image[0], :geometry.image[1]]
    logits = F.interpolate(logits, size=geometry.output, mode='bilinear',
                           align_corners=align_corners)[0]
    return logits.argmax(0), logits


def semantic_labels(cls_logits: Tensor, mask_logits: Tensor,
                    size: Tuple[int, int], valid: Optional[Dict[str, float]] = None,
                    chunk: int = 1 << 24) -> Tensor:
    """Per-pixel class ``argmax_k sum_q softmax(cls)[q, k] sigmoid(up(mask_q))``
    of one image, a band of output rows at a time.

    Args:
        cls_logits: (Q, K + 1); the last class ("no object") is dropped.
        mask_logits: (Q, h, w).
        size: Output (H, W).
        valid: ``dict(rows=, cols=)``: the share of the mask map that covers
            the image (the rest is batch padding); default all of it.
        chunk: Upsampled-mask (and class-score) elements alive at once.

    Returns:
        (H, W) long.
    """
    probs = cls_logits.float().softmax(-1)[:, :-1].t().contiguous()  # (K, Q)
    masks = mask_logits.float()[None]  # (1, Q, h, w)
    height, width = size
    valid = valid or {}
    device = masks.device
    # a resize of the valid part only: scale the [-1, 1] source grid
    gx = (_resize_grid(width, False, device) + 1) * valid.get('cols', 1.0) - 1
    gy = (_resize_grid(height, False, device) + 1) * valid.get('rows', 1.0) - 1
    rows = max(1, chunk // max(1, max(probs.shape) * width))
    out = torch.empty(height, width, dtype=torch.long, device=device)
    for top, up in _sigmoid_bands(masks, gx, gy, rows, False):
        band = up.shape[2]  # up: (1, Q, band, W)
        out[top:top + band] = (probs @ up[0].flatten(1)).argmax(0).view(
            band, width)
    return out


def _sigmoid_bands(masks: Tensor, gx: Tensor, gy: Tensor, rows: int,
                   align_corners: bool) -> Iterator[Tuple[int, Tensor]]:
    """Yield ``(top, sigmoid(up(masks)))`` for bands of ``rows`` output rows:
    masks (B, Q, h, w) resampled at the source coordinates ``gx`` (W,) and
    ``gy[top:top + rows]`` (``F.grid_sample``'s border padding reproduces
    interpolate's edge clamping), (B, Q, rows, W)."""
    batch = masks.shape[0]
    for top in range(0, gy.shape[0], rows):
        band = gy[top:top + rows]
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], band[:, None]),
                           -1)  # (rows, W, 2) as (x, y)
        yield top, F.grid_sample(masks, grid.expand(batch, -1, -1, -1),
                                 mode='bilinear', padding_mode='border',
                                 align_corners=align_corners).sigmoid_()
