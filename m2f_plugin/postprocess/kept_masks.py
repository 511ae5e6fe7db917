"""The way back from the decoder's mask maps to image pixels, for chosen
queries only, a few at a time.

The decoder predicts masks at stride 4 of the padded batch input. A result
needs them at the image's pixels: upsampled to the padded input, the padding
cropped away, and (for results at the original size) resized again, as
mmdet's and mmseg's heads do. Doing that for every query at once costs
(Q, H, W) floats (about 430 MB for 100 queries at 1333x800); bilinear
resizing is separable per query, so doing it for the kept queries, a few at
a time, gives the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['MaskGeometry', 'kept_masks', 'resize_masks']

# a size is a Python int eagerly, a 0-dim int64 tensor in a traced export
Size = Union[int, Tensor]


@dataclass(frozen=True)
class MaskGeometry:
    """Where one image's mask maps sit in pixel space.

    Attributes:
        padded: (Hp, Wp) of the batch input the mask maps cover, padding
            (bottom and right) included.
        image: (h, w) of the image inside it (top left).
        output: (H, W) the results are wanted at: the original image size,
            or ``image`` (no second resize).
    """

    padded: Tuple[Size, Size]
    image: Tuple[Size, Size]
    output: Tuple[Size, Size]

    @classmethod
    def from_meta(cls, meta: dict, rescale: bool = True) -> 'MaskGeometry':
        """From a toolbox data sample's metainfo (``batch_input_shape``,
        ``img_shape``, ``ori_shape``); ``rescale=False`` keeps results at
        ``img_shape``."""
        image = tuple(meta['img_shape'][:2])
        output = tuple(meta['ori_shape'][:2]) if rescale else image
        return cls(tuple(meta['batch_input_shape'][:2]), image, output)


def resize_masks(mask_logits: Tensor, geometry: MaskGeometry) -> Tensor:
    """Mask logits (N, h, w) -> (N, H, W) float32 at ``geometry.output``.

    Bilinear to the padded input, crop, bilinear to the output size: the
    two resizes of mmdet's fusion head (the second only if the output size
    is not the image size).
    """
    masks = mask_logits.float()
    padded = geometry.padded
    if _is_traced(padded) or tuple(masks.shape[-2:]) != tuple(padded):
        masks = F.interpolate(masks[None], size=padded, mode='bilinear',
                              align_corners=False)[0]
    masks = masks[:, :geometry.image[0], :geometry.image[1]]
    if geometry.output is not geometry.image:
        masks = F.interpolate(masks[None], size=geometry.output,
                              mode='bilinear', align_corners=False)[0]
    return masks


def kept_masks(mask_logits: Tensor, queries: Tensor, geometry: MaskGeometry,
               masks_per_step: int = 8) -> Iterator[Tuple[int, Tensor]]:
    """Yield ``(offset, logits)``: the (n, H, W) float32 output-size logits
    of ``queries[offset:offset + n]``, ``masks_per_step`` at a time.

    Peak extra memory is about two output-size masks per step. With
    ``masks_per_step <= 0``, or while tracing (a loop over a data-dependent
    count cannot be recorded), all of them in one step.

    Args:
        mask_logits: (Q, h, w) one image's mask logits.
        queries: (N,) long, the queries to take back to pixels.
        geometry: Where the mask maps sit.
        masks_per_step: Queries resized at once.
    """
    if masks_per_step <= 0 or _is_traced(queries):
        # one zero mask appended and dropped again: resizing an empty batch
        # fails, and the count of kept queries is only known at run time
        chosen = torch.cat([mask_logits[queries], mask_logits[:1] * 0])
        yield 0, resize_masks(chosen, geometry)[:-1]
        return
    for start in range(0, queries.shape[0], masks_per_step):
        chosen = queries[start:start + masks_per_step]
        yield start, resize_masks(mask_logits[chosen], geometry)


def _is_traced(value) -> bool:
    """Whether sizes or data are symbolic here (an export is tracing)."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return True
    return isinstance(value, (tuple, list)) and any(
        isinstance(v, Tensor) for v in value)
