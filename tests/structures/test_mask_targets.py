"""Mask targets of the three ground-truth formats read at points as the dense
float masks do: semantic label maps, panoptic segment maps, overlapping
instance masks."""
from __future__ import annotations

import pytest
import torch

from m2f_plugin.ops.mask_sample import pad_masks, sample_masks
from m2f_plugin.ops.point_sample import point_sample
from m2f_plugin.structures import (
    UNLABELLED_SEGMENT,
    InstanceMaskTargets,
    SegmentMapTargets,
    instances_to_masks,
    panoptic_to_masks,
    sem_seg_to_masks,
)
from tests.helpers import make_label_maps

H, W = 13, 17


def _coords(n: int, p: int = 101, seed: int = 0) -> torch.Tensor:
    """Random points, some outside the image, some on borders and centres."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, p, 2, generator=g) * 1.2 - 0.1
    coords[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5 / W, 0.5 / H],
                                  [1 - 0.5 / W, 0.5]])
    return coords


def _dense_sample(dense: torch.Tensor, img_idx, tgt_idx, coords):
    """Reference: ``point_sample`` of the dense float masks (B, G, H, W)."""
    masks = dense[img_idx, tgt_idx].float()[:, None]  # (N, 1, H, W)
    return point_sample(masks, coords)[:, 0]


def _check_sampling(targets, dense):
    """``sample`` and ``sample_all`` equal the dense reference."""
    b, g = targets.labels.shape
    assert dense.shape[:2] == (b, g)
    img_idx = torch.arange(b).repeat_interleave(g)
    tgt_idx = torch.arange(g).repeat(b)
    coords = _coords(b * g)
    out = targets.sample(img_idx, tgt_idx, coords)
    assert out.shape == (b * g, coords.shape[1]) and out.dtype == torch.float32
    torch.testing.assert_close(out, _dense_sample(dense, img_idx, tgt_idx,
                                                  coords), atol=1e-6, rtol=0)
    rows = torch.arange(b).repeat(2)  # the matcher's layout: 2 sets
    coords = _coords(len(rows), seed=1)
    out = targets.sample_all(rows, coords)
    assert out.shape == (len(rows), g, coords.shape[1])
    for n, img in enumerate(rows.tolist()):
        ref = point_sample(dense[img].float()[:, None],
                           coords[n].expand(g, -1, -1))[:, 0]
        torch.testing.assert_close(out[n], ref, atol=1e-6, rtol=0)


def _blob(h0, h1, w0, w1):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[h0:h1, w0:w1] = True
    return m


def test_semantic_targets_sample_like_dense_masks():
    targets = sem_seg_to_masks(make_label_maps(3, H, W, 5, seed=2), 5, 255)
    dense = targets.masks
    assert dense.shape == (3, targets.num_slots, H, W)
    _check_sampling(targets, dense)


def _panoptic_case():
    """Image 0: two things and stuff; image 1: only stuff; image 2: one
    thing, no stuff. 3 thing classes, 2 stuff classes (3, 4)."""
    sem = torch.full((3, H, W), 255)
    sem[0, :6] = 3
    sem[0, 6:, :5] = 4
    sem[0, 10:, 10:] = 1  # a thing class in the map (a crowd): no target
    sem[1] = 4
    sem[1, :, :3] = 3
    things = [torch.stack([_blob(7, 12, 6, 10), _blob(1, 5, 8, 16)]),
              torch.zeros(0, H, W, dtype=torch.bool),
              _blob(2, 9, 2, 9)[None].to(torch.uint8)]
    labels = [torch.tensor([0, 2]), torch.zeros(0, dtype=torch.long),
              torch.tensor([1])]
    return labels, things, sem


def test_panoptic_targets_are_one_segment_map():
    labels, things, sem = _panoptic_case()
    sem[0][things[0][1]] = 255  # things cover no stuff
    targets = panoptic_to_masks(labels, things, sem, num_things=3,
                                num_stuff=2)
    assert isinstance(targets, SegmentMapTargets)
    assert targets.num_gts == [4, 2, 1]
    assert targets.labels.tolist() == [[0, 2, 3, 4], [3, 4, -1, -1],
                                       [1, -1, -1, -1]]
    # things first, then the stuff classes present, as mmdet's
    stuff = lambda b, c: sem[b] == c  # noqa: E731
    empty = torch.zeros(H, W, dtype=torch.bool)
    dense = torch.stack([
        torch.stack([things[0][0], things[0][1], stuff(0, 3), stuff(0, 4)]),
        torch.stack([stuff(1, 3), stuff(1, 4), empty, empty]),
        torch.stack([things[2][0].bool(), empty, empty, empty])])
    assert torch.equal(targets.masks, dense)
    assert (targets.segment_map[0][sem[0] == 1] == UNLABELLED_SEGMENT).all()
    _check_sampling(targets, dense)


def test_overlapping_things_fall_back_to_instance_masks():
    labels, things, sem = _panoptic_case()
    # thing 1 of image 0 overlaps stuff 3; thing 0 overlaps thing 1
    things[0][0, 1:5, 8:10] = True
    targets = panoptic_to_masks(labels, things, sem, 3, 2)
    assert isinstance(targets, InstanceMaskTargets)
    assert targets.num_gts == [4, 2, 1]
    assert targets.labels.tolist()[0] == [0, 2, 3, 4]
    assert torch.equal(targets.masks[0, 0], things[0][0])
    assert torch.equal(targets.masks[0, 1], things[0][1])
    assert torch.equal(targets.masks[0, 2], sem[0] == 3)
    _check_sampling(targets, targets.masks)


def test_overlapping_instances_keep_both_masks():
    a, b = _blob(2, 10, 2, 10), _blob(5, 13, 5, 15)  # overlap 5..10 x 5..10
    labels = [torch.tensor([1, 1]), torch.zeros(0, dtype=torch.long),
              torch.tensor([0])]
    masks = [torch.stack([a, b]), torch.zeros(0, H, W, dtype=torch.uint8),
             b[None].to(torch.uint8)]
    targets = instances_to_masks(labels, masks, num_classes=2)
    assert targets.num_gts == [2, 0, 1] and targets.total == 3
    assert targets.labels.tolist() == [[1, 1], [-1, -1], [0, -1]]
    assert targets.planes.shape == (4, H + 4, W + 4)
    dense = targets.masks
    assert torch.equal(dense[0, 0], a) and torch.equal(dense[0, 1], b)
    assert (dense[0, 0] & dense[0, 1]).any()  # both kept where they overlap
    assert not dense[1].any() and not dense[2, 1].any()
    _check_sampling(targets, dense)


def test_empty_batch_and_empty_rows():
    none = [torch.zeros(0, dtype=torch.long)] * 2
    masks = [torch.zeros(0, H, W, dtype=torch.bool)] * 2
    targets = instances_to_masks(none, masks, 3)
    assert targets.total == 0 and targets.labels.shape == (2, 0)
    assert targets.sample_all(torch.arange(2), _coords(2)).shape == (2, 0, 101)
    pan = panoptic_to_masks(none, masks, torch.full((2, H, W), 255), 2, 1)
    assert pan.total == 0 and pan.num_gts == [0, 0]
    empty = torch.zeros(0, dtype=torch.long)
    assert pan.sample(empty, empty, _coords(0)).shape == (0, 101)


def test_sample_masks_chunking_is_invisible():
    g = torch.Generator().manual_seed(0)
    planes = pad_masks(torch.rand(6, H, W, generator=g) > 0.5)
    idx = torch.randint(0, 6, (9, 4), generator=g)
    coords = _coords(9)
    ref = sample_masks(planes, idx, coords)
    assert torch.equal(sample_masks(planes, idx, coords, budget=1), ref)
    assert torch.equal(sample_masks(planes, idx[:, 0], coords, budget=1),
                       ref[:, 0])


def test_clear_errors():
    masks = [torch.zeros(1, H, W), torch.zeros(1, H + 1, W)]
    labels = [torch.tensor([0]), torch.tensor([0])]
    with pytest.raises(ValueError, match='pad_mask=True'):
        instances_to_masks(labels, masks, 2)
    with pytest.raises(ValueError, match='do not match labels'):
        instances_to_masks([torch.tensor([0, 1])], [torch.zeros(1, H, W)], 2)
    with pytest.raises(ValueError, match=r'labels \[5\] outside \[0, '
                       r'num_classes=2\)'):
        instances_to_masks([torch.tensor([5])], [torch.zeros(1, H, W)], 2)
    sem = torch.full((1, H, W), 255)
    sem[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r'gt_sem_seg holds labels \[7\] '
                       r'outside \[0, num_things_classes \+ '
                       r'num_stuff_classes = 5\)'):
        panoptic_to_masks([torch.tensor([0])], [torch.zeros(1, H, W)], sem,
                          3, 2)
