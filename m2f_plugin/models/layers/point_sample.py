"""Bilinear sampling of maps at normalised points (PointRend)."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['MASK_BORDER', 'pad_masks', 'point_sample',
           'sample_class_indicator', 'sample_masks', 'uniform_points']

# Point-corner entries, (rows x P x 4), processed at once by
# ``sample_class_indicator`` and ``sample_masks``: bounds their temporaries
# (~30 bytes an entry) while keeping the kernel launches per call few.
INDICATOR_BUDGET = 2**22
_PAD = 2  # sentinel border of the sampled maps, see ``sample_class_indicator``
MASK_BORDER = _PAD  # the zero border ``sample_masks`` expects (``pad_masks``)


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


def pad_masks(masks: Tensor) -> Tensor:
    """(M, H, W) binary masks -> (M, H + 4, W + 4) bool in a zero border of
    ``MASK_BORDER`` pixels, the layout ``sample_masks`` reads."""
    return F.pad(masks.bool(), (_PAD, ) * 4, value=False)


class _Corners:
    """Per-call constants of the 4-corner bilinear read of (H, W) maps padded
    by ``_PAD`` pixels, and the per-chunk corner positions and weights.

    The float32 arithmetic is the reference loop's, term for term (see
    ``sample_class_indicator``), so every sampler built on it is bit-identical
    to that loop.
    """

    def __init__(self, h: int, w: int, numel: int,
                 device: torch.device) -> None:
        self.wp = w + 2 * _PAD  # padded row length
        # int32 linear indices (index_select takes them without a conversion)
        # halve the largest temporaries, where they cannot overflow
        self.index_dtype = torch.int32 if numel < 2**31 else torch.long
        # per-call constants, built on the device (a host tensor would sync)
        self.size = torch.full((2, ), float(w), device=device)  # (w, h)
        self.size[1:].fill_(h)  # fill_, not item assignment: no host copy
        self.low = torch.full((2, ), -float(_PAD), device=device)
        step = torch.arange(2, device=device, dtype=self.index_dtype)
        self.offsets = (step[:, None] * self.wp + step).view(4)  # (dy, dx)
        self.origin = _PAD * self.wp + _PAD  # padded pixel (0, 0) of a plane

    def __call__(self, coords: Tensor) -> Tuple[Tensor, Tensor]:
        """(r, P, 2) points -> top-left corners (r, P, 2) as (x, y) in the
        index dtype, clamped into the border, and weights (r, P, 4) of the
        corners (dy, dx) in row-major order."""
        r, p = coords.shape[:2]
        xy = coords.float() * self.size
        xy = xy.sub_(0.5)  # pixel centres at integers
        xy0 = xy.floor()
        frac = xy - xy0
        # (r, P, 2 [d], 2 [x, y]): weight of the corner at offset d per axis
        axis_w = torch.stack((1 - frac, frac), -2)
        # (r, P, 4): x term * y term, corners (dy, dx) in row-major order
        weight = (axis_w[..., None, :, 0] * axis_w[..., :, None, 1]).view(
            r, p, 4)
        # corners beyond the image fall in the sentinel border: clamping the
        # top-left corner to [-2, size] keeps both neighbours within it
        xy0 = torch.clamp(xy0, self.low, self.size).to(self.index_dtype)
        return xy0, weight


def _sum_corners(terms: Tensor, out: Tensor) -> None:
    """(..., 4) weighted corner values -> ``out`` (...), in the reference's
    order: ((c00 + c01) + c10) + c11."""
    torch.add(terms[..., 0] + terms[..., 1] + terms[..., 2], terms[..., 3],
              out=out)


def sample_class_indicator(sem_seg: Tensor, img_idx: Tensor, classes: Tensor,
                           coords: Tensor,
                           budget: int = INDICATOR_BUDGET) -> Tensor:
    """``point_sample`` of the binary masks ``sem_seg[img] == class``, without
    building them.

    Bilinear with zero padding and ``align_corners=False``, as
    ``F.grid_sample`` on the float mask would be, but reading the label map at
    the 4 neighbours of each point: memory is (N, P), not (N, H, W). The
    float32 arithmetic is the reference loop's, term for term, so the result
    is bit-identical to it: weights ``(1 - fx) * (1 - fy)`` etc., corners
    summed in the order (0, 0), (0, 1), (1, 0), (1, 1).

    All 4 corners are handled at once ((rows, P, 4) indices, one gather of the
    labels, one compare) in chunks of about ``budget`` point-corner entries
    (83 targets at P = 12544): ~13 kernels per chunk for the corners plus 5
    per chunk of targets, and ~12 per call, instead of ~90 per 64 targets for
    a loop over the corners. The label map is padded with a sentinel that
    equals no class, and corners are clamped into the padding, so
    out-of-image corners read the sentinel: no validity masks.

    The map may hold any integer ids, not only classes: a panoptic segment
    map sampled at segment ids gives each segment's mask the same way.

    Args:
        sem_seg: (B, H, W) integer label maps.
        img_idx: (N,) long, image of each row of ``coords``.
        classes: (N,) long, class of each target (-1: always 0); or (N, G):
            G targets sharing row n's points (the matcher: one row per image,
            the image's targets along G), read at the corners only once.
        coords: (N, P, 2) points in [0, 1] as (x, y); others are allowed (out
            of the image counts as 0).
        budget: Point-corner entries per chunk (bounds the temporaries).

    Returns:
        (N, P) float32, or (N, G, P) for (N, G) ``classes``.
    """
    n, p = coords.shape[:2]
    squeeze = classes.dim() == 1
    classes = classes[:, None] if squeeze else classes
    g = classes.shape[1]
    out = coords.new_empty(n, g, p, dtype=torch.float32)
    if n == 0 or g == 0 or p == 0:
        return out[:, 0] if squeeze else out
    _, h, w = sem_seg.shape
    # (B, H + 4, W + 4) label map in a sentinel border that no class equals
    labels_map = sem_seg if sem_seg.dtype == torch.long else sem_seg.long()
    labels_map = F.pad(labels_map, (_PAD, ) * 4,
                       value=torch.iinfo(torch.long).min)
    corners = _Corners(h, w, labels_map.numel(), coords.device)
    flat = labels_map.view(-1)
    # linear index of the padded pixel (0, 0) of each row's image
    base = (img_idx.to(corners.index_dtype) * labels_map[0].numel() +
            corners.origin)

    rows = max(1, budget // (p * 4))
    rows_g = max(1, budget // (p * 4 * g))
    for start in range(0, n, rows):
        end = min(start + rows, n)
        xy0, weight = corners(coords[start:end])
        index = torch.add(base[start:end, None], xy0[..., 1],
                          alpha=corners.wp)
        index = (index + xy0[..., 0])[..., None] + corners.offsets  # (r, P, 4)
        corner_labels = flat.index_select(0, index.view(-1)).view_as(index)
        for sub in range(start, end, rows_g):
            sub_end = min(sub + rows_g, end)
            lo, hi = sub - start, sub_end - start
            hit = corner_labels[lo:hi, None] == classes[sub:sub_end, :, None,
                                                        None]
            _sum_corners(weight[lo:hi, None] * hit,  # (r', G, P, 4)
                         out[sub:sub_end])
    return out[:, 0] if squeeze else out


def sample_masks(planes: Tensor, plane_idx: Tensor, coords: Tensor,
                 budget: int = INDICATOR_BUDGET) -> Tensor:
    """``point_sample`` of binary masks, read at the 4 corners of each point:
    the masks stay bool, only the sampled values become float.

    The same bilinear arithmetic as ``sample_class_indicator`` (and so as
    ``F.grid_sample`` on the float masks, with zero padding and
    ``align_corners=False``); the masks, unlike label maps, may overlap.

    Args:
        planes: (M, H + 4, W + 4) bool masks in a zero border of
            ``MASK_BORDER`` pixels (``pad_masks``).
        plane_idx: (N,) long, mask of each row of ``coords``; or (N, G): G
            masks sharing row n's points (the matcher's layout).
        coords: (N, P, 2) points in [0, 1] as (x, y); out of the image
            counts as 0.
        budget: Point-corner entries per chunk (bounds the temporaries).

    Returns:
        (N, P) float32, or (N, G, P) for (N, G) ``plane_idx``.
    """
    n, p = coords.shape[:2]
    squeeze = plane_idx.dim() == 1
    plane_idx = plane_idx[:, None] if squeeze else plane_idx
    g = plane_idx.shape[1]
    out = coords.new_empty(n, g, p, dtype=torch.float32)
    if n == 0 or g == 0 or p == 0:
        return out[:, 0] if squeeze else out
    _, hp, wp = planes.shape
    corners = _Corners(hp - 2 * _PAD, wp - 2 * _PAD, planes.numel(),
                       coords.device)
    flat = planes.view(-1)
    # (N, G, 1, 1): linear index of the padded pixel (0, 0) of each mask
    base = (plane_idx.to(corners.index_dtype) * (hp * wp) +
            corners.origin)[..., None, None]
    rows = max(1, budget // (p * 4 * g))
    for start in range(0, n, rows):
        end = min(start + rows, n)
        xy0, weight = corners(coords[start:end])
        offset = torch.add(xy0[..., 0], xy0[..., 1], alpha=corners.wp)
        offset = offset[..., None] + corners.offsets  # (r, P, 4)
        index = base[start:end] + offset[:, None]  # (r, G, P, 4)
        hit = flat.index_select(0, index.view(-1)).view_as(index)
        _sum_corners(weight[:, None] * hit, out[start:end])
    return out[:, 0] if squeeze else out
