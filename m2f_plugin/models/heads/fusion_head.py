"""Panoptic, instance and semantic results from one prediction set, without
(Q, H, W) float masks at the input size.

mmdet's ``MaskFormerFusionHead`` receives every query's mask upsampled to the
padded input (B, Q, H, W float: about 430 MB per 1333x800 image at 100
queries), crops it, resizes it again to the original size, and only then
decides which queries it keeps. ``M2FFusionHead`` decides first, from the class
scores, and upsamples only the kept queries, a few at a time, along exactly the
same two resizes (bilinear is separable per query, so the numbers are the
same). It also accepts full-size masks, so it can replace mmdet's head in any
MaskFormer-style detector.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
from mmdet.structures import SampleList
from mmdet.structures.mask import mask2bbox
from mmengine.structures import InstanceData, PixelData
from mmseg.registry import MODELS
from torch import Tensor

from .semantic import semantic_labels

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
        panoptic_on = self.test_cfg.get('panoptic_on', True)
        instance_on = self.test_cfg.get('instance_on', False)
        semantic_on = self.test_cfg.get('semantic_on', False)
        results = []
        for cls_logits, mask_logits, sample in zip(
                mask_cls_results, mask_pred_results, batch_data_samples):
            upsample, size = self._upsampler(mask_logits, sample.metainfo,
                                             rescale)
            result = {}
            if panoptic_on:
                result['pan_results'] = self._panoptic(cls_logits, upsample,
                                                       size)
            if instance_on:
                result['ins_results'] = self._instances(cls_logits, upsample,
                                                        size)
            if semantic_on:
                # mmdet's detector refuses 'sem_results'; the map goes on the
                # sample, where mmseg's IoUMetric-style metrics read it
                sample.pred_sem_seg = PixelData(sem_seg=semantic_labels(
                    cls_logits, mask_logits, size,
                    _valid_fraction(mask_logits, sample.metainfo))[None])
            results.append(result)
        return results

    # -- the two resizes of mmdet's path, for chosen queries only -----------
    def _upsampler(self, mask_logits: Tensor, meta: dict, rescale: bool
                   ) -> Tuple[Callable[[Tensor], Tensor], Tuple[int, int]]:
        """A function: query indices (N,) -> their (N, H, W) float32 logits at
        the output size, as padded-input resize + crop (+ resize to
        ``ori_shape``) gives them; and that size (H, W)."""
        pad_h, pad_w = meta['batch_input_shape'][:2]
        img_h, img_w = meta['img_shape'][:2]
        ori = meta['ori_shape'][:2] if rescale else None

        def upsample(queries: Tensor) -> Tensor:
            masks = mask_logits[queries].float()
            if masks.shape[-2:] != (pad_h, pad_w):
                masks = F.interpolate(masks[None], size=(pad_h, pad_w),
                                      mode='bilinear', align_corners=False)[0]
            masks = masks[:, :img_h, :img_w]
            if ori is not None:
                masks = F.interpolate(masks[None], size=tuple(ori),
                                      mode='bilinear', align_corners=False)[0]
            return masks

        return upsample, _output_size(meta, rescale)

    def _in_steps(self, queries: Tensor, upsample: Callable[[Tensor], Tensor]):
        """Yield (offset, (n, H, W) logits) for ``queries`` a few at a time."""
        for start in range(0, len(queries), self.masks_per_step):
            yield start, upsample(queries[start:start + self.masks_per_step])

    def _panoptic(self, cls_logits: Tensor, upsample: Callable[[Tensor], Tensor],
                  size: Tuple[int, int]) -> PixelData:
        """mmdet's panoptic post-processing on the kept queries only."""
        object_mask_thr = self.test_cfg.get('object_mask_thr', 0.8)
        iou_thr = self.test_cfg.get('iou_thr', 0.8)
        filter_low_score = self.test_cfg.get('filter_low_score', False)
        scores, labels = F.softmax(cls_logits, dim=-1).max(-1)
        keep = (labels.ne(self.num_classes) & (scores > object_mask_thr)
                ).nonzero().flatten()
        device = cls_logits.device
        panoptic = torch.full(size, self.num_classes, dtype=torch.int32,
                              device=device)
        if len(keep) == 0:
            return PixelData(sem_seg=panoptic[None])
        # running argmax over kept queries of score * sigmoid(mask)
        best = torch.full(size, -1.0, device=device)
        owner = torch.zeros(size, dtype=torch.long, device=device)
        original_area = torch.zeros(len(keep), dtype=torch.long, device=device)
        for start, logits in self._in_steps(keep, upsample):
            probs = logits.sigmoid_()
            original_area[start:start + len(probs)] = (probs >= 0.5).flatten(
                1).sum(1)
            weighted = scores[keep[start:start + len(probs)], None, None] * probs
            value, index = weighted.max(0)
            # strict '>' keeps the first maximum, as argmax over all does
            better = value > best
            best = torch.where(better, value, best)
            owner = torch.where(better, index + start, owner)
        mask_area = torch.bincount(owner.flatten(), minlength=len(keep))
        # the filter_low_score variant needs each kept mask again: rare (off
        # by default), so it is recomputed per query rather than stored
        classes = labels[keep].tolist()
        areas, originals = mask_area.tolist(), original_area.tolist()
        instance_id = 1
        for k, pred_class in enumerate(classes):
            if areas[k] == 0 or originals[k] == 0:
                continue
            if areas[k] / originals[k] < iou_thr:
                continue
            mask = owner == k
            if filter_low_score:
                mask &= upsample(keep[k:k + 1])[0].sigmoid() >= 0.5
            if pred_class >= self.num_things_classes:
                panoptic[mask] = pred_class  # stuff of one class merges
            else:
                panoptic[mask] = pred_class + instance_id * INSTANCE_OFFSET
                instance_id += 1
        return PixelData(sem_seg=panoptic[None])

    def _instances(self, cls_logits: Tensor, upsample: Callable[[Tensor], Tensor],
                   size: Tuple[int, int]) -> InstanceData:
        """mmdet's instance post-processing: top-k (query, class) pairs
        first, then the masks of the distinct queries among them."""
        max_per_image = self.test_cfg.get('max_per_image', 100)
        num_queries = cls_logits.shape[0]
        scores = F.softmax(cls_logits, dim=-1)[:, :-1]
        if max_per_image > scores.numel():
            raise ValueError(
                f'test_cfg.max_per_image={max_per_image} is larger than '
                f'queries x classes = {num_queries} x {self.num_classes} = '
                f'{scores.numel()}; set max_per_image <= {scores.numel()}.')
        top_scores, top_index = scores.flatten().topk(max_per_image,
                                                      sorted=False)
        labels = top_index % self.num_classes
        queries = top_index // self.num_classes
        thing = labels < self.num_things_classes
        top_scores, labels, queries = (top_scores[thing], labels[thing],
                                       queries[thing])
        distinct, slot = queries.unique(return_inverse=True)
        binary, mask_scores = [], []
        for _, logits in self._in_steps(distinct, upsample):
            positive = logits > 0
            # mean sigmoid over the mask's own pixels (mmdet's mask score)
            mask_scores.append((logits.sigmoid() * positive).flatten(1).sum(1)
                               / (positive.flatten(1).sum(1) + 1e-6))
            binary.append(positive)
        if binary:
            masks = torch.cat(binary)[slot]
            det_scores = top_scores * torch.cat(mask_scores)[slot]
        else:
            masks = torch.zeros((0, *size), dtype=torch.bool,
                                device=cls_logits.device)
            det_scores = top_scores
        results = InstanceData()
        results.bboxes = mask2bbox(masks)
        results.labels = labels
        results.scores = det_scores
        results.masks = masks
        return results


def _output_size(meta: dict, rescale: bool) -> Tuple[int, int]:
    return tuple(meta['ori_shape'][:2] if rescale else meta['img_shape'][:2])


def _valid_fraction(mask_logits: Tensor, meta: dict
                    ) -> Optional[Dict[str, float]]:
    """Share of the mask logits' rows/columns that cover the image (the rest
    is batch padding)."""
    pad_h, pad_w = meta['batch_input_shape'][:2]
    img_h, img_w = meta['img_shape'][:2]
    return dict(rows=img_h / pad_h, cols=img_w / pad_w)
