"""The task-agnostic core of Mask2Former: features in, prediction sets out.

backbone features -> pixel decoder -> (mask features, memories)
                  -> masked-attention transformer decoder -> ``Predictions``
                  -> matcher + set criterion -> losses

The toolbox adapters (the mmseg decode head, the mmdet panoptic head)
inherit ``Mask2Former`` next to their toolbox's base class. The mixin holds
what they share: the core's settings and their defaults
(:data:`CORE_DEFAULTS`), building the three parts under the attribute names
that checkpoints use (``pixel_decoder``, ``transformer_decoder``,
``criterion``), running them, and loading checkpoints (the built-in
Mask2Former's layout converted, a class head of another class count
re-initialised). An adapter supplies its toolbox's data contract: its
ground truth as ``MaskTargets`` (:meth:`Mask2Former.targets`: label maps,
panoptic segment maps or instance masks; the matcher and the criterion only
sample them at points), ``Predictions`` as its toolbox's outputs, and the
converter of its toolbox's built-in checkpoints.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmseg.registry import MODELS, TASK_UTILS
from mmseg.utils import ConfigType
from torch import Tensor

from ..structures import MaskTargets, Predictions
from .losses import SetCriterion

__all__ = ['CORE_DEFAULTS', 'Mask2Former']

# class-head weights in our layout and in the built-ins' (mmseg's, mmdet's)
_CLASS_HEAD_KEYS = ('transformer_decoder.predictor.cls_embed.weight',
                    'cls_embed.weight')

# The core's settings a head takes as keyword arguments, with their defaults
# (``Mask2Former.build_mask2former`` documents them). A head may resolve some
# itself first (mmdet's reads the point sampling and matcher from its
# train_cfg).
CORE_DEFAULTS: Dict[str, Any] = dict(
    strides=(4, 8, 16, 32),
    feat_channels=256,
    out_channels=256,
    num_queries=100,
    pixel_decoder=dict(type='M2FPixelDecoder'),
    transformer_decoder=dict(type='M2FMaskedTransformerDecoder'),
    loss_cls=dict(type='M2FClassLoss'),
    loss_mask=dict(type='M2FPointBCELoss'),
    loss_dice=dict(type='M2FPointDiceLoss'),
    matcher=dict(type='M2FHungarianMatcher'),
    num_points=12544,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    min_masks_per_image=0)

# (recognise, convert) a built-in Mask2Former head state dict at a prefix
CheckpointRules = Tuple[Callable[[dict, str], bool],
                        Callable[[dict, str], Tuple[dict, Any]]]


class Mask2Former:
    """Mixin for an ``nn.Module``: pixel decoder, transformer decoder and
    set criterion of Mask2Former.

    In the module's ``__init__`` (after ``nn.Module.__init__``) take the
    core's settings out of the keyword arguments (:meth:`pop_core_settings`)
    and call :meth:`build_mask2former`; then :meth:`predictions` and
    :meth:`losses` run the model. A subclass implements :meth:`targets` and
    sets :attr:`builtin_checkpoint`.
    """

    #: How to recognise and convert a checkpoint of the toolbox's built-in
    #: Mask2Former head (``m2f_plugin.converters``); None: none is loaded.
    builtin_checkpoint: Optional[CheckpointRules] = None

    @staticmethod
    def pop_core_settings(kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """The core's settings, popped from a head's keyword arguments.

        Args:
            kwargs: The head's keyword arguments; the core's keys are
                removed, the rest (the toolbox's) is left.

        Returns:
            Every key of :data:`CORE_DEFAULTS`: the given value, else a copy
            of the default.
        """
        return {key: kwargs.pop(key) if key in kwargs else
                copy.deepcopy(default)
                for key, default in CORE_DEFAULTS.items()}

    def build_mask2former(self, *, in_channels: Sequence[int],
                          strides: Sequence[int], num_classes: int,
                          feat_channels: int, out_channels: int,
                          num_queries: int, pixel_decoder: ConfigType,
                          transformer_decoder: ConfigType,
                          loss_cls: ConfigType, loss_mask: ConfigType,
                          loss_dice: ConfigType, matcher: ConfigType,
                          num_points: int, oversample_ratio: float,
                          importance_sample_ratio: float,
                          min_masks_per_image: int) -> None:
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
                losses' normaliser (``SetCriterion``): 0 counts the targets
                only, as the paper's code; 1 as mmdet's (an image without
                targets counts one).
        """
        self.num_queries = num_queries
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

    # ------------------------------------------------------------- running
    def predictions(self, feats: Sequence[Tensor]) -> Predictions:
        """Backbone maps, fine to coarse, each (B, C_i, H_i, W_i) -> the
        ``num_layers + 1`` prediction sets."""
        mask_features, memories = self.pixel_decoder(list(feats))
        return self.transformer_decoder(memories, mask_features)

    def prediction_sets(self, inputs: Sequence[Tensor]) -> Predictions:
        """The head's inputs -> the prediction sets (what ``loss`` and
        ``predict`` use); a head whose toolbox selects or transforms its
        inputs overrides it."""
        return self.predictions(inputs)

    def forward(self, inputs: Sequence[Tensor],
                batch_data_samples: Optional[list] = None
                ) -> Tuple[List[Tensor], List[Tensor]]:
        """The built-in Mask2Former heads' contract (mmseg's and mmdet's):
        per set, class logits (B, Q, K + 1) and mask logits
        (B, Q, H / 4, W / 4). What ``mode='tensor'`` returns;
        ``batch_data_samples`` is unused."""
        return self.prediction_sets(inputs).as_lists()

    # ------------------------------------------------------------- training
    def targets(self, batch_data_samples: list,
                device: torch.device) -> MaskTargets:
        """The toolbox's ground truth in ``batch_data_samples`` -> mask
        targets on ``device`` (each head implements it)."""
        raise NotImplementedError(
            f'{type(self).__name__} does not implement targets()')

    def losses(self, predictions: Predictions,
               targets: MaskTargets) -> Dict[str, Tensor]:
        """Match every set to the targets; class, BCE and Dice loss terms
        (keys as mmdet's: ``loss_cls``, ``d0.loss_mask``, ...)."""
        return self.criterion(predictions, targets)

    def loss_by_samples(self, predictions: Predictions,
                        batch_data_samples: list) -> Dict[str, Tensor]:
        """The losses against the ground truth of the data samples
        (:meth:`targets`, made where the predictions are)."""
        targets = self.targets(batch_data_samples,
                               predictions.mask_features.device)
        return self.losses(predictions, targets)

    # ------------------------------------------------------------- loading
    def keep_class_head_for_other_class_count(self, state_dict: dict,
                                              prefix: str) -> None:
        """Fine-tuning across class counts: a checkpoint whose class head
        has another number of classes keeps our freshly initialised class
        head (everything else loads; one warning).

        ``state_dict`` is edited in place (our initial values replace the
        checkpoint's, so a strict load finds nothing missing).
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

    def convert_builtin_checkpoint(self, state_dict: dict,
                                   prefix: str) -> None:
        """Rename the keys of a built-in Mask2Former head checkpoint at
        ``prefix`` to ours, in place (:attr:`builtin_checkpoint`'s rules,
        those of ``m2f_plugin.converters``), with one log line."""
        if self.builtin_checkpoint is None:
            return
        recognise, convert = self.builtin_checkpoint
        if not recognise(state_dict, prefix):
            return
        head = {k: state_dict.pop(k) for k in list(state_dict)
                if k.startswith(prefix)}
        converted, report = convert(head, prefix)
        state_dict.update(converted)
        print_log(f'{type(self).__name__}: converted a built-in Mask2Former '
                  f'checkpoint on load: {report.summary()}',
                  logger='current', level=logging.INFO)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        """Load our checkpoints, the built-in head's (converted on load) and
        those of another class count (class head re-initialised)."""
        self.keep_class_head_for_other_class_count(state_dict, prefix)
        self.convert_builtin_checkpoint(state_dict, prefix)
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys,
            unexpected_keys, error_msgs)
