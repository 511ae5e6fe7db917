"""Uncertainty-based point selection for the mask losses (PointRend)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..layers.point_sample import point_sample

__all__ = ['point_sample', 'uncertain_point_coords']


@torch.no_grad()
def uncertain_point_coords(mask_logits: Tensor, num_points: int,
                           oversample_ratio: float,
                           importance_sample_ratio: float) -> Tensor:
    """Points chosen where the mask is least certain, plus random coverage.

    ``num_points * oversample_ratio`` random points are scored by ``-|logit|``;
    the ``importance_sample_ratio`` most uncertain are kept and the rest are
    fresh uniform points.

    Args:
        mask_logits: (M, 1, H, W).
        num_points: P.
        oversample_ratio: Candidates per point.
        importance_sample_ratio: Share of P chosen by uncertainty.

    Returns:
        (M, P, 2) coordinates in [0, 1].
    """
    m = mask_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(m, num_sampled, 2, device=mask_logits.device)
    uncertainty = -point_sample(mask_logits, coords)[:, 0].abs()  # (M, S)
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    coords_u = coords.gather(1, idx[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        coords_u = torch.cat(
            (coords_u, torch.rand(m, num_random, 2, device=mask_logits.device)),
            dim=1)
    return coords_u
