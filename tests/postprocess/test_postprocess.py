"""The shared post-processing on its own: its segments table, its steps,
its boxes, and that it traces without reading values back to Python."""
from __future__ import annotations

import warnings

import pytest
import torch
from mmdet.evaluation.functional import INSTANCE_OFFSET as MMDET_OFFSET
from mmdet.structures.mask import mask2bbox

from m2f_plugin.postprocess import (
    INSTANCE_OFFSET,
    MaskGeometry,
    instance_results,
    masks_to_boxes,
    panoptic_fusion,
    semantic_map,
)

NUM_THINGS, NUM_CLASSES, QUERIES = 3, 5, 12


def _inputs(seed: int = 0, confident: bool = True):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(QUERIES, NUM_CLASSES + 1, generator=g)
    if confident:  # most queries pass mmdet's 0.8 threshold
        cls[torch.arange(QUERIES), torch.randint(
            0, NUM_CLASSES, (QUERIES, ), generator=g)] += 6
    # blobs: each query's mask is mostly its own Voronoi cell of the map
    centres = torch.rand(QUERIES, 2, generator=g) * torch.tensor([10., 14.])
    yx = torch.stack(torch.meshgrid(torch.arange(10.), torch.arange(14.),
                                    indexing='ij'), -1)
    dist = (yx[None] - centres[:, None, None]).norm(dim=-1)
    nearest = dist == dist.min(0).values
    masks = torch.where(nearest, 6.0, -6.0) + torch.randn(
        QUERIES, 10, 14, generator=g) * 2
    return cls, masks


GEOMETRY = MaskGeometry(padded=(40, 56), image=(37, 50), output=(61, 83))


def test_offset_is_mmdets():
    assert INSTANCE_OFFSET == MMDET_OFFSET


def test_boxes_equal_mmdets_mask2bbox():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(9, 23, 31, generator=g) > 0.97
    masks[0] = False  # empty
    masks[1] = False
    masks[1, 22, 30] = True  # the last pixel only
    masks[2] = True
    assert torch.equal(masks_to_boxes(masks), mask2bbox(masks))
    assert masks_to_boxes(masks[:0]).shape == (0, 4)


