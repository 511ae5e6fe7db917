"""``point_sample`` of binary masks that are never built as float maps.

Targets are stored as integer id maps (a mask is ``map == id``) or as bool
planes. Both are read the same way: the 4 pixels around each point are
gathered from the map padded by a border, and the bilinear weights of the
corners that hold the mask are summed. The float32 arithmetic is
``F.grid_sample``'s on the float mask (zero padding,
``align_corners=False``), term for term: weights ``(1 - fx) * (1 - fy)``
etc., corners summed in the order (0, 0), (0, 1), (1, 0), (1, 1), so the
result is bit-identical to a loop over the corners.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['INDICATOR_BUDGET', 'MASK_BORDER', 'pad_masks',
           'sample_class_indicator', 'sample_masks']

# Point-corner entries, (rows x P x 4), processed at once by
# ``sample_class_indicator`` and ``sample_masks``: bounds their temporaries
# (~30 bytes an entry) while keeping the kernel launches per call few.
INDICATOR_BUDGET = 2**22
# Border of the sampled maps: corners beyond the image are clamped into it,
# where they read "no mask" (a sentinel id, or False): no validity masks.
MASK_BORDER = 2


def pad_masks(masks: Tensor) -> Tensor:
    """(M, H, W) binary masks -> (M, H + 4, W + 4) bool in a zero border of
    ``MASK_BORDER`` pixels, the layout ``sample_masks`` reads."""
    return F.pad(masks.bool(), (MASK_BORDER, ) * 4, value=False)


class _Corners:
    """Per-call constants of the 4-corner bilinear read of (H, W) maps padded
    by ``MASK_BORDER`` pixels, and the per-chunk corner offsets and weights.
    """

    def __init__(self, h: int, w: int, numel: int,
                 device: torch.device) -> None:
        self.wp = w + 2 * MASK_BORDER  # padded row length
        # int32 linear indices (index_select takes them without a conversion)
        # halve the largest temporaries, where they cannot overflow
        self.index_dtype = torch.int32 if numel < 2**31 else torch.long
        # per-call constants, built on the device (a host tensor would sync)
        self.size = torch.full((2, ), float(w), device=device)  # (w, h)
        self.size[1:].fill_(h)  # fill_, not item assignment: no host copy
        self.low = torch.full((2, ), -float(MASK_BORDER), device=device)
        step = torch.arange(2, device=device, dtype=self.index_dtype)
        self.offsets = (step[:, None] * self.wp + step).view(4)  # (dy, dx)
        # padded pixel (0, 0) of a plane
        self.origin = MASK_BORDER * self.wp + MASK_BORDER

    def __call__(self, coords: Tensor) -> Tuple[Tensor, Tensor]:
        """(r, P, 2) points -> linear offsets (r, P, 4) of the 4 corners
        within a padded plane, and their weights (r, P, 4), corners (dy, dx)
        in row-major order."""
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
        # corners beyond the image fall in the border: clamping the top-left
        # corner to [-2, size] keeps both neighbours within it
        xy0 = torch.clamp(xy0, self.low, self.size).to(self.index_dtype)
        offset = torch.add(xy0[..., 0], xy0[..., 1], alpha=self.wp)
        return offset[..., None] + self.offsets, weight


def _sum_corners(terms: Tensor, out: Tensor) -> None:
    """(..., 4) weighted corner values -> ``out`` (...), in the reference's
    order: ((c00 + c01) + c10) + c11."""
    torch.add(terms[..., 0] + terms[..., 1] + terms[..., 2], terms[..., 3],
              out=out)


def _sample_planes(padded: Tensor, plane_idx: Tensor, coords: Tensor,
                   keys: Optional[Tensor], budget: int) -> Tensor:
    """The skeleton of both samplers: read K planes per row at its points'
    corners, then turn the values into G hits.

    Args:
        padded: (M, H + 4, W + 4) planes in a ``MASK_BORDER`` border.
        plane_idx: (N, K) long, the planes row n reads.
        coords: (N, P, 2) points in [0, 1] as (x, y).
        keys: (N, G) ids: hit = value == key (K = 1: one read shared by G
            keys); None: the values are bool hits themselves (G = K).
        budget: Point-corner entries per chunk, for the reads (K per row)
            and for the comparisons (G per row).

    Returns:
        (N, G, P) float32.
    """
    n, p = coords.shape[:2]
    k = plane_idx.shape[1]
    g = k if keys is None else keys.shape[1]
    out = coords.new_empty(n, g, p, dtype=torch.float32)
    if n == 0 or g == 0 or p == 0:
        return out
    _, hp, wp = padded.shape
    corners = _Corners(hp - 2 * MASK_BORDER, wp - 2 * MASK_BORDER,
                       padded.numel(), coords.device)
    flat = padded.view(-1)
    # (N, K, 1, 1): linear index of the padded pixel (0, 0) of each plane
    base = (plane_idx.to(corners.index_dtype) * (hp * wp) +
            corners.origin)[..., None, None]
    rows = max(1, budget // (p * 4 * k))
    rows_g = max(1, budget // (p * 4 * g))
    for start in range(0, n, rows):
        end = min(start + rows, n)
        offset, weight = corners(coords[start:end])
        index = base[start:end] + offset[:, None]  # (r, K, P, 4)
        values = flat.index_select(0, index.view(-1)).view_as(index)
        for sub in range(start, end, rows_g):
            sub_end = min(sub + rows_g, end)
            lo, hi = sub - start, sub_end - start
            hit = values[lo:hi] if keys is None else (
                values[lo:hi] == keys[sub:sub_end, :, None, None])
            _sum_corners(weight[lo:hi, None] * hit,  # (r', G, P, 4)
                         out[sub:sub_end])
    return out


def sample_class_indicator(sem_seg: Tensor, img_idx: Tensor, classes: Tensor,
                           coords: Tensor,
                           budget: int = INDICATOR_BUDGET) -> Tensor:
    """``point_sample`` of the binary masks ``sem_seg[img] == class``, without
    building them: memory is (N, P), not (N, H, W).

    All 4 corners are handled at once ((rows, P, 4) indices, one gather of the
    labels, one compare) in chunks of about ``budget`` point-corner entries
    (83 targets at P = 12544). The label map is padded with a sentinel that
    equals no class, so out-of-image corners read no class.

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
    squeeze = classes.dim() == 1
    labels = sem_seg if sem_seg.dtype == torch.long else sem_seg.long()
    labels = F.pad(labels, (MASK_BORDER, ) * 4,
                   value=torch.iinfo(torch.long).min)  # equals no class
    out = _sample_planes(labels, img_idx[:, None], coords,
                         classes[:, None] if squeeze else classes, budget)
    return out[:, 0] if squeeze else out


def sample_masks(planes: Tensor, plane_idx: Tensor, coords: Tensor,
                 budget: int = INDICATOR_BUDGET) -> Tensor:
    """``point_sample`` of bool masks, read at the 4 corners of each point:
    the masks stay bool, only the sampled values become float. Unlike the
    segments of a label map, the masks may overlap.

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
    squeeze = plane_idx.dim() == 1
    out = _sample_planes(planes, plane_idx[:, None] if squeeze else plane_idx,
                         coords, None, budget)
    return out[:, 0] if squeeze else out
