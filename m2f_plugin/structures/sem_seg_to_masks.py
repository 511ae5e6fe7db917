"""Turn a batch of semantic label maps into per-class binary masks, batched."""
from __future__ import annotations

import torch
from torch import Tensor

from .mask_targets import SemanticTargets

__all__ = ['sem_seg_to_masks']


def sem_seg_to_masks(sem_seg: Tensor, num_classes: int,
                     ignore_index: int) -> SemanticTargets:
    """One binary mask per class present in each image (``ignore_index`` left out).

    The whole batch is converted with one host transfer (the class histogram),
    instead of one ``unique`` per image.

    Args:
        sem_seg: (B, H, W) or (B, 1, H, W) integer label maps.
        num_classes: K; valid labels are ``0 .. K-1``.
        ignore_index: Label of unlabelled pixels.

    Raises:
        ValueError: a label is neither in ``[0, K)`` nor ``ignore_index``
            (``num_classes`` does not match the dataset, or a wrong
            ``reduce_zero_label`` / ``ignore_index``).
    """
    if sem_seg.dim() == 4:
        sem_seg = sem_seg.squeeze(1)
    sem_seg = sem_seg.long()
    batch = sem_seg.shape[0]
    valid = sem_seg != ignore_index
    out_of_range = valid & ((sem_seg < 0) | (sem_seg >= num_classes))
    # bucket K counts labels out of range, bucket K+1 ignored pixels
    code = torch.where(valid, sem_seg.clamp(0, num_classes),
                       torch.full_like(sem_seg, num_classes + 1))
    code = torch.where(out_of_range, torch.full_like(code, num_classes), code)
    offsets = torch.arange(batch, device=sem_seg.device)[:, None] * (
        num_classes + 2)
    hist = torch.bincount((code.flatten(1) + offsets).flatten(),
                          minlength=batch * (num_classes + 2)).view(
                              batch, num_classes + 2)
    hist = hist.cpu()  # the one host transfer
    if hist[:, num_classes].any():
        bad = sem_seg[out_of_range].unique().tolist()[:10]
        raise ValueError(
            f'label map holds values {bad} outside [0, num_classes={num_classes})'
            f' that are not ignore_index={ignore_index}. Set the head\'s '
            f'num_classes to the number of dataset classes, or check '
            f'reduce_zero_label / ignore_index in the pipeline.')
    present = hist[:, :num_classes] > 0  # (B, K) on the host
    num_gts = present.sum(1).tolist()
    g_max = max(num_gts) if num_gts else 0
    labels = torch.full((batch, g_max), -1, dtype=torch.long)
    for b in range(batch):
        cls = present[b].nonzero().flatten()
        labels[b, :len(cls)] = cls
    labels = labels.to(sem_seg.device, non_blocking=True)
    return SemanticTargets(sem_seg=sem_seg, labels=labels, num_gts=num_gts)
