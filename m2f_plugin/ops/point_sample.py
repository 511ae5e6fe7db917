"""Bilinear sampling of float maps at normalised points, and the choice of
the points (PointRend): uniform, or where a mask is least certain."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['CANDIDATE_BUDGET', 'point_sample', 'uncertain_point_coords',
           'uniform_points']

# Candidate points scored at once by ``uncertain_point_coords``: bounds the
# (m, S, 2) candidates and their scores (~30 bytes a candidate) while keeping
# the chunks, and so the kernel launches, few.
CANDIDATE_BUDGET = 2**22


def uniform_points(num: int, num_points: int,
                   device: torch.device) -> Tensor:
    """Random points, uniform over the image: (num, P, 2) in [0, 1) as (x, y).

    The one place where the matcher and the mask losses draw points; tests
    swap it (``M2FHungarianMatcher.draw_points``,
    ``SetCriterion.draw_points``) to compare implementations on the same
    points.
    """
    return torch.rand(num, num_points, 2, device=device)


def point_sample(masks: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample maps at normalised points.

    Args:
        masks: (N, C, H, W) maps.
        coords: (N, P, 2) points in [0, 1] as (x, y).

    Returns:
        (N, C, P).
    """
    grid = 2.0 * coords[:, :, None, :] - 1.0  # (N, P, 1, 2) in [-1, 1]
    return F.grid_sample(masks, grid.to(masks.dtype),
                         align_corners=False).squeeze(-1)


@torch.no_grad()
def uncertain_point_coords(mask_logits: Tensor, num_points: int,
                           oversample_ratio: float,
                           importance_sample_ratio: float,
                           budget: int = CANDIDATE_BUDGET,
                           draw_points: Callable[..., Tensor] = uniform_points
                           ) -> Tensor:
    """Points chosen where the mask is least certain, plus random coverage.

    ``num_points * oversample_ratio`` random points are scored by ``-|logit|``;
    the ``importance_sample_ratio`` most uncertain are kept and the rest are
    fresh uniform points. Masks are scored in chunks of about ``budget``
    candidate points, so that the (M, S, 2) candidates never exist for all
    masks at once; the uniform points of all masks are drawn in one call.
    Each chunk writes straight into the (M, P, 2) result (no concatenation).

    Args:
        mask_logits: (M, 1, H, W).
        num_points: P.
        oversample_ratio: Candidates per point.
        importance_sample_ratio: Share of P chosen by uncertainty.
        budget: Candidate points per chunk (``budget // S`` masks, >= 1).
        draw_points: ``fn(n, P, device) -> (n, P, 2)`` random points.

    Returns:
        (M, P, 2) coordinates in [0, 1].
    """
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    device = mask_logits.device
    num_masks = mask_logits.shape[0]
    out = torch.empty(num_masks, num_points, 2, device=device)
    if num_masks == 0:
        return out
    chunk = max(1, budget // max(num_sampled, 1))
    for start in range(0, num_masks, chunk):
        part = mask_logits[start:start + chunk]
        m = part.shape[0]
        coords = draw_points(m, num_sampled, device)
        uncertainty = -point_sample(part, coords)[:, 0].abs()  # (m, S)
        idx = uncertainty.topk(num_uncertain, dim=1).indices
        torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2),
                     out=out[start:start + m, :num_uncertain])
    if num_random > 0:
        out[:, num_uncertain:] = draw_points(num_masks, num_random, device)
    return out
