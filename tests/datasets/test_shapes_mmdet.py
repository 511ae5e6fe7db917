"""The COCO views through mmdet: its loaders read them, and its metrics
score the ground truth fed back as a prediction perfectly."""
from __future__ import annotations

import os.path as osp
from typing import List

import numpy as np
import pytest
import torch

from m2f_plugin.datasets import MMDET_AVAILABLE
from m2f_plugin.datasets.synthetic_shapes import (
    IGNORE_INDEX,
    MIN_INSTANCE_AREA,
    PANOPTIC_CLASSES,
    PANOPTIC_PALETTE,
    STUFF_CLASSES,
    THING_CLASSES,
)
from tests.datasets import read_split
from tests.datasets.conftest import SMALL

pytest.importorskip('mmdet')
pytest.importorskip('panopticapi')
pytest.importorskip('pycocotools')
if not MMDET_AVAILABLE:
    pytest.skip('mmdet is not usable here', allow_module_level=True)

_PANOPTIC_PIPELINE = [dict(type='LoadImageFromFile'),
                      dict(type='LoadPanopticAnnotations'),
                      dict(type='PackDetInputs')]
_INSTANCE_PIPELINE = [dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True,
                           with_mask=True),
                      dict(type='PackDetInputs')]


@pytest.fixture
def mmdet_scope():
    """mmdet's modules registered and its scope current for this test (the
    autouse fixture makes mmseg's current again for the next)."""
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _build(kind: str, root: str, split: str, pipeline: List[dict],
           **kwargs):
    from mmdet.registry import DATASETS
    return DATASETS.build(dict(type=kind, data_root=root, split=split,
                               pipeline=pipeline, **dict(SMALL, **kwargs)))


def _samples(ds) -> list:
    return [ds[i]['data_samples'] for i in range(len(ds))]


def test_generated_on_first_use_with_metainfo(tmp_path, mmdet_scope):
    root = str(tmp_path / 'fresh')
    pan = _build('M2FSyntheticShapesPanopticDataset', root, 'train',
                 _PANOPTIC_PIPELINE, num_train=3, num_val=2, size=32)
    assert osp.exists(osp.join(root, 'annotations', 'panoptic_val.json'))
    assert len(pan) == 3
    assert pan.metainfo['classes'] == PANOPTIC_CLASSES
    assert pan.metainfo['thing_classes'] == THING_CLASSES
    assert pan.metainfo['stuff_classes'] == STUFF_CLASSES == ('background',)
    assert pan.metainfo['palette'] == PANOPTIC_PALETTE
    inst = _build('M2FSyntheticShapesCocoDataset', root, 'val',
                  _INSTANCE_PIPELINE, num_train=3, num_val=2, size=32)
    assert len(inst) == 2
    assert inst.metainfo['classes'] == THING_CLASSES
    assert inst.metainfo['thing_classes'] == THING_CLASSES
    assert inst.metainfo['stuff_classes'] == ()
    assert len(inst.metainfo['palette']) == 5


def test_panoptic_through_mmdet_loaders(shapes_root, mmdet_scope):
    for split in ('train', 'val'):
        ds = _build('M2FSyntheticShapesPanopticDataset', shapes_root, split,
                    _PANOPTIC_PIPELINE)
        files = read_split(shapes_root, split)
        assert len(ds) == len(files.labels)
        for sample, label in zip(_samples(ds), files.labels):
            sem = sample.gt_sem_seg.sem_seg.numpy()[0]
            masks = sample.gt_instances.masks.to_ndarray().astype(bool)
            labels = sample.gt_instances.labels.numpy()
            image_id = sample.img_id
            assert len(masks) == len(labels) == len(files.anns_of(image_id))
            assert set(labels.tolist()) <= set(range(5))
            # labels: things 0..4 = label map 1..5, stuff 5 = background 0
            expected = np.where(label == 0, 5, label.astype(np.int64) - 1)
            expected[label == IGNORE_INDEX] = IGNORE_INDEX
            known = sem != IGNORE_INDEX
            assert (sem[known] == expected[known]).all()
            assert (sem[label == IGNORE_INDEX] == IGNORE_INDEX).all()
            assert ((sem == IGNORE_INDEX) & (label != IGNORE_INDEX)).sum() \
                < MIN_INSTANCE_AREA * 2  # dropped slivers only
            for m, lab in zip(masks, labels):
                assert m.any() and (sem[m] == lab).all()
            assert (masks.sum(0) == (sem < 5)).all()


