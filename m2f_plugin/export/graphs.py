"""The exported functions: a raw image in, the task's final result out.

Each graph is the deployed form of one toolbox's inference: the test
pipeline's resize, the data preprocessor's normalisation and padding
(``ImagePreprocess``), the model, the shared post-processing
(``m2f_plugin.postprocess``) and the way back to the original image size.
Sizes stay tensors throughout, so one exported file takes any image size.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..postprocess import (
    INSTANCE_OFFSET,
    MaskGeometry,
    instance_results,
    panoptic_fusion,
    semantic_map,
)
from .preprocess import ImagePreprocess

__all__ = ['TASK_OUTPUTS', 'DeployedSegmentor']

# output names of each task's graph, in order (the runtime reads them)
TASK_OUTPUTS: Dict[str, Tuple[str, ...]] = dict(
    semantic=('labels', ),
    panoptic=('panoptic', 'segments'),
    instance=('labels', 'scores', 'boxes', 'masks'))


class DeployedSegmentor(nn.Module):
    """Raw image -> final result of one task.

    Args:
        model: An mmseg ``EncoderDecoder`` with an ``M2FHead`` (task
            ``semantic``) or an mmdet ``Mask2Former`` with an
            ``M2FDetHead`` (``panoptic`` or ``instance``), in eval mode.
        preprocess: The test pipeline and data preprocessor as a module.
        task: ``semantic``, ``panoptic`` or ``instance``.
        test_cfg: The fusion head's thresholds (``object_mask_thr``,
            ``iou_thr``, ``filter_low_score``, ``max_per_image``).
        with_scores: Semantic: also output the per-class ``scores``.
    """

    def __init__(self, model: nn.Module, preprocess: ImagePreprocess,
                 task: str, test_cfg: Optional[dict] = None,
                 with_scores: bool = False) -> None:
        super().__init__()
        if task not in TASK_OUTPUTS:
            raise ValueError(f'task must be one of {sorted(TASK_OUTPUTS)}, '
                             f'got {task!r}')
        self.model = model
        self.preprocess = preprocess
        self.task = task
        self.test_cfg = dict(test_cfg or {})
        self.with_scores = with_scores and task == 'semantic'
        limit = self.head.num_queries * self.head.num_classes
        if task == 'instance' and \
                self.test_cfg.get('max_per_image', 100) > limit:
            raise ValueError(
                f"test_cfg.max_per_image={self.test_cfg['max_per_image']} is "
                f'larger than queries x classes = {limit}; set '
                f'max_per_image <= {limit}.')

    @property
    def head(self) -> nn.Module:
        """The Mask2Former head of the wrapped model."""
        if self.task == 'semantic':
            return self.model.decode_head
        return self.model.panoptic_head

    @property
    def output_names(self) -> Tuple[str, ...]:
        """The graph's outputs, in order."""
        extra = ('scores', ) if self.with_scores else ()
        return TASK_OUTPUTS[self.task] + extra

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        """image (H, W, 3) uint8 -> the task's outputs at (H, W) (see
        ``TASK_OUTPUTS``)."""
        inputs, img_hw = self.preprocess(image)  # (1, 3, Hp, Wp), (2,)
        ori = torch._shape_as_tensor(image)
        padded = torch._shape_as_tensor(inputs)
        geometry = MaskGeometry((padded[2], padded[3]),
                                (img_hw[0], img_hw[1]), (ori[0], ori[1]))
        head = self.head
        feats = self.model.extract_feat(inputs)
        # (1, Q, K + 1), (1, Q, Hp / 4, Wp / 4)
        cls_logits, mask_logits = head.prediction_sets(feats).last()
        cfg = self.test_cfg
        if self.task == 'semantic':
            labels, scores = semantic_map(cls_logits, mask_logits, geometry,
                                          head.align_corners, chunk=0)
            return (labels, scores) if self.with_scores else (labels, )
        if self.task == 'panoptic':
            return panoptic_fusion(
                cls_logits[0], mask_logits[0], geometry,
                head.num_things_classes, cfg.get('object_mask_thr', 0.8),
                cfg.get('iou_thr', 0.8), cfg.get('filter_low_score', False),
                masks_per_step=0, instance_offset=INSTANCE_OFFSET)
        found = instance_results(cls_logits[0], mask_logits[0], geometry,
                                 head.num_things_classes,
                                 cfg.get('max_per_image', 100),
                                 masks_per_step=0, sort_by_score=True)
        return tuple(found[name] for name in TASK_OUTPUTS['instance'])
