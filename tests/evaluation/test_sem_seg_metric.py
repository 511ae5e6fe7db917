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


def _by_hand(pairs, num_classes: int = 6, ignore_index: int = 255) -> dict:
    """aAcc, mIoU and mAcc (percent, rounded to 2 decimals as mmseg reports
    them) from the pixel counts of all samples together."""
    inter = torch.zeros(num_classes, dtype=torch.float64)
    union, label = inter.clone(), inter.clone()
    for pred, gt in pairs:
        keep = gt != ignore_index
        p, g = pred[keep], gt[keep]
        for k in range(num_classes):
            inter[k] += ((p == k) & (g == k)).sum()
            union[k] += ((p == k) | (g == k)).sum()
            label[k] += (g == k).sum()
    return {'aAcc': round(float(inter.sum() / label.sum()) * 100, 2),
            'mIoU': round(float((inter / union).mean()) * 100, 2),
            'mAcc': round(float((inter / label).mean()) * 100, 2)}


def test_evaluate_reports_sem_seg_prefixed_keys_with_the_values():
    """What a user sees: mmengine's ``BaseMetric.evaluate`` (as the Evaluator
    calls it after the loop) gives ``sem_seg/``-prefixed aAcc, mIoU, mAcc,
    next to mmdet's ``coco_panoptic/`` and ``coco/`` keys."""
    metric = M2FSemSegMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    pairs = [_maps(seed) for seed in range(3)]
    for pred, gt in pairs:  # one sample per batch, as the val loop feeds it
        metric.process({}, [dict(pred_sem_seg=dict(sem_seg=pred),
                                 gt_sem_seg=dict(sem_seg=gt))])
    got = metric.evaluate(len(pairs))
    want = _by_hand(pairs)
    assert sorted(got) == ['sem_seg/aAcc', 'sem_seg/mAcc', 'sem_seg/mIoU']
    for key, value in want.items():
        assert got[f'sem_seg/{key}'] == pytest.approx(value, abs=0.01), key
    assert 40 < got['sem_seg/mIoU'] < 95  # some errors, not all
    assert metric.results == []  # cleared for the next validation
