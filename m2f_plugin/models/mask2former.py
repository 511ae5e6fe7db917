"""The task-agnostic core of Mask2Former: features in, prediction sets out.

backbone features -> pixel decoder -> (mask features, memories)
                  -> masked-attention transformer decoder -> ``Predictions``
                  -> matcher + set criterion -> losses

The toolbox adapters (the mmseg decode head, and any other) inherit
``Mask2Former`` next to their toolbox's base class: it builds the three
parts under the attribute names that checkpoints use (``pixel_decoder``,
``transformer_decoder``, ``criterion``) and runs them; the adapter turns its
toolbox's ground truth into ``MaskTargets`` (label maps, panoptic segment
maps or instance masks: the matcher and the criterion only sample them at
points) and ``Predictions`` into its toolbox's outputs.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, Sequence

from mmengine.logging import print_log
from mmseg.registry import MODELS, TASK_UTILS
from mmseg.utils import ConfigType
from torch import Tensor

from ..structures import MaskTargets, Predictions
from .losses import SetCriterion

__all__ = ['Mask2Former']

# class-head weights in our layout and in the built-ins' (mmseg's, mmdet's)
_CLASS_HEAD_KEYS = ('transformer_decoder.predictor.cls_embed.weight',
                    'cls_embed.weight')


class Mask2Former:
    """Mixin for an ``nn.Module``: pixel decoder, transformer decoder and
    set criterion of Mask2Former.

    Call :meth:`build_mask2former` in the module's ``__init__`` (after
    ``nn.Module.__init__``); then :meth:`predictions` and :meth:`losses` run
    the model.
    """

    def build_mask2former(self, *, in_channels: Sequence[int],
                          strides: Sequence[int], num_classes: int,
                          feat_channels: int, out_channels: int,
                          num_queries: int, pixel_decoder: ConfigType,
                          transformer_decoder: ConfigType,
                          loss_cls: ConfigType, loss_mask: ConfigType,
                          loss_dice: ConfigType, matcher: ConfigType,
                          num_points: int, oversample_ratio: float,
                          importance_sample_ratio: float,
                          min_masks_per_image: int = 0) -> None:
        """Build the parts from their configs.

        Args:
            in_channels: Backbone channels, fine to coarse (stride 4 first).
            strides: Backbone strides, e.g. [4, 8, 16, 32].
            num_classes: Classes K.
            feat_channels: Channels of the pixel decoder and the queries.
            out_channels: Channels of the mask features.
            num_queries: Queries Q.
            pixel_decoder: Config of the pixel decoder (``M2FPixelDecoder``).
            transformer_decoder: Config of ``M2FMaskedTransformerDecoder``.
            loss_cls: Config of the class loss (``M2FClassLoss``).
            loss_mask: Config of the point BCE loss.
            loss_dice: Config of the point Dice loss.
            matcher: Config of the matcher (TASK_UTILS).
            num_points: Points per matched mask in the mask losses.
            oversample_ratio: Candidate points per point.
            importance_sample_ratio: Share of points chosen by uncertainty.
            min_masks_per_image: Least masks an image counts in the mask
                losses' normaliser (``SetCriterion``; 1 is mmdet's).
        """
        pixel_decoder = copy.deepcopy(dict(pixel_decoder))
        pixel_decoder.update(in_channels=list(in_channels),
                             strides=list(strides),
                             feat_channels=feat_channels,
                             out_channels=out_channels)
        self.pixel_decoder = MODELS.build(pixel_decoder)
        transformer_decoder = copy.deepcopy(dict(transformer_decoder))
        transformer_decoder.update(
            num_classes=num_classes, in_channels=feat_channels,
            mask_dims=out_channels, num_queries=num_queries,
            num_levels=pixel_decoder.get('num_levels', 3))
        transformer_decoder.setdefault('embed_dims', feat_channels)
        self.transformer_decoder = MODELS.build(transformer_decoder)
        self.criterion = SetCriterion(
            num_classes=num_classes,
            matcher=TASK_UTILS.build(matcher),
            loss_cls=MODELS.build(dict(loss_cls, num_classes=num_classes)),
            loss_mask=MODELS.build(loss_mask),
            loss_dice=MODELS.build(loss_dice),
            num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
            min_masks_per_image=min_masks_per_image)

    def predictions(self, feats: Sequence[Tensor]) -> Predictions:
        """Backbone maps, fine to coarse, each (B, C_i, H_i, W_i) -> the
        ``num_layers + 1`` prediction sets."""
        mask_features, memories = self.pixel_decoder(list(feats))
        return self.transformer_decoder(memories, mask_features)

    def losses(self, predictions: Predictions,
               targets: MaskTargets) -> Dict[str, Tensor]:
        """Match every set to the targets; class, BCE and Dice loss terms
        (keys as mmdet's: ``loss_cls``, ``d0.loss_mask``, ...)."""
        return self.criterion(predictions, targets)

    def keep_class_head_for_other_class_count(self, state_dict: dict,
                                              prefix: str) -> None:
        """Fine-tuning across class counts: a checkpoint whose class head
        has another number of classes keeps our freshly initialised class
        head (everything else loads; one warning).

        Call it first in ``_load_from_state_dict``; ``state_dict`` is edited
        in place (our initial values replace the checkpoint's, so a strict
        load finds nothing missing).
        """
        ours = self.transformer_decoder.predictor.cls_embed
        for old_key in _CLASS_HEAD_KEYS:
            key = prefix + old_key
            if key in state_dict and state_dict[key].shape != ours.weight.shape:
                found = state_dict[key].shape[0] - 1
                state_dict[key] = ours.weight.detach().clone()
                state_dict[key[:-len('weight')] + 'bias'] = \
                    ours.bias.detach().clone()
                print_log(
                    f'{type(self).__name__}: checkpoint class head has {found} '
                    f'classes, the config {ours.weight.shape[0] - 1}: class '
                    f'head re-initialised, everything else loaded',
                    logger='current', level=logging.WARNING)
