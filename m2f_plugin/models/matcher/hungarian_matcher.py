"""Hungarian matching of queries to targets on point-sampled costs."""
from __future__ import annotations

from typing import List

import numpy as np
import torch
from mmseg.registry import TASK_UTILS
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ...ops.point_sample import point_sample, uniform_points
from ...structures import MaskTargets, Match, Predictions
from .match_costs import class_cost, mask_costs

__all__ = ['M2FHungarianMatcher', 'Match']


@TASK_UTILS.register_module()
class M2FHungarianMatcher:
    """One-to-one assignment minimising weighted class, BCE and Dice costs.

    Costs for every prediction set and image are computed on the device in
    float32 (half precision overflows them), padded to the largest target
    count, and moved to the host in one transfer for
    ``scipy.optimize.linear_sum_assignment``.

    Args:
        cost_class: Weight of ``-softmax`` probability of the target class.
        cost_mask: Weight of the sigmoid BCE cost.
        cost_dice: Weight of the Dice cost.
        num_points: Uniform points P shared by predictions and targets.

    Attributes:
        draw_points: ``fn(n, P, device) -> (n, P, 2)`` points in [0, 1]
            (default ``uniform_points``); tests replace it to fix the points.
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0,
                 cost_dice: float = 5.0, num_points: int = 12544) -> None:
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        self.draw_points = uniform_points

    @torch.no_grad()
    def costs(self, predictions: Predictions,
              targets: MaskTargets) -> Tensor:
        """Total costs of every prediction set, (S, B, Q, G) float32.

        Each set has its own P random points per image (``draw_points``).
        The targets of all sets are sampled in one ``targets.sample_all``
        call and the class costs in one softmax; the BCE and Dice costs need
        one (B, 2Q, P) product per set (``mask_costs``), whose (B, Q, H, W)
        mask logits exist for one set at a time.
        """
        num_sets = predictions.num_sets
        batch = targets.labels.shape[0]
        device = predictions.mask_features.device
        with torch.autocast(device.type, enabled=False):
            coords = self.draw_points(num_sets * batch, self.num_points,
                                      device)  # row s * B + b: set s, image b
            labels = targets.labels.repeat(num_sets, 1)  # (S * B, G)
            img_idx = torch.arange(batch, device=device).repeat(num_sets)
            gt = targets.sample_all(img_idx, coords)  # (S * B, G, P)
            # (S * B, Q, G), weighted, for all sets at once
            costs = self.cost_class * class_cost(
                torch.cat(predictions.class_logits), labels)
            for s in range(num_sets):
                rows = slice(s * batch, (s + 1) * batch)
                pred = point_sample(predictions.mask_logits(s).float(),
                                    coords[rows])
                bce, dice = mask_costs(pred, gt[rows])  # (B, Q, G) each
                costs[rows].add_(bce, alpha=self.cost_mask).add_(
                    dice, alpha=self.cost_dice)
        return costs.view(num_sets, batch, *costs.shape[1:])

    @torch.no_grad()
    def __call__(self, predictions: Predictions,
                 targets: MaskTargets) -> List[Match]:
        """Match every prediction set.

        Args:
            predictions: S prediction sets.
            targets: Padded targets.

        Returns:
            S matches ``(batch_idx, query_idx, target_idx)``.
        """
        device = predictions.mask_features.device
        num_sets = predictions.num_sets
        if targets.total == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return [(empty, empty, empty)] * num_sets
        costs = self.costs(predictions, targets)
        # never hand scipy a non-finite matrix ("cost matrix is infeasible")
        costs = costs.nan_to_num_(nan=1e8, posinf=1e8, neginf=-1e8)
        idx = _assign(costs, targets.num_gts)  # (S, 3, M)
        return [(i[0], i[1], i[2]) for i in idx.unbind(0)]


@torch.compiler.disable
def _assign(costs: Tensor, num_gts: List[int]) -> Tensor:
    """Hungarian assignment of every set and image on the host.

    One device -> host transfer of the (S, B, Q, G) costs, one host ->
    device transfer of the (S, 3, M) indices (every set matches every
    target once). Outside ``torch.compile``'s graphs: scipy runs on NumPy.
    """
    device = costs.device
    host = costs.cpu().numpy()
    per_set = []
    for s in range(host.shape[0]):
        b_idx, q_idx, g_idx = [], [], []
        for b, n in enumerate(num_gts):
            if n == 0:
                continue
            rows, cols = linear_sum_assignment(host[s, b, :, :n])
            b_idx.append(np.full(len(rows), b))
            q_idx.append(rows)
            g_idx.append(cols)
        per_set.append(np.stack([np.concatenate(b_idx),
                                 np.concatenate(q_idx),
                                 np.concatenate(g_idx)]))
    return torch.from_numpy(np.stack(per_set).astype(np.int64)).to(
        device, non_blocking=True)
