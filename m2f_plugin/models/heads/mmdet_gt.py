"""mmdet ground truth as tensors at the padded batch input.

``DetDataSample``s hold instance masks as ``BitmapMasks`` / ``PolygonMasks``
(or tensors) and label maps at the size the pipeline left them; the losses
read targets at points relative to the padded batch input. Nothing here
imports mmdet.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ['fit_to_input', 'mask_tensor']


def mask_tensor(masks) -> Tensor:
    """mmdet's ``BitmapMasks`` / ``PolygonMasks`` or a tensor -> (G, H, W)
    tensor (a bitmap's array viewed, not copied, when contiguous)."""
    if isinstance(masks, Tensor):
        return masks
    array = masks.masks if isinstance(getattr(masks, 'masks', None),
                                      np.ndarray) else masks.to_ndarray()
    return torch.from_numpy(np.ascontiguousarray(array))


def fit_to_input(gt: Tensor, meta: dict, fill: int, field: str) -> Tensor:
    """Ground truth (..., h, w) -> (..., H, W) at the padded batch input.

    The losses read targets at points relative to the padded batch input
    (``batch_input_shape``), so smaller ground truth would be stretched over
    the padding: it is padded bottom-right with ``fill`` instead, as mmdet's
    ``DetDataPreprocessor`` does with ``pad_mask=True`` / ``pad_seg=True``.
    Ground truth that cannot be the image's (smaller than ``img_shape`` or
    larger than the batch input) is an error. Without ``batch_input_shape``
    in ``meta``, ``gt`` is returned as it is.
    """
    size = meta.get('batch_input_shape')
    if size is None:
        return gt
    size = (int(size[0]), int(size[1]))
    h, w = gt.shape[-2:]
    if (h, w) == size:
        return gt
    img = meta.get('img_shape')
    low = (int(img[0]), int(img[1])) if img is not None else (0, 0)
    if not (low[0] <= h <= size[0] and low[1] <= w <= size[1]):
        raise ValueError(
            f'{field} of size {(h, w)} do not fit an image of img_shape '
            f'{low} in a padded batch input of {size}: they must cover the '
            'image and may not exceed the batch input. Transform them with '
            'the image in the pipeline, and pad them to the batch input with '
            'data_preprocessor.pad_mask=True (and pad_seg=True for '
            'gt_sem_seg).')
    out = gt.new_full((*gt.shape[:-2], *size), fill)
    out[..., :h, :w] = gt
    return out
