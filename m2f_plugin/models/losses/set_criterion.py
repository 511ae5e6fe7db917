"""Mask2Former's set criterion: match, then class + point-sampled mask losses."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...ops.point_sample import (
    point_sample,
    uncertain_point_coords,
    uniform_points,
)
from ...structures import MaskTargets, Match, Predictions
from ..matcher import M2FHungarianMatcher
from .class_loss import M2FClassLoss
from .mask_losses import M2FPointBCELoss, M2FPointDiceLoss

__all__ = ['SetCriterion', 'loss_names']


def loss_names(num_sets: int) -> List[str]:
    """mmdet's keys: ``d{i}.loss_*`` for auxiliary sets, plain for the last."""
    names = []
    for s in range(num_sets):
        prefix = '' if s == num_sets - 1 else f'd{s}.'
        names += [f'{prefix}loss_cls', f'{prefix}loss_mask',
                  f'{prefix}loss_dice']
    return names


def _mean_over_ranks(x: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x.div_(dist.get_world_size()))
    return x


class SetCriterion(nn.Module):
    """Losses for every prediction set.

    Args:
        num_classes: K.
        matcher: Assigns queries to targets.
        loss_cls: Class loss.
        loss_mask: Point BCE loss.
        loss_dice: Point Dice loss.
        num_points: Points P per matched mask.
        oversample_ratio: Candidate points per point.
        importance_sample_ratio: Share of points chosen by uncertainty.
        min_masks_per_image: Each image counts at least this many masks in
            the mask losses' normaliser. 0: the number of targets, as the
            paper's code; 1: an image without targets counts one, as mmdet's
            ``MaskPseudoSampler`` (its ``num_pos`` is at least 1).

    Attributes:
        draw_points: ``fn(n, P, device) -> (n, P, 2)`` random points for the
            mask losses (default ``uniform_points``); tests replace it.
    """

    def __init__(self, num_classes: int, matcher: M2FHungarianMatcher,
                 loss_cls: M2FClassLoss, loss_mask: M2FPointBCELoss,
                 loss_dice: M2FPointDiceLoss, num_points: int = 12544,
                 oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75,
                 min_masks_per_image: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.loss_cls = loss_cls
        self.loss_mask = loss_mask
        self.loss_dice = loss_dice
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.min_masks_per_image = min_masks_per_image
        self.draw_points = uniform_points

    def forward(self, predictions: Predictions,
                targets: MaskTargets) -> Dict[str, Tensor]:
        """Match and compute ``3 * S`` loss terms.

        Args:
            predictions: S prediction sets.
            targets: Padded per-image targets.

        Returns:
            mmdet's keys (``loss_names``) -> scalar losses.
        """
        matches = self.matcher(predictions, targets)
        num_sets = predictions.num_sets
        device = predictions.mask_features.device
        # normaliser: targets averaged over ranks, kept on the device (no sync)
        least = self.min_masks_per_image
        counted = sum(max(n, least) for n in targets.num_gts)
        num_masks = _mean_over_ranks(
            torch.tensor(float(counted), device=device)).clamp(min=1)
        # all sets at once: a handful of kernels instead of a handful per set
        s_idx = torch.cat([torch.full_like(b, s)
                           for s, (b, _, _) in enumerate(matches)])
        b_idx, q_idx, g_idx = (torch.cat(t) for t in zip(*matches))

        cls_logits = torch.stack([c.float() for c in predictions.class_logits])
        cls_target = torch.full(cls_logits.shape[:3], self.num_classes,
                                dtype=torch.long, device=device)
        cls_target[s_idx, b_idx, q_idx] = targets.labels[b_idx, g_idx]
        loss_cls = self.loss_cls(cls_logits, cls_target)  # (S,)

        if targets.total == 0:  # nothing matched: zero, but keep the graph
            zero = (sum(e.sum() for e in predictions.mask_embeds) +
                    predictions.mask_features.sum()) * 0.0
            loss_mask = loss_dice = zero.expand(num_sets)
        else:
            loss_mask, loss_dice = self._mask_losses(
                predictions, matches, targets, b_idx, g_idx, num_masks)
        values = []
        for s in range(num_sets):
            values += [loss_cls[s], loss_mask[s], loss_dice[s]]
        return dict(zip(loss_names(num_sets), values))

    def _mask_losses(self, predictions: Predictions, matches: List[Match],
                     targets: MaskTargets, b_idx: Tensor, g_idx: Tensor,
                     num_masks: Tensor) -> Tuple[Tensor, Tensor]:
        """Point-sampled BCE and Dice of every set's matched masks, (S,) each.

        Every set matches every target once, so the matched masks stack to
        (S * M, 1, H, W).
        """
        src = predictions.matched_mask_logits(matches, targets.num_slots)
        # float32 before sampling: half-precision grid coordinates would
        # misplace points and the losses must be float32 anyway
        src = src.float()[:, None]
        with torch.no_grad():
            coords = uncertain_point_coords(src, self.num_points,
                                            self.oversample_ratio,
                                            self.importance_sample_ratio,
                                            draw_points=self.draw_points)
            tgt_points = targets.sample(b_idx, g_idx, coords)  # (S*M, P)
        src_points = point_sample(src, coords)[:, 0]  # (S*M, P)
        shape = (predictions.num_sets, -1, src_points.shape[-1])  # (S, M, P)
        return (self.loss_mask(src_points.view(shape), tgt_points.view(shape),
                               num_masks),
                self.loss_dice(src_points.view(shape), tgt_points.view(shape),
                               num_masks))
