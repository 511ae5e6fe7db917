"""Mask targets from instance masks, alone or with a stuff label map.

``instances_to_masks``: instance segmentation, one bool mask per instance
(masks may overlap) -> ``InstanceMaskTargets``.

``panoptic_to_masks``: panoptic segmentation, thing masks plus a label map
whose stuff pixels carry their class -> one segment map,
``SegmentMapTargets`` (things first, then one target per stuff class
present, as mmdet's ``preprocess_panoptic_gt``). A segment map cannot hold
overlapping masks: a batch whose masks overlap (not panoptic data after all)
falls back to ``InstanceMaskTargets``, so no pixel is lost either way.

Each builder reads the host once (label ranges, and for panoptic data the
stuff histogram and the overlap counts, in one transfer).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..ops.mask_sample import MASK_BORDER
from .mask_targets import InstanceMaskTargets, SegmentMapTargets

__all__ = ['UNLABELLED_SEGMENT', 'instances_to_masks', 'panoptic_to_masks']

# id of the pixels of no target in a segment map: below every segment id and
# the padding id (-1), so neither ever reads it as a target
UNLABELLED_SEGMENT = -2


def _mask_shape(masks: Sequence[Tensor], fields: str) -> tuple:
    """The common (H, W) of every image's (G_b, H, W) masks, or a clear
    error: the masks of a batch must be padded to one size."""
    shapes = {tuple(m.shape[-2:]) for m in masks}
    if len(shapes) != 1:
        raise ValueError(
            f'{fields} of one batch have different sizes {sorted(shapes)}; '
            'pad them to the batch input shape (mmdet: pad_mask=True and '
            'pad_seg=True in the DetDataPreprocessor)')
    return shapes.pop()


def _check_pairs(labels: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """One (G_b,) label set and one (G_b, H, W) mask set per image."""
    if len(labels) != len(masks):
        raise ValueError(f'{len(labels)} label sets for {len(masks)} mask '
                         'sets; need one of each per image')
    for lab, m in zip(labels, masks):
        if m.dim() != 3 or m.shape[0] != lab.numel():
            raise ValueError(f'masks {tuple(m.shape)} do not match labels '
                             f'{tuple(lab.shape)}: need (G, H, W) and (G,)')


def _padded_labels(labels: Sequence[Tensor], num_gts: List[int],
                   width: int, device: torch.device) -> Tensor:
    """(B, G) long labels, padding -1, from per-image (G_b,) labels."""
    out = torch.full((len(labels), width), -1, dtype=torch.long,
                     device=device)
    for b, (lab, n) in enumerate(zip(labels, num_gts)):
        if n:
            out[b, :n] = lab.to(device, torch.long, non_blocking=True)
    return out


def _label_range_error(found: Sequence[int], num_classes: int,
                       fields: str) -> ValueError:
    return ValueError(
        f'{fields} hold class labels {sorted(set(found))} outside [0, '
        f'num_classes={num_classes}); set num_things_classes + '
        'num_stuff_classes to the number of dataset classes')


def _build_instances(labels: Sequence[Tensor], masks: Sequence[Tensor],
                     size: tuple, device: torch.device
                     ) -> InstanceMaskTargets:
    """Stack masks into bordered planes, with the empty plane last."""
    num_gts = [int(m.shape[0]) for m in masks]
    total, g_max = sum(num_gts), max(num_gts, default=0)
    h, w = size
    border = MASK_BORDER
    planes = torch.zeros(total + 1, h + 2 * border, w + 2 * border,
                         dtype=torch.bool, device=device)
    plane_index = torch.full((len(masks), g_max), total, dtype=torch.long)
    start = 0
    for b, (m, n) in enumerate(zip(masks, num_gts)):
        if n:
            # one copy each: device and dtype (uint8 -> bool) at once
            planes[start:start + n, border:-border, border:-border] = m
            plane_index[b, :n] = torch.arange(start, start + n)
        start += n
    return InstanceMaskTargets(
        labels=_padded_labels(labels, num_gts, g_max, device),
        num_gts=num_gts, planes=planes,
        plane_index=plane_index.to(device, non_blocking=True))


def instances_to_masks(labels: Sequence[Tensor], masks: Sequence[Tensor],
                       num_classes: int,
                       device: Optional[torch.device] = None
                       ) -> InstanceMaskTargets:
    """One target per instance; masks may overlap.

    Args:
        labels: B tensors (G_b,), class of each instance.
        masks: B tensors (G_b, H, W), bool or 0/1 integers, on any device
            (copied once into the targets' storage).
        num_classes: K; labels must lie in [0, K).
        device: Of the targets (default: the first labels').

    Raises:
        ValueError: masks of different sizes, or labels out of range.
    """
    _check_pairs(labels, masks)
    device = device or (labels[0].device if labels else torch.device('cpu'))
    size = _mask_shape(masks, 'instance masks')
    flat = torch.cat([lab.reshape(-1).to(device) for lab in labels]).long()
    if flat.numel():
        low, high = torch.stack([flat.min(), flat.max()]).tolist()
        if low < 0 or high >= num_classes:
            bad = flat[(flat < 0) | (flat >= num_classes)].tolist()
            raise _label_range_error(bad, num_classes, 'gt_instances.labels')
    return _build_instances(labels, masks, size, device)


def panoptic_to_masks(thing_labels: Sequence[Tensor],
                      thing_masks: Sequence[Tensor],
                      sem_seg: Sequence[Tensor], num_things: int,
                      num_stuff: int, ignore_index: int = 255,
                      device: Optional[torch.device] = None
                      ) -> SegmentMapTargets | InstanceMaskTargets:
    """Things, then one target per stuff class present, per image.

    Stuff comes from the label map: every class in ``[num_things, num_things
    + num_stuff)``. Thing classes and ``ignore_index`` there make no target
    (a crowd region carries its thing class in the map and has no mask: it
    is ignored, as in mmdet).

    Args:
        thing_labels: B tensors (G_b,), thing classes.
        thing_masks: B tensors (G_b, H, W), bool or 0/1 integers.
        sem_seg: B integer label maps (H, W) or (1, H, W) (or one (B, H, W)
            tensor).
        num_things: Thing classes T.
        num_stuff: Stuff classes S; K = T + S.
        ignore_index: Unlabelled pixels' label.
        device: Of the targets (default: the first label map's).

    Returns:
        ``SegmentMapTargets`` (ids: stuff class for stuff, K + i for the i-th
        thing, ``UNLABELLED_SEGMENT`` elsewhere); ``InstanceMaskTargets`` if
        two masks overlap.

    Raises:
        ValueError: sizes differ, a thing label is outside [0, K), or a map
            label is neither in [0, K) nor ``ignore_index``.
    """
    batch = len(sem_seg)
    num_classes = num_things + num_stuff
    _check_pairs(thing_labels, thing_masks)
    if len(thing_labels) != batch:
        raise ValueError(f'{len(thing_labels)} label sets for {batch} label '
                         'maps; need one of each per image')
    size = _mask_shape(list(thing_masks) + list(sem_seg),
                       'gt_instances.masks and gt_sem_seg')
    device = device or sem_seg[0].device
    sem_seg = torch.stack([m.reshape(size) for m in sem_seg]).to(
        device, torch.long, non_blocking=True)  # (B, H, W)
    # stuff histogram: bucket S counts every other pixel
    is_stuff = (sem_seg >= num_things) & (sem_seg < num_classes)
    code = torch.where(is_stuff, sem_seg - num_things,
                       torch.full_like(sem_seg, num_stuff))
    offsets = torch.arange(batch, device=device)[:, None] * (num_stuff + 1)
    hist = torch.bincount((code.flatten(1) + offsets).flatten(),
                          minlength=batch * (num_stuff + 1)).view(
                              batch, num_stuff + 1)[:, :num_stuff]
    out_of_range = (sem_seg != ignore_index) & ((sem_seg < 0) |
                                                (sem_seg >= num_classes))
    segment_map = torch.where(is_stuff, sem_seg,
                              torch.full_like(sem_seg, UNLABELLED_SEGMENT))
    # things painted over the stuff; overlap = pixels claimed twice
    masks = []
    overlap = torch.zeros(batch, dtype=torch.long, device=device)
    for b, m in enumerate(thing_masks):
        m = m.to(device, torch.bool, non_blocking=True)
        masks.append(m)
        if m.shape[0] == 0:
            continue
        covered = m.any(0)
        first = m.to(torch.uint8).argmax(0)
        segment_map[b] = torch.where(covered, first + num_classes,
                                     segment_map[b])
        overlap[b] = (m.sum() + is_stuff[b].sum() -
                      (covered | is_stuff[b]).sum())
    labels = torch.cat([lab.reshape(-1).to(device) for lab in thing_labels]
                       + [torch.zeros(1, dtype=torch.long, device=device)])
    summary = torch.cat([  # the one host transfer
        hist.flatten(), overlap, out_of_range.sum()[None],
        labels.long().min()[None], labels.long().max()[None]]).cpu()
    low, high = summary[-2:].tolist()  # the 0 appended keeps both defined
    if low < 0 or high >= num_classes:
        raise _label_range_error(
            [v for v in labels.tolist() if not 0 <= v < num_classes],
            num_classes, 'gt_instances.labels')
    if summary[-3]:
        bad = sem_seg[out_of_range].unique().tolist()[:10]
        raise ValueError(
            f'gt_sem_seg holds labels {bad} outside [0, num_things_classes + '
            f'num_stuff_classes = {num_classes}) that are not '
            f'ignore_index={ignore_index}; set num_things_classes and '
            'num_stuff_classes to the dataset\'s')
    present = summary[:batch * num_stuff].view(batch, num_stuff) > 0
    stuff = [(present[b].nonzero().flatten() + num_things)
             for b in range(batch)]
    things = [int(m.shape[0]) for m in masks]
    if summary[batch * num_stuff:batch * num_stuff + batch].any():
        return _build_instances(
            [torch.cat([t.reshape(-1).to(device).long(), s.to(device)])
             for t, s in zip(thing_labels, stuff)],
            [torch.cat([m, sem_seg[b][None] == s.to(device)[:, None, None]])
             for b, (m, s) in enumerate(zip(masks, stuff))],
            size, device)
    num_gts = [t + len(s) for t, s in zip(things, stuff)]
    g_max = max(num_gts, default=0)
    segment_ids = torch.full((batch, g_max), -1, dtype=torch.long)
    for b, (t, s) in enumerate(zip(things, stuff)):
        segment_ids[b, :t] = torch.arange(num_classes, num_classes + t)
        segment_ids[b, t:t + len(s)] = s
    # things' classes stay on the device; stuff's came from the host
    stuff_labels = torch.where(segment_ids < num_classes, segment_ids, -1)
    labels = stuff_labels.to(device, non_blocking=True)
    for b, (lab, t) in enumerate(zip(thing_labels, things)):
        if t:
            labels[b, :t] = lab.to(device, torch.long, non_blocking=True)
    return SegmentMapTargets(labels=labels, num_gts=num_gts,
                             segment_map=segment_map,
                             segment_ids=segment_ids.to(device,
                                                        non_blocking=True))