@pytest.mark.parametrize('filter_low_score', [False, True])
def test_panoptic_segments_table_describes_the_map(filter_low_score):
    cls, masks = _inputs()
    panoptic, segments = panoptic_fusion(cls, masks, GEOMETRY, NUM_THINGS,
                                         iou_thr=0.5,
                                         filter_low_score=filter_low_score)
    assert panoptic.shape == (61, 83) and panoptic.dtype == torch.int32
    ids, counts = panoptic.unique(return_counts=True)
    shown = ids != NUM_CLASSES
    assert segments.dtype == torch.float64
    assert segments[:, 0].long().tolist() == ids[shown].tolist()  # sorted
    assert segments[:, 3].long().tolist() == counts[shown].tolist()
    assert torch.equal(segments[:, 1].long(), segments[:, 0].long() %
                       INSTANCE_OFFSET)
    things = segments[:, 1] < NUM_THINGS
    assert (segments[things, 0] >= INSTANCE_OFFSET).all()
    assert (segments[~things, 0] < NUM_CLASSES).all()
    # instance ids count 1, 2, ... (an id can be used by a segment the
    # low-score filter emptied, as in mmdet)
    inst = (segments[things, 0].long() // INSTANCE_OFFSET).tolist()
    assert inst == sorted(inst) and len(set(inst)) == len(inst)
    assert len(segments) >= 3  # the inputs make a non-trivial map


def test_stuff_of_one_class_is_one_row_with_the_best_score():
    cls = torch.full((3, NUM_CLASSES + 1), -10.0)
    cls[0, 4], cls[1, 4], cls[2, 0] = 5.0, 9.0, 7.0  # two stuff class 4
    masks = torch.full((3, 8, 8), -10.0)
    masks[0, :, :3] = masks[1, :, 3:6] = masks[2, :, 6:] = 10.0
    geometry = MaskGeometry((8, 8), (8, 8), (8, 8))
    panoptic, segments = panoptic_fusion(cls, masks, geometry, NUM_THINGS)
    probs = cls.softmax(-1).max(-1).values
    assert set(panoptic.unique().tolist()) == {4, 0 + INSTANCE_OFFSET}
    assert segments.tolist() == [
        [4.0, 4.0, float(probs[1]), 48.0],
        [float(INSTANCE_OFFSET), 0.0, float(probs[2]), 16.0]]


@pytest.mark.parametrize('steps', [1, 5])
def test_steps_change_nothing(steps):
    cls, masks = _inputs(2)
    one = panoptic_fusion(cls, masks, GEOMETRY, NUM_THINGS, masks_per_step=0)
    stepped = panoptic_fusion(cls, masks, GEOMETRY, NUM_THINGS,
                              masks_per_step=steps)
    assert torch.equal(one[0], stepped[0]) and torch.equal(one[1], stepped[1])
    a = instance_results(cls, masks, GEOMETRY, NUM_THINGS, 20, 0)
    b = instance_results(cls, masks, GEOMETRY, NUM_THINGS, 20, steps)
    for key in ('labels', 'masks', 'boxes'):
        assert torch.equal(a[key], b[key]), key
    # a row sum vectorised over more rows may round differently
    torch.testing.assert_close(a['scores'], b['scores'], rtol=1e-6, atol=0)


def test_nothing_kept_is_all_void_in_both_paths():
    cls, masks = _inputs(3, confident=False)
    cls[:, -1] = 20.0  # every query says "no object"
    for steps in (0, 4):
        panoptic, segments = panoptic_fusion(cls, masks, GEOMETRY, NUM_THINGS,
                                             masks_per_step=steps)
        assert (panoptic == NUM_CLASSES).all() and segments.shape == (0, 4)


def test_sorted_instances_are_the_same_set_best_first():
    cls, masks = _inputs(4)
    plain = instance_results(cls, masks, GEOMETRY, NUM_THINGS, 20)
    ranked = instance_results(cls, masks, GEOMETRY, NUM_THINGS, 20,
                              sort_by_score=True)
    assert (ranked['scores'][:-1] >= ranked['scores'][1:]).all()
    assert sorted(plain['scores'].tolist()) == sorted(
        ranked['scores'].tolist())
    order = plain['scores'].argsort(descending=True)
    assert torch.equal(plain['masks'][order], ranked['masks'])
    assert torch.equal(plain['boxes'][order], ranked['boxes'])


def test_too_many_per_image_is_refused_with_the_limit():
    cls, masks = _inputs()
    with pytest.raises(ValueError, match='max_per_image <= 60'):
        instance_results(cls, masks, GEOMETRY, NUM_THINGS, 61)


class _AllTasks(torch.nn.Module):
    """Sizes from the inputs' shapes, as in an exported graph."""

    def forward(self, cls, masks, image):
        size = torch._shape_as_tensor(image)
        geometry = MaskGeometry((size[0], size[1]), (size[0] - 3, size[1] - 6),
                                (size[2], size[3]))
        panoptic, segments = panoptic_fusion(cls, masks, geometry, NUM_THINGS,
                                             filter_low_score=True)
        found = instance_results(cls, masks, geometry, NUM_THINGS, 20)
        labels, _ = semantic_map(cls[None], masks[None], geometry)
        return panoptic, segments, found['masks'], found['boxes'], labels


def test_traces_without_reading_values_back():
    """A value read to Python (``.item()``, ``.tolist()``, ``if tensor``) in
    a trace is a TracerWarning and a host sync on a GPU: there is none."""
    cls, masks = _inputs()
    image = torch.zeros(40, 56, 61, 83)
    with warnings.catch_warnings():
        warnings.simplefilter('error', torch.jit.TracerWarning)
        traced = torch.jit.trace(_AllTasks(), (cls, masks, image),
                                 check_trace=False)
    # the trace is not frozen to its sizes or to its number of segments
    cls2, masks2 = _inputs(5)
    image2 = torch.zeros(48, 64, 50, 71)
    for got, want in zip(traced(cls2, masks2, image2),
                         _AllTasks()(cls2, masks2, image2)):
        assert torch.equal(got, want)
