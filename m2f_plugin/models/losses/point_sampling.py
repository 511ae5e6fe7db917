"""Uncertainty-based point selection for the mask losses (PointRend)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..layers.point_sample import point_sample

__all__ = ['point_sample', 'uncertain_point_coords']


@torch.no_grad()
def uncertain_point_coords(mask_logits: Tensor, num_points: int,
                           oversample_ratio: float,
                           importance_sample_ratio: float,
                           chunk: int = 64) -> Tensor:
    """Points chosen where the mask is least certain, plus random coverage.

    ``num_points * oversample_ratio`` random points are scored by ``-|logit|``;
    the ``importance_sample_ratio`` most uncertain are kept and the rest are
    fresh uniform points. Masks are processed ``chunk`` at a time so that the
    (M, S, 2) candidates never exist for all masks at once.

    Args:
        mask_logits: (M, 1, H, W).
        num_points: P.
        oversample_ratio: Candidates per point.
        importance_sample_ratio: Share of P chosen by uncertainty.
        chunk: Masks per chunk.

    Returns:
        (M, P, 2) coordinates in [0, 1].
    """
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    device = mask_logits.device
    out = []
    for part in mask_logits.split(chunk):
        m = part.shape[0]
        coords = torch.rand(m, num_sampled, 2, device=device)
        uncertainty = -point_sample(part, coords)[:, 0].abs()  # (m, S)
        idx = uncertainty.topk(num_uncertain, dim=1).indices
        coords = coords.gather(1, idx[..., None].expand(-1, -1, 2))
        if num_random > 0:
            coords = torch.cat(
                (coords, torch.rand(m, num_random, 2, device=device)), dim=1)
        out.append(coords)
    if not out:
        return mask_logits.new_zeros(0, num_points, 2)
    return torch.cat(out)
