"""Mask2Former's set criterion: match, then class + point-sampled mask losses."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ...structures import MaskTargets
from ..matcher import M2FHungarianMatcher, Match
from .class_loss import M2FClassLoss
from .mask_losses import M2FPointBCELoss, M2FPointDiceLoss
from .point_sampling import point_sample, uncertain_point_coords

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
    """

    def __init__(self, num_classes: int, matcher: M2FHungarianMatcher,
                 loss_cls: M2FClassLoss, loss_mask: M2FPointBCELoss,
                 loss_dice: M2FPointDiceLoss, num_points: int = 12544,
                 oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.loss_cls = loss_cls
        self.loss_mask = loss_mask
        self.loss_dice = loss_dice
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def forward(self, all_cls_logits: Sequence[Tensor],
                all_mask_logits: Sequence[Tensor],
                targets: MaskTargets) -> Dict[str, Tensor]:
        """Match and compute ``3 * S`` loss terms.

        Args:
            all_cls_logits: S tensors (B, Q, K + 1).
            all_mask_logits: S tensors (B, Q, H, W).
            targets: Padded per-image targets.
        """
        matches = self.matcher(all_cls_logits, all_mask_logits, targets)
        device = all_mask_logits[0].device
        # normaliser: targets averaged over ranks, kept on the device (no sync)
        num_masks = _mean_over_ranks(
            torch.tensor(float(targets.total), device=device)).clamp(min=1)
        values = []
        for cls_logits, mask_logits, match in zip(all_cls_logits,
                                                  all_mask_logits, matches):
            values += self.single_set(cls_logits, mask_logits, match, targets,
                                      num_masks)
        return dict(zip(loss_names(len(all_cls_logits)), values))

    def single_set(self, cls_logits: Tensor, mask_logits: Tensor, match: Match,
                   targets: MaskTargets, num_masks: Tensor) -> List[Tensor]:
        """(loss_cls, loss_mask, loss_dice) for one prediction set."""
        b_idx, q_idx, g_idx = match
        cls_target = torch.full(cls_logits.shape[:2], self.num_classes,
                                dtype=torch.long, device=cls_logits.device)
        cls_target[b_idx, q_idx] = targets.labels[b_idx, g_idx]
        loss_cls = self.loss_cls(cls_logits.float(), cls_target)

        if targets.total == 0:  # nothing matched: zero, but keep the graph
            zero = mask_logits.sum() * 0.0
            return [loss_cls, zero, zero]
        # float32 before sampling: half-precision grid coordinates would
        # misplace points and the losses must be float32 anyway
        src = mask_logits[b_idx, q_idx][:, None].float()  # (M, 1, H, W)
        with torch.no_grad():
            coords = uncertain_point_coords(src, self.num_points,
                                            self.oversample_ratio,
                                            self.importance_sample_ratio)
            tgt = targets.masks[b_idx, g_idx][:, None].to(src.dtype)
            tgt_points = point_sample(tgt, coords)[:, 0]  # (M, P)
        src_points = point_sample(src, coords)[:, 0]  # (M, P)
        return [loss_cls,
                self.loss_mask(src_points, tgt_points, num_masks),
                self.loss_dice(src_points, tgt_points, num_masks)]
