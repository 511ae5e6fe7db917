"""``M2FDetHead``: Mask2Former as the panoptic head of mmdet's detector.

The mmdet adapter of the core (``Mask2Former``), driven by mmdet's
``Mask2Former`` / ``MaskFormer`` detector (``panoptic_head=dict(type=
'M2FDetHead', ...)``): the ``gt_instances`` (and, for panoptic data, the
stuff classes of ``gt_sem_seg``) of ``DetDataSample``s become mask targets
for the losses, and the final prediction set becomes the class and mask
logits mmdet's ``MaskFormerFusionHead`` post-processes.

In an mmdet config, change the built-in heads' types; the built-in's keys
are translated (``builtin_layout``)::

    model = dict(panoptic_head=dict(type='M2FDetHead'),
                 panoptic_fusion_head=dict(type='M2FFusionHead'))

Checkpoints of the built-in head load directly (keys renamed on load).
This file imports nothing from mmdet: the plugin stays importable without it.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import ConfigType
from torch import Tensor

from ...converters import convert_mmdet_state_dict, is_mmdet_mask2former
from ...structures import MaskTargets, instances_to_masks, panoptic_to_masks
from ..mask2former import Mask2Former
from .builtin_layout import accepts_builtin_layout, matcher_from_assigner
from .mmdet_gt import fit_to_input, mask_tensor

__all__ = ['M2FDetHead']


def _check_class_weight(loss_cls: dict, num_things: int,
                        num_stuff: int) -> None:
    """``class_weight`` needs one entry per class plus "no object"."""
    weight = loss_cls.get('class_weight')
    num_classes = num_things + num_stuff
    if weight is not None and len(weight) != num_classes + 1:
        raise ValueError(
            f'loss_cls.class_weight has {len(weight)} entries, but '
            f'num_things_classes + num_stuff_classes = {num_things} + '
            f'{num_stuff} = {num_classes} classes need {num_classes + 1} (one '
            'per class, "no object" last). Set class_weight=[1.0] * '
            f'{num_classes} + [0.1] (or drop it and use no_object_weight), '
            'or correct num_things_classes / num_stuff_classes.')


def _check_max_per_image(test_cfg: Optional[dict], num_queries: int,
                         num_classes: int) -> None:
    """Instance results keep the top ``max_per_image`` (query, class) pairs
    (both fusion heads): there must be that many. Checked when the model is
    built, not at the first validation after hours of training."""
    if not test_cfg or not test_cfg.get('instance_on', False):
        return
    max_per_image = test_cfg.get('max_per_image', 100)
    pairs = num_queries * num_classes
    if max_per_image > pairs:
        raise ValueError(
            f'test_cfg.max_per_image={max_per_image} is larger than queries '
            f'x classes = {num_queries} x {num_classes} = {pairs} (instance '
            'results keep the top max_per_image (query, class) pairs); set '
            f'test_cfg.max_per_image <= {pairs} or raise num_queries.')


def _matcher_cfg(matcher: Optional[ConfigType], train_cfg: Optional[dict],
                 num_points: int) -> dict:
    """The matcher's config: as given, else from mmdet's ``train_cfg``
    assigner (``matcher_from_assigner``: every match cost mmdet's
    ``HungarianAssigner`` takes is translated or refused); ``num_points`` if
    it names none."""
    if matcher is None:
        matcher = matcher_from_assigner(
            (train_cfg or {}).get('assigner'), num_points)
    matcher = copy.deepcopy(dict(matcher))
    matcher.setdefault('num_points', num_points)
    return matcher


@MODELS.register_module()
class M2FDetHead(Mask2Former, BaseModule):
    """Mask2Former panoptic / instance segmentation head for mmdet.

    Args:
        in_channels: Backbone channels, fine to coarse.
        num_things_classes: Thing classes T (labels ``0 .. T-1``).
        num_stuff_classes: Stuff classes S (labels ``T .. T+S-1``); 0 for
            instance segmentation.
        matcher: Config of the matcher; None: ``M2FHungarianMatcher`` with
            the cost weights of ``train_cfg.assigner`` (mmdet's
            ``HungarianAssigner``), if any.
        num_points, oversample_ratio, importance_sample_ratio: The mask
            losses' point sampling; None: ``train_cfg``'s, else the core's
            defaults (12544, 3.0, 0.75, as mmdet's).
        min_masks_per_image: Least masks an image counts in the mask losses'
            normaliser: 1 (default) as mmdet's ``MaskPseudoSampler``, where
            an image without targets counts one; 0 counts the targets only,
            as the paper's code (``SetCriterion``).
        ignore_index: Unlabelled pixels' label in ``gt_sem_seg``.
        masks_at_input_size: What :meth:`predict` returns. True (mmdet's
            contract): mask logits upsampled to the padded input, as mmdet's
            ``MaskFormerFusionHead`` needs them (B, Q, H, W float: about
            430 MB per 1333x800 image at 100 queries). False: at the mask
            features' resolution (stride 4), for ``M2FFusionHead``, which
            upsamples only the queries it keeps.
        train_cfg: mmdet's ``model.train_cfg`` (the detector adds it); its
            ``num_points``, ``oversample_ratio``, ``importance_sample_ratio``
            and ``assigner.match_costs`` weights are read, the rest (the
            sampler) is mmdet's machinery this head does not use.
        test_cfg: mmdet's ``model.test_cfg`` (the detector adds it; the
            fusion head reads it). With ``instance_on``, its
            ``max_per_image`` may not exceed queries x classes (checked
            here, at build time).
        init_cfg: mmengine's initialisation config.
        **kwargs: The core's other settings (``strides``, ``feat_channels``,
            ``out_channels``, ``num_queries``, ``pixel_decoder``,
            ``transformer_decoder``, ``loss_cls``, ``loss_mask``,
            ``loss_dice``): see ``Mask2Former.build_mask2former``, defaults
            in ``CORE_DEFAULTS``.

    A config of mmdet's built-in ``Mask2FormerHead`` works with only its
    ``type`` changed: its keys are translated (``builtin_layout``), and its
    checkpoints load directly (keys renamed on load).
    """

    builtin_checkpoint = (is_mmdet_mask2former, convert_mmdet_state_dict)

    @accepts_builtin_layout('mmdet')
    def __init__(self,
                 in_channels: Sequence[int],
                 *,
                 num_things_classes: int = 80,
                 num_stuff_classes: int = 53,
                 matcher: Optional[ConfigType] = None,
                 num_points: Optional[int] = None,
                 oversample_ratio: Optional[float] = None,
                 importance_sample_ratio: Optional[float] = None,
                 min_masks_per_image: int = 1,
                 ignore_index: int = 255,
                 masks_at_input_size: bool = True,
                 train_cfg: Optional[ConfigType] = None,
                 test_cfg: Optional[ConfigType] = None,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        core = self.pop_core_settings(kwargs)
        if kwargs:
            raise TypeError(f'{type(self).__name__}.__init__() got unexpected '
                            f'keyword arguments: {", ".join(sorted(kwargs))}')
        BaseModule.__init__(self, init_cfg=init_cfg)
        _check_class_weight(core['loss_cls'], num_things_classes,
                            num_stuff_classes)
        _check_max_per_image(test_cfg, core['num_queries'],
                             num_things_classes + num_stuff_classes)
        self.num_things_classes = num_things_classes
        self.num_stuff_classes = num_stuff_classes
        self.num_classes = num_things_classes + num_stuff_classes
        self.ignore_index = ignore_index
        self.masks_at_input_size = masks_at_input_size
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        # point sampling and matcher: given, else train_cfg's, else the core's
        train = train_cfg or {}
        for key, value in (('num_points', num_points),
                           ('oversample_ratio', oversample_ratio),
                           ('importance_sample_ratio',
                            importance_sample_ratio)):
            core[key] = value if value is not None else train.get(key,
                                                                  core[key])
        core['matcher'] = _matcher_cfg(matcher, train_cfg, core['num_points'])
        core['min_masks_per_image'] = min_masks_per_image
        self.build_mask2former(in_channels=in_channels,
                               num_classes=self.num_classes, **core)

    def loss(self, x: Sequence[Tensor],
             batch_data_samples: list) -> Dict[str, Tensor]:
        """Losses of all prediction sets, keys as mmdet's (``loss_cls``,
        ``loss_mask``, ``loss_dice``, ``d0.loss_cls``, ...)."""
        return self.loss_by_samples(self.prediction_sets(x),
                                    batch_data_samples)

    def targets(self, batch_data_samples: list,
                device: torch.device) -> MaskTargets:
        """Ground truth of ``DetDataSample``s -> mask targets.

        ``gt_instances`` (``labels``, ``masks``; ``ignored_instances``, e.g.
        crowds, are left out as in mmdet) give one target each. With stuff
        classes and a ``gt_sem_seg``, every stuff class present there adds
        one (panoptic: one segment map); without, the instance masks are
        kept as they are and may overlap. Masks and label maps smaller than
        the padded batch input (a data preprocessor without ``pad_mask`` /
        ``pad_seg``) are padded to it (``fit_to_input``).

        Raises:
            ValueError: Ground truth that does not fit the image, or labels
                outside ``[0, num_things_classes + num_stuff_classes)``.
        """
        labels = [s.gt_instances.labels for s in batch_data_samples]
        masks = [fit_to_input(mask_tensor(s.gt_instances.masks), s.metainfo,
                               0, 'gt_instances.masks')
                 for s in batch_data_samples]
        if self.num_stuff_classes and any('gt_sem_seg' in s
                                          for s in batch_data_samples):
            return panoptic_to_masks(
                labels, masks, [self._stuff_map(s, m)
                                for s, m in zip(batch_data_samples, masks)],
                self.num_things_classes, self.num_stuff_classes,
                self.ignore_index, device)
        return instances_to_masks(labels, masks, self.num_classes, device)

    def _stuff_map(self, sample, masks: Tensor) -> Tensor:
        """The image's label map; all ``ignore_index`` (no stuff) if it has
        none."""
        if 'gt_sem_seg' in sample:
            return fit_to_input(sample.gt_sem_seg.sem_seg, sample.metainfo,
                                 self.ignore_index, 'gt_sem_seg')
        return torch.full(masks.shape[-2:], self.ignore_index,
                          dtype=torch.long)

    def predict(self, x: Sequence[Tensor],
                batch_data_samples: list) -> Tuple[Tensor, Tensor]:
        """The final set, as ``MaskFormerFusionHead.predict`` takes it.

        Returns:
            Class logits (B, Q, K + 1) and mask logits (B, Q, H, W) upsampled
            to the padded batch input shape (``batch_input_shape``); with
            ``masks_at_input_size=False``, (B, Q, H / 4, W / 4).
        """
        cls_logits, mask_logits = self.predict_low_res(x)
        if not self.masks_at_input_size:
            return cls_logits, mask_logits
        size = batch_data_samples[0].metainfo['batch_input_shape']
        return cls_logits, F.interpolate(mask_logits, size=tuple(size[:2]),
                                         mode='bilinear', align_corners=False)

    def predict_low_res(self, x: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """The final set at the mask features' resolution: class logits
        (B, Q, K + 1), mask logits (B, Q, H / 4, W / 4); only this set's masks
        are multiplied out."""
        return self.prediction_sets(x).last()