def test_instances_through_mmdet_loaders(shapes_root, mmdet_scope):
    for split in ('train', 'val'):
        inst = _build('M2FSyntheticShapesCocoDataset', shapes_root, split,
                      _INSTANCE_PIPELINE)
        pan = _build('M2FSyntheticShapesPanopticDataset', shapes_root, split,
                     _PANOPTIC_PIPELINE)
        files = read_split(shapes_root, split)
        for s_inst, s_pan, label in zip(_samples(inst), _samples(pan),
                                        files.labels):
            assert s_inst.img_id == s_pan.img_id
            masks = s_inst.gt_instances.masks.to_ndarray().astype(bool)
            labels = s_inst.gt_instances.labels.numpy()
            boxes = s_inst.gt_instances.bboxes.tensor.numpy()
            band = label == IGNORE_INDEX
            assert len(masks) >= 1
            for m, lab, box in zip(masks, labels, boxes):
                assert set(np.unique(label[m]).tolist()) <= {lab + 1,
                                                             IGNORE_INDEX}
                ys, xs = np.nonzero(m)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1,
                                        ys.max() + 1]
            # instance masks minus the band are the panoptic thing masks
            pan_masks = s_pan.gt_instances.masks.to_ndarray().astype(bool)
            assert (labels == s_pan.gt_instances.labels.numpy()).all()
            assert ((masks & ~band) == pan_masks).all()


@pytest.mark.parametrize('wrong', [False, True])
def test_perfect_panoptic_prediction_pq_100(shapes_root, mmdet_scope, wrong):
    """The ground truth scores PQ 100; with the thing labels rotated (the
    control) things score 0."""
    from mmdet.evaluation import INSTANCE_OFFSET, CocoPanopticMetric
    ds = _build('M2FSyntheticShapesPanopticDataset', shapes_root, 'val',
                _PANOPTIC_PIPELINE, test_mode=True)
    ann = osp.join(shapes_root, 'annotations')
    metric = CocoPanopticMetric(ann_file=osp.join(ann, 'panoptic_val.json'),
                                seg_prefix=osp.join(ann, 'panoptic_val'))
    metric.dataset_meta = ds.metainfo
    num_classes = len(PANOPTIC_CLASSES)
    for sample in _samples(ds):
        sem = sample.gt_sem_seg.sem_seg.numpy()[0].astype(np.int64)
        pan = np.full(sem.shape, num_classes, np.int64)  # VOID
        pan[sem == 5] = 5  # stuff: its label
        masks = sample.gt_instances.masks.to_ndarray().astype(bool)
        for j, (m, lab) in enumerate(zip(masks,
                                         sample.gt_instances.labels)):
            lab = (int(lab) + 1) % 5 if wrong else int(lab)
            pan[m] = lab + (j + 1) * INSTANCE_OFFSET
        metric.process({}, [dict(
            img_id=sample.img_id, img_path=sample.img_path,
            ori_shape=sample.ori_shape,
            pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pan)[None]))])
    res = metric.evaluate(len(ds))
    assert res['coco_panoptic/PQ_st'] == pytest.approx(100.0)
    if wrong:
        assert res['coco_panoptic/PQ_th'] == pytest.approx(0.0)
    else:
        assert res['coco_panoptic/PQ'] == pytest.approx(100.0)
        assert res['coco_panoptic/PQ_th'] == pytest.approx(100.0)


@pytest.mark.parametrize('wrong', [False, True])
def test_perfect_instance_prediction_mask_ap_100(shapes_root, mmdet_scope,
                                                 wrong):
    """The ground truth scores mask AP 1.0 (100 %); with the labels rotated
    (the control) 0."""
    from mmdet.evaluation import CocoMetric
    ds = _build('M2FSyntheticShapesCocoDataset', shapes_root, 'val',
                _INSTANCE_PIPELINE, test_mode=True)
    metric = CocoMetric(ann_file=osp.join(shapes_root, 'annotations',
                                          'instances_val.json'),
                        metric='segm')
    metric.dataset_meta = ds.metainfo
    for sample in _samples(ds):
        gt = sample.gt_instances
        masks = torch.from_numpy(gt.masks.to_ndarray().astype(bool))
        labels = (gt.labels + 1) % 5 if wrong else gt.labels
        metric.process({}, [dict(
            img_id=sample.img_id, ori_shape=sample.ori_shape,
            pred_instances=dict(bboxes=gt.bboxes.tensor,
                                scores=torch.ones(len(masks)),
                                labels=labels, masks=masks))])
    res = metric.evaluate(len(ds))
    if wrong:
        assert res['coco/segm_mAP'] == pytest.approx(0.0)
    else:
        assert res['coco/segm_mAP'] >= 0.99
        assert res['coco/segm_mAP_50'] == pytest.approx(1.0)


def test_mmseg_side_unaffected_by_mmdet_classes():
    """The mmseg data set stays mmseg's; the COCO ones are mmdet's only."""
    from mmdet.registry import DATASETS as DET
    from mmseg.registry import DATASETS as SEG
    assert 'M2FSyntheticShapesDataset' in SEG.module_dict
    for name in ('M2FSyntheticShapesCocoDataset',
                 'M2FSyntheticShapesPanopticDataset'):
        assert DET.get(name).__module__.startswith('m2f_plugin')
        assert name not in SEG.module_dict
