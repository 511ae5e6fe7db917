"""Panoptic, instance and semantic results from one prediction set, without
(Q, H, W) float masks at the input size.

mmdet's ``MaskFormerFusionHead`` receives every query's mask upsampled to the
padded input (B, Q, H, W float: about 430 MB per 1333x800 image at 100
queries), crops it, resizes it again to the original size, and only then
decides which queries it keeps. ``M2FFusionHead`` decides first, from the class
scores, and upsamples only the kept queries, a few at a time, along exactly the
same two resizes (bilinear is separable per query, so the numbers are the
same): ``m2f_plugin.postprocess``, shared with the exported graphs. It also
accepts full-size masks, so it can replace mmdet's head in any
MaskFormer-style detector.
"""
from __future__ import annotations

from typing import Dict, List

from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
from mmdet.structures import SampleList
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from torch import Tensor

from ...postprocess import (
    MaskGeometry,
    instance_results,
    panoptic_fusion,
    semantic_labels,
)

__all__ = ['M2FFusionHead']


@MODELS.register_module()
class M2FFusionHead(MaskFormerFusionHead):
    """``MaskFormerFusionHead`` that upsamples only what it keeps.

    Same ``test_cfg`` keys as mmdet's (``panoptic_on``, ``instance_on``,
    ``object_mask_thr``, ``iou_thr``, ``filter_low_score``,
    ``max_per_image``), plus ``semantic_on``: a per-pixel class map (things
    and stuff, the argmax of ``sum_q p(k|q) sigmoid(mask_q)`` as the semantic
    Mask2Former), stored as ``pred_sem_seg`` on each data sample, made a band
    of rows at a time.

    Args:
        masks_per_step: Queries upsampled at once; peak extra memory is about
            ``2 * masks_per_step`` float masks at the input size.
        **kwargs: ``MaskFormerFusionHead`` arguments.
    """

    def __init__(self, *args, masks_per_step: int = 8, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if masks_per_step < 1:
            raise ValueError(f'masks_per_step must be >= 1, got {masks_per_step}')
        self.masks_per_step = masks_per_step

    def predict(self, mask_cls_results: Tensor, mask_pred_results: Tensor,
                batch_data_samples: SampleList, rescale: bool = False,
                **kwargs) -> List[dict]:
        """Results of each image, as mmdet's fusion head returns them.

        Args:
            mask_cls_results: (B, Q, K + 1) class logits.
            mask_pred_results: (B, Q, h, w) mask logits at any resolution
                (the decoder's, or already upsampled to the padded input).
            batch_data_samples: Data samples with ``batch_input_shape``,
                ``img_shape`` and ``ori_shape``.
            rescale: Results at ``ori_shape`` (else at ``img_shape``).

        Returns:
            Per image a dict with ``pan_results`` (PixelData) and/or
            ``ins_results`` (InstanceData).
        """
        cfg = self.test_cfg
        results = []
        for cls_logits, mask_logits, sample in zip(
                mask_cls_results, mask_pred_results, batch_data_samples):
            geometry = MaskGeometry.from_meta(sample.metainfo, rescale)
            result = {}
            if cfg.get('panoptic_on', True):
                panoptic, _ = panoptic_fusion(
                    cls_logits, mask_logits, geometry, self.num_things_classes,
                    cfg.get('object_mask_thr', 0.8), cfg.get('iou_thr', 0.8),
                    cfg.get('filter_low_score', False), self.masks_per_step,
                    INSTANCE_OFFSET)
                result['pan_results'] = PixelData(sem_seg=panoptic[None])
            if cfg.get('instance_on', False):
                found = instance_results(
                    cls_logits, mask_logits, geometry, self.num_things_classes,
                    cfg.get('max_per_image', 100), self.masks_per_step)
                result['ins_results'] = InstanceData(
                    bboxes=found['boxes'], labels=found['labels'],
                    scores=found['scores'], masks=found['masks'])
            if cfg.get('semantic_on', False):
                # mmdet's detector refuses 'sem_results'; the map goes on the
                # sample, where mmseg's IoUMetric-style metrics read it
                sample.pred_sem_seg = PixelData(sem_seg=semantic_labels(
                    cls_logits, mask_logits, geometry.output,
                    _valid_fraction(sample.metainfo))[None])
            results.append(result)
        return results


def _valid_fraction(meta: dict) -> Dict[str, float]:
    """Share of the mask maps' rows/columns that cover the image (the rest
    is batch padding)."""
    pad_h, pad_w = meta['batch_input_shape'][:2]
    img_h, img_w = meta['img_shape'][:2]
    return dict(rows=img_h / pad_h, cols=img_w / pad_w)
