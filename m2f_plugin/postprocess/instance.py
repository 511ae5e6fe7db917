"""Instance results of one image's queries, as mmdet's
``MaskFormerFusionHead.instance_postprocess``, in tensor operations.

mmdet takes the ``max_per_image`` best (query, class) pairs, keeps the
thing classes, binarises each pair's mask at logit 0 and multiplies the
class probability by the mask's mean probability inside it. Several pairs
can share a query, so each distinct query's mask is taken back to pixels
once (``kept_masks``) and shared.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .kept_masks import MaskGeometry, kept_masks

__all__ = ['instance_results', 'masks_to_boxes']


def instance_results(cls_logits: Tensor, mask_logits: Tensor,
                     geometry: MaskGeometry, num_things: int,
                     max_per_image: int = 100, masks_per_step: int = 8,
                     sort_by_score: bool = False) -> Dict[str, Tensor]:
    """One image's instances.

    Args:
        cls_logits: (Q, K + 1) class logits; the last class is "no object".
        mask_logits: (Q, h, w) mask logits.
        geometry: Where the mask maps sit and the output size (H, W).
        num_things: Classes ``[0, num_things)`` are things.
        max_per_image: (query, class) pairs considered, <= Q * K.
        masks_per_step: Queries resized at once (see ``kept_masks``).
        sort_by_score: Order the results by score, best first (mmdet leaves
            ``topk(sorted=False)``'s order).

    Returns:
        ``labels`` (N,) long, ``scores`` (N,) float32 (class probability x
        mean mask probability), ``masks`` (N, H, W) bool, ``boxes`` (N, 4)
        float32 (x1, y1, x2, y2), N <= ``max_per_image`` (thing pairs only).

    Raises:
        ValueError: ``max_per_image`` is larger than Q * K.
    """
    num_queries, num_classes = cls_logits.shape[0], cls_logits.shape[1] - 1
    # (a trace records the sizes as tensors; the exporter checks this once)
    if not torch.jit.is_tracing() and \
            max_per_image > num_queries * num_classes:
        raise ValueError(
            f'test_cfg.max_per_image={max_per_image} is larger than '
            f'queries x classes = {num_queries} x {num_classes} = '
            f'{num_queries * num_classes}; set max_per_image <= '
            f'{num_queries * num_classes}.')
    scores = F.softmax(cls_logits, dim=-1)[:, :-1]
    top_scores, top_index = scores.flatten().topk(max_per_image,
                                                  sorted=sort_by_score)
    labels = top_index % num_classes
    queries = top_index // num_classes
    thing = labels < num_things
    top_scores, labels, queries = (top_scores[thing], labels[thing],
                                   queries[thing])

    # each distinct query once, in query order; slot: pair -> its query's row
    used = torch.zeros(num_queries, dtype=torch.long,
                       device=queries.device).index_fill(0, queries, 1)
    distinct = used.nonzero()[:, 0]
    slot = (torch.cumsum(used, 0) - 1)[queries]
    binary, mask_scores = [], []
    for _, logits in kept_masks(mask_logits, distinct, geometry,
                                masks_per_step):
        positive = logits > 0
        # mean sigmoid over the mask's own pixels (mmdet's mask score)
        mask_scores.append((logits.sigmoid() * positive).flatten(1).sum(1)
                           / (positive.flatten(1).sum(1) + 1e-6))
        binary.append(positive)
    height, width = geometry.output
    binary.append(torch.zeros((0, height, width), dtype=torch.bool,
                              device=queries.device))
    mask_scores.append(top_scores.new_zeros(0))
    masks = torch.cat(binary)[slot]
    det_scores = top_scores * torch.cat(mask_scores)[slot]
    if sort_by_score:
        order = det_scores.argsort(descending=True)
        labels, det_scores, masks = labels[order], det_scores[order], \
            masks[order]
    return dict(labels=labels, scores=det_scores, masks=masks,
                boxes=masks_to_boxes(masks))


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks, as mmdet's ``mask2bbox``.

    Args:
        masks: (N, H, W) bool.

    Returns:
        (N, 4) float32 (x1, y1, x2, y2), x2 and y2 one past the last pixel;
        all zeros for an empty mask.
    """
    def extent(any_along: Tensor, length) -> Tensor:
        # first and one-past-last index where ``any_along`` (N, L) is set
        index = torch.arange(length, device=masks.device)
        first = torch.where(any_along, index, length).amin(1)
        end = torch.where(any_along, index + 1, 0).amax(1)
        return first, end

    x1, x2 = extent(masks.any(1), masks.shape[2])
    y1, y2 = extent(masks.any(2), masks.shape[1])
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return torch.where((x2 > 0)[:, None], boxes, boxes.new_zeros(()))
