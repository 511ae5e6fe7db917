"""mmseg's ``IoUMetric`` for the semantic maps of a panoptic detector.

``M2FFusionHead(test_cfg=dict(semantic_on=True))`` stores a per-pixel class
map (things and stuff) as ``pred_sem_seg`` on each ``DetDataSample``, and
mmdet's ``LoadPanopticAnnotations(with_seg=True)`` loads the ground truth as
``gt_sem_seg``. Both hold their map under mmdet's key ``sem_seg``, where
mmseg's metric reads ``data``; this metric only renames, then scores with
mmseg's ``IoUMetric`` unchanged (mIoU, mAcc, mDice, ...).
"""
from __future__ import annotations

from typing import Sequence

from mmseg.evaluation import IoUMetric

__all__ = ['M2FSemSegMetric']


def _as_mmseg(pixel_data: dict) -> dict:
    if 'data' in pixel_data:
        return pixel_data
    if 'sem_seg' in pixel_data:
        return dict(pixel_data, data=pixel_data['sem_seg'])
    raise KeyError(f'expected a "data" or "sem_seg" map, got keys '
                   f'{sorted(pixel_data)}')


class M2FSemSegMetric(IoUMetric):
    """``IoUMetric`` over mmdet data samples (registered in mmdet's METRICS).

    Its results are prefixed ``sem_seg/`` (``sem_seg/mIoU``), next to
    ``coco_panoptic/PQ`` and ``coco/segm_mAP``.

    Args:
        **kwargs: ``IoUMetric`` arguments (``iou_metrics``,
            ``ignore_index``, ...).
    """

    default_prefix = 'sem_seg'

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Score each sample's ``pred_sem_seg`` against its ``gt_sem_seg``."""
        missing = [k for k in ('pred_sem_seg', 'gt_sem_seg')
                   if k not in data_samples[0]]
        if missing:
            raise KeyError(
                f'M2FSemSegMetric needs {missing} on the data samples: set '
                f'model.test_cfg.semantic_on=True with '
                f"panoptic_fusion_head=dict(type='M2FFusionHead'), and load "
                f'the ground truth with LoadPanopticAnnotations(with_seg=True) '
                f'in the test pipeline.')
        renamed = [dict(sample, pred_sem_seg=_as_mmseg(sample['pred_sem_seg']),
                        gt_sem_seg=_as_mmseg(sample['gt_sem_seg']))
                   for sample in data_samples]
        super().process(data_batch, renamed)
