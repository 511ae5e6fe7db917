"""Bilinear sampling of maps at normalised points (PointRend)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['point_sample', 'sample_class_indicator']


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


def sample_class_indicator(sem_seg: Tensor, img_idx: Tensor, classes: Tensor,
                           coords: Tensor, chunk: int = 64) -> Tensor:
    """``point_sample`` of the binary masks ``sem_seg[img] == class``, without
    building them.

    Bilinear with zero padding and ``align_corners=False``, as
    ``F.grid_sample`` on the float mask would be, but reading the label map at
    the 4 neighbours of each point: memory is (N, P), not (N, H, W).

    Args:
        sem_seg: (B, H, W) long label maps.
        img_idx: (N,) long, image of each target.
        classes: (N,) long, class of each target (-1: always 0).
        coords: (N, P, 2) points in [0, 1] as (x, y).
        chunk: Targets per chunk (bounds the (N, P) temporaries).

    Returns:
        (N, P) float32.
    """
    if coords.shape[0] > chunk:
        return torch.cat([
            sample_class_indicator(sem_seg, i, c, xy, chunk)
            for i, c, xy in zip(img_idx.split(chunk), classes.split(chunk),
                                coords.split(chunk))
        ])
    _, h, w = sem_seg.shape
    coords = coords.float()
    x = coords[..., 0] * w - 0.5
    y = coords[..., 1] * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    flat = sem_seg.flatten(1)
    rows = img_idx[:, None]
    cls = classes[:, None]
    out = torch.zeros_like(x)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        label = flat[rows, yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)]
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        out = out + weight * ((label == cls) & inside)
    return out
