"""M2FSemSegMetric: mmseg's IoUMetric numbers on mmdet-style data samples."""
from __future__ import annotations

import pytest
import torch
from mmseg.evaluation import IoUMetric

from m2f_plugin.evaluation import M2FSemSegMetric

CLASSES = ('disc', 'square', 'triangle', 'ring', 'cross', 'background')


def _maps(seed):
    g = torch.Generator().manual_seed(seed)
    gt = torch.randint(0, 6, (1, 24, 30), generator=g)
    gt[:, :3] = 255  # ignored
    pred = torch.where(torch.rand(1, 24, 30, generator=g) < 0.7, gt,
                       torch.randint(0, 6, (1, 24, 30), generator=g))
    return pred.clamp(max=5), gt


def test_same_numbers_as_iou_metric_with_mmdet_keys():
    ours, ref = M2FSemSegMetric(), IoUMetric()
    for m in (ours, ref):
        m.dataset_meta = dict(classes=CLASSES)
    for seed in range(3):
        pred, gt = _maps(seed)
        ours.process({}, [dict(pred_sem_seg=dict(sem_seg=pred),
                               gt_sem_seg=dict(sem_seg=gt))])
        ref.process({}, [dict(pred_sem_seg=dict(data=pred),
                              gt_sem_seg=dict(data=gt))])
    got, want = ours.compute_metrics(ours.results), ref.compute_metrics(
        ref.results)
    assert got == want and 0 < got['mIoU'] < 100


def test_missing_semantic_output_says_how_to_switch_it_on():
    metric = M2FSemSegMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    with pytest.raises(KeyError, match='semantic_on=True.*M2FFusionHead'):
        metric.process({}, [dict(gt_sem_seg=dict(sem_seg=torch.zeros(1, 2, 2)))])


def test_registered_in_mmdet():
    from mmdet.registry import METRICS
    assert METRICS.get('M2FSemSegMetric') is M2FSemSegMetric
