"""Panoptic fusion of one image's queries, as mmdet's
``MaskFormerFusionHead.panoptic_postprocess``, in tensor operations.

mmdet keeps the queries whose best class is not "no object" and scores
above ``object_mask_thr``, gives each pixel to the kept query with the
largest ``score * sigmoid(mask)``, drops a query whose share of its own
mask (``sigmoid >= 0.5``) that it won is below ``iou_thr``, and paints the
rest: stuff as its class (segments of one stuff class merge), things as
``class + instance_id * INSTANCE_OFFSET`` with ids 1, 2, ... in query order.
Here the pixel owner is a running argmax over the kept queries, a few at a
time, and the per-query decisions are vector operations (a scatter-add for
the areas, a cumulative sum for the instance ids), so the same code runs
eagerly and in an exported graph.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .kept_masks import MaskGeometry, kept_masks

__all__ = ['INSTANCE_OFFSET', 'panoptic_fusion']

# mmdet's panoptic id encoding (mmdet.evaluation.functional.INSTANCE_OFFSET)
INSTANCE_OFFSET = 1000


def panoptic_fusion(cls_logits: Tensor, mask_logits: Tensor,
                    geometry: MaskGeometry, num_things: int,
                    object_mask_thr: float = 0.8, iou_thr: float = 0.8,
                    filter_low_score: bool = False, masks_per_step: int = 8,
                    instance_offset: int = INSTANCE_OFFSET
                    ) -> Tuple[Tensor, Tensor]:
    """One image's panoptic map and its segments.

    Args:
        cls_logits: (Q, K + 1) class logits; the last class is "no object".
        mask_logits: (Q, h, w) mask logits (any resolution, see
            ``MaskGeometry``).
        geometry: Where the mask maps sit and the output size (H, W).
        num_things: Classes ``[0, num_things)`` are things, the rest stuff.
        object_mask_thr: Keep queries whose class probability is above it.
        iou_thr: Drop a kept query that wins less than this share of its
            own mask.
        filter_low_score: Also leave void the pixels of a segment where its
            own mask probability is below 0.5.
        masks_per_step: Queries resized at once (see ``kept_masks``).
        instance_offset: Thing ids are ``class + instance_id * offset``.

    Returns:
        ``panoptic`` (H, W) int32: stuff pixels hold their class, thing
        pixels ``class + instance_id * instance_offset``, void pixels K;
        ``segments`` (N, 4) float64, one row per segment in the map,
        sorted by id: (id, class, score, area).
    """
    num_classes = cls_logits.shape[-1] - 1
    scores, labels = F.softmax(cls_logits, dim=-1).max(-1)
    keep = (labels.ne(num_classes) & (scores > object_mask_thr)
            ).nonzero()[:, 0]
    kept_scores, kept_labels = scores[keep], labels[keep]

    # running argmax of score * sigmoid(mask) over the kept queries; owner 0
    # is "nobody" (its -1 loses to every kept query), so owner k > 0 is
    # kept query k - 1, and ties go to the earlier query as in one argmax
    height, width = geometry.output
    best = torch.full((1, height, width), -1.0, device=cls_logits.device)
    owner = torch.zeros((height, width), dtype=torch.long,
                        device=cls_logits.device)
    owner_prob = torch.zeros((1, height, width), device=cls_logits.device)
    own_areas = [keep.new_zeros(0)]
    for start, logits in kept_masks(mask_logits, keep, geometry,
                                    masks_per_step):
        probs = logits.sigmoid()
        own_areas.append((probs >= 0.5).flatten(1).sum(1))
        weighted = kept_scores[start:start + probs.shape[0], None, None] * probs
        best, index = torch.cat([best, weighted]).max(0, keepdim=True)
        won = index > 0
        owner = torch.where(won[0], index[0] + start, owner)
        owner_prob = torch.where(
            won, torch.cat([owner_prob, probs]).gather(0, index), owner_prob)
    own_area = torch.cat(own_areas)  # (N,) pixels with sigmoid >= 0.5

    # per kept query: the pixels it won, and whether it is painted
    won_area = _count(owner, keep.shape[0] + 1)[1:]
    share = won_area.double() / own_area.double().clamp(min=1)
    painted = (won_area > 0) & (own_area > 0) & (share >= iou_thr)
    thing = kept_labels < num_things
    instance_id = torch.cumsum((painted & thing).long(), 0)
    ids = torch.where(thing, kept_labels + instance_id * instance_offset,
                      kept_labels)
    void = torch.full((1,), num_classes, dtype=ids.dtype, device=ids.device)
    # owner 0 and unpainted owners read void
    pixel_ids = torch.cat([void, torch.where(painted, ids, void)])[owner]
    if filter_low_score:
        pixel_ids = torch.where(owner_prob[0] >= 0.5, pixel_ids, void)
    panoptic = pixel_ids.to(torch.int32)
    return panoptic, _segments(panoptic, owner, painted, thing, ids,
                               kept_labels, kept_scores, num_classes)


def _count(index: Tensor, length: int) -> Tensor:
    """(length,) long: how many pixels of ``index`` (H, W) hold each value
    (``bincount`` with a fixed length, as a scatter-add that exports)."""
    flat = index.flatten()
    return torch.zeros(length, dtype=torch.long, device=flat.device
                       ).scatter_add(0, flat, torch.ones_like(flat))


def _segments(panoptic: Tensor, owner: Tensor, painted: Tensor, thing: Tensor,
              ids: Tensor, labels: Tensor, scores: Tensor,
              num_classes: int) -> Tensor:
    """(N, 4) float64 rows (id, class, score, area) of the segments present
    in ``panoptic``: one per thing instance; one per stuff class (its
    queries merge; score: their best)."""
    # pixels still painted after the low-score filter, per owner
    shown = torch.where(panoptic != num_classes, owner,
                        torch.zeros_like(owner))
    area = _count(shown, ids.shape[0] + 1)[1:]
    present = painted & (area > 0)
    things = present & thing
    thing_rows = torch.stack([ids[things].double(), labels[things].double(),
                              scores[things].double(), area[things].double()],
                             1)
    # stuff queries merge by class: (N, K) one-hot of the shown stuff queries
    stuff = present & ~thing
    classes = torch.arange(num_classes, device=labels.device)
    member = (labels[:, None] == classes[None]) & stuff[:, None]
    class_area = (member.long() * area[:, None]).sum(0)
    # a zero row first, so that the max over no queries is defined
    class_score = torch.cat([
        scores.new_zeros(1, num_classes),
        torch.where(member, scores[:, None], scores.new_zeros(()))
    ]).amax(0)
    shown_classes = (class_area > 0).nonzero()[:, 0]
    stuff_rows = torch.stack([
        shown_classes.double(), shown_classes.double(),
        class_score[shown_classes].double(), class_area[shown_classes].double()
    ], 1)
    # stuff ids (class < K) sort before thing ids (>= instance_offset)
    return torch.cat([stuff_rows, thing_rows])
