"""Mask targets of a batch: what the matcher and the set criterion match to.

Three ground-truth formats, one interface. Each image has G_b targets, padded
to G per image; a target is a class label and a binary mask. The matcher and
the criterion never see the masks whole: they call ``sample`` (matched
targets) or ``sample_all`` (every target of an image) to read them at points,
and each format reads its own storage there:

* ``SemanticTargets``: a label map, one target per class present
  (``sem_seg == label``).
* ``SegmentMapTargets``: a panoptic segment map, one target per segment
  (``segment_map == segment_id``); segments never overlap.
* ``InstanceMaskTargets``: one bool mask per target; masks may overlap.

None of them builds a (B, G, H, W) float tensor; ``masks`` builds the bool
masks on demand, for inspection and tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from torch import Tensor

from ..ops.mask_sample import (
    MASK_BORDER,
    sample_class_indicator,
    sample_masks,
)

__all__ = ['InstanceMaskTargets', 'MaskTargets', 'SegmentMapTargets',
           'SemanticTargets']


@dataclass(eq=False)
class MaskTargets:
    """Padded per-image targets; subclasses hold the masks.

    Attributes:
        labels: (B, G) long, class of each target; padding holds -1.
        num_gts: (B,) host list of int, targets per image (G_b <= G).
    """

    labels: Tensor
    num_gts: List[int]

    @property
    def total(self) -> int:
        """Targets in the batch (host int)."""
        return sum(self.num_gts)

    @property
    def num_slots(self) -> int:
        """G, the padded target count per image."""
        return self.labels.shape[1]

    def sample(self, img_idx: Tensor, tgt_idx: Tensor,
               coords: Tensor) -> Tensor:
        """``point_sample`` of target ``tgt_idx[n]`` of image ``img_idx[n]``.

        Args:
            img_idx: (N,) long.
            tgt_idx: (N,) long, each < G.
            coords: (N, P, 2) points in [0, 1] as (x, y).

        Returns:
            (N, P) float32 in [0, 1].
        """
        raise NotImplementedError

    def sample_all(self, img_idx: Tensor, coords: Tensor) -> Tensor:
        """Every target slot of image ``img_idx[n]`` at row n's points
        (padding slots read 0).

        Args:
            img_idx: (N,) long.
            coords: (N, P, 2) points in [0, 1] as (x, y).

        Returns:
            (N, G, P) float32 in [0, 1].
        """
        raise NotImplementedError

    @property
    def masks(self) -> Tensor:
        """(B, G, H, W) bool masks, built on demand (padding rows empty)."""
        raise NotImplementedError


@dataclass(eq=False)
class SegmentMapTargets(MaskTargets):
    """Targets that are the segments of an id map: target g of image b is
    ``segment_map[b] == segment_ids[b, g]``.

    Attributes:
        segment_map: (B, H, W) integer ids; pixels of no target hold an id
            that no target has.
        segment_ids: (B, G) long, id of each target; padding holds an id
            that never occurs in the map (-1 for the builders here).
    """

    segment_map: Tensor
    segment_ids: Tensor

    def sample(self, img_idx: Tensor, tgt_idx: Tensor,
               coords: Tensor) -> Tensor:
        return sample_class_indicator(self.segment_map, img_idx,
                                      self.segment_ids[img_idx, tgt_idx],
                                      coords)

    def sample_all(self, img_idx: Tensor, coords: Tensor) -> Tensor:
        # one read of the map's corners per row, compared with G ids
        return sample_class_indicator(self.segment_map, img_idx,
                                      self.segment_ids[img_idx], coords)

    @property
    def masks(self) -> Tensor:
        return self.segment_map[:, None] == self.segment_ids[:, :, None, None]


class SemanticTargets(SegmentMapTargets):
    """One target per class present in a label map: the map is the label map
    and each segment's id is its class.

    Args:
        sem_seg: (B, H, W) long label maps (``ignore_index`` kept).
        labels: (B, G) long, class of each target; padding holds -1.
        num_gts: (B,) host list of int.
    """

    def __init__(self, sem_seg: Tensor, labels: Tensor,
                 num_gts: List[int]) -> None:
        super().__init__(labels=labels, num_gts=num_gts, segment_map=sem_seg,
                         segment_ids=labels)

    @property
    def sem_seg(self) -> Tensor:
        """(B, H, W) the label maps."""
        return self.segment_map


@dataclass(eq=False)
class InstanceMaskTargets(MaskTargets):
    """Targets with a bool mask each; masks may overlap.

    All images' masks are stacked in one (M + 1, H + 4, W + 4) bool tensor
    in a zero border (the layout ``sample_masks`` reads), the last plane
    empty: padding slots point at it, so they read 0 with no validity mask.

    Attributes:
        planes: (M + 1, H + 4, W + 4) bool, M = ``total``.
        plane_index: (B, G) long, plane of each target slot (padding: M).
    """

    planes: Tensor
    plane_index: Tensor

    def sample(self, img_idx: Tensor, tgt_idx: Tensor,
               coords: Tensor) -> Tensor:
        return sample_masks(self.planes, self.plane_index[img_idx, tgt_idx],
                            coords)

    def sample_all(self, img_idx: Tensor, coords: Tensor) -> Tensor:
        return sample_masks(self.planes, self.plane_index[img_idx], coords)

    @property
    def masks(self) -> Tensor:
        inner = self.planes[:, MASK_BORDER:-MASK_BORDER,
                            MASK_BORDER:-MASK_BORDER]
        return inner[self.plane_index]
