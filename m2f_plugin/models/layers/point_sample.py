"""Bilinear sampling of maps at normalised points (PointRend)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ['point_sample']


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
