"""``M2FHead``: Mask2Former as an mmseg decode head.

The mmseg adapter of the core (``Mask2Former``): label maps in
``SegDataSample``s become mask targets for the losses, and the final
prediction set becomes the per-class logits mmseg's segmentors expect.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.logging import print_log
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from ...converters import convert_mmseg_state_dict, is_mmseg_mask2former
from ...postprocess import semantic_logits
from ...structures import Predictions, SemanticTargets, sem_seg_to_masks
from ..mask2former import Mask2Former
from .builtin_layout import accepts_builtin_layout

__all__ = ['M2FHead']

# options that moved out of M2FHead: old key -> where it lives now
_MOVED_OPTIONS = {
    'cuda_graph': "type='M2FGraphedHead' (m2f_plugin.accel), cuda_graph=True",
    'max_graphs': "type='M2FGraphedHead' (m2f_plugin.accel), max_graphs=...",
    'cuda_graph_train': "type='M2FGraphedHead' (m2f_plugin.accel), "
                        'cuda_graph_train=True',
}

# options that were removed: config key -> what to do instead
_REMOVED_OPTIONS = {
    ('pixel_decoder', 'norm_split_stats'):
        'delete it (the pixel decoder uses nn.GroupNorm)',
    ('transformer_decoder', 'cross_attn_split_keys'):
        'delete it (the cross-attention runs one product over all keys)',
}


def _check_options(head: str, kwargs: dict, core: dict) -> None:
    """Fail on options that moved or were removed, naming what to use."""
    moved = sorted(set(kwargs) & set(_MOVED_OPTIONS))
    if moved:
        raise ValueError(
            f'{head}: {", ".join(moved)} moved to the accelerated head; use '
            + '; '.join(_MOVED_OPTIONS[k] for k in moved))
    for (part, key), fix in _REMOVED_OPTIONS.items():
        if key in core[part]:
            raise ValueError(f'{head}: {part}.{key} is no longer an option; '
                             f'{fix}')


@MODELS.register_module()
class M2FHead(Mask2Former, BaseDecodeHead):
    """Mask2Former decode head for semantic segmentation.

    Args:
        in_channels: Backbone channels, fine to coarse.
        num_classes: Classes K.
        predict_chunk: Upsampled-mask elements alive at once in
            ``predict`` (bounds its memory; see ``semantic_logits``).
        ignore_index: Unlabelled pixels' label.
        align_corners: For every resize.
        init_cfg: mmengine's initialisation config.
        **kwargs: The core's settings (``strides``, ``feat_channels``,
            ``out_channels``, ``num_queries``, ``pixel_decoder``,
            ``transformer_decoder``, ``loss_cls``, ``loss_mask``,
            ``loss_dice``, ``matcher``, ``num_points``, ``oversample_ratio``,
            ``importance_sample_ratio``, ``min_masks_per_image``: see
            ``Mask2Former.build_mask2former``, defaults in ``CORE_DEFAULTS``;
            mmseg's ``out_channels`` means classes elsewhere, here it is the
            mask features'), the rest passed to ``BaseDecodeHead``.
            ``min_masks_per_image`` is 0 (the paper's code) unless given; the
            built-in layout sets 1, mmseg's built-in normaliser.

    A config of mmseg's built-in ``Mask2FormerHead`` works with only its
    ``type`` changed: its keys are translated (``builtin_layout``), and its
    checkpoints load directly (keys renamed on load).
    """

    builtin_checkpoint = (is_mmseg_mask2former, convert_mmseg_state_dict)

    @accepts_builtin_layout('mmseg')
    def __init__(self,
                 in_channels: Sequence[int],
                 *,
                 num_classes: int,
                 predict_chunk: int = 1 << 22,
                 ignore_index: int = 255,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        core = self.pop_core_settings(kwargs)
        _check_options(type(self).__name__, kwargs, core)
        in_channels = list(in_channels)
        kwargs.setdefault('input_transform', 'multiple_select')
        kwargs.setdefault('in_index', list(range(len(in_channels))))
        # BaseDecodeHead builds loss_decode; ours are the criterion's
        kwargs.setdefault('loss_decode', [])
        super().__init__(
            in_channels=in_channels, channels=core['feat_channels'],
            num_classes=num_classes, ignore_index=ignore_index,
            align_corners=align_corners, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # per-class logits come from queries, not a conv
        self.predict_chunk = predict_chunk
        self.build_mask2former(in_channels=in_channels,
                               num_classes=num_classes, **core)

    def prediction_sets(self, inputs: Sequence[Tensor]) -> Predictions:
        """Backbone maps (B, C_i, H_i, W_i), fine to coarse, as selected by
        ``in_index`` -> the prediction sets."""
        return self.predictions(self._transform_inputs(inputs))

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """Losses of all prediction sets (keys as mmdet's Mask2Former)."""
        return self.loss_by_feat(self.prediction_sets(inputs),
                                 batch_data_samples)

    def loss_by_feat(self, predictions: Predictions,
                     batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """``BaseDecodeHead``'s name for ``loss_by_samples``."""
        return self.loss_by_samples(predictions, batch_data_samples)

    def targets(self, batch_data_samples: SampleList,
                device: torch.device) -> SemanticTargets:
        """Label maps -> one mask target per class present. They stay where
        the label maps are (``device`` is not used)."""
        return sem_seg_to_masks(self._stack_batch_gt(batch_data_samples),
                                self.num_classes, self.ignore_index)

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: List[dict],
                test_cfg: ConfigType) -> Tensor:
        """Per-class logits (B, K, H, W) at the size mmseg's heads return."""
        return self.predict_by_feat(self.prediction_sets(inputs),
                                    batch_img_metas)

    def predict_by_feat(self, predictions: Predictions,
                        batch_img_metas: List[dict]) -> Tensor:
        """Fold the final set's (class, mask) predictions into per-class
        logits.

        The size follows ``BaseDecodeHead``: the crop in slide inference, else
        ``pad_shape``, else ``img_shape``. Images whose predictions are not
        finite (a NaN or Inf pixel in the input spreads through the network)
        are named in a warning; their maps are returned as they are.
        """
        cls_logits, mask_logits = predictions.last()
        _warn_non_finite(cls_logits, mask_logits, batch_img_metas)
        meta = batch_img_metas[0]
        if isinstance(meta['img_shape'], torch.Size):  # slide inference
            size = tuple(meta['img_shape'])
        elif 'pad_shape' in meta:
            size = tuple(meta['pad_shape'][:2])
        else:
            size = tuple(meta['img_shape'][:2])
        return semantic_logits(cls_logits, mask_logits, size,
                               self.align_corners, self.predict_chunk)


def _warn_non_finite(cls_logits: Tensor, mask_logits: Tensor,
                     batch_img_metas: List[dict]) -> None:
    """Warn, naming the images, when an image's predictions hold NaN/Inf.

    A warning, not an error: one corrupt image must not end the inference of
    a whole folder, but its map must not pass for a real one either. One
    small host read per batch (the per-image flags), at inference only.
    """
    finite = (torch.isfinite(cls_logits).flatten(1).all(1) &
              torch.isfinite(mask_logits).flatten(1).all(1)).tolist()
    bad = [meta.get('img_path', f'image {i} of the batch')
           for i, (ok, meta) in enumerate(zip(finite, batch_img_metas))
           if not ok]
    if bad:
        print_log(
            f'M2FHead: non-finite predictions (NaN/Inf) for {bad}: the input '
            'image holds NaN/Inf values or the weights are not finite; its '
            'segmentation map is meaningless. Check the image file and the '
            'data pipeline (e.g. a normalisation with std 0).',
            logger='current', level=logging.WARNING)
