"""The detector configs (COCO panoptic and instance): mmdet's own config of the
same name, except the head; our head's settings translated from mmdet's.

Nothing here downloads: pretrained ``init_cfg`` is dropped before building.
"""
from __future__ import annotations

import copy
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from m2f_plugin.engine.train_command import guard_hooks
from tests.helpers import CONFIGS
from tests.helpers.configs import (
    assert_pairs_equal,
    config_diff,
    flat,
    strip_scope,
)

COCO = sorted(glob.glob(osp.join(CONFIGS, 'mask2former_coco', '*.py')))
CUSTOM_IMPORTS = dict(imports=['m2f_plugin'], allow_failed_imports=False)


def _mmdet_config(name: str) -> str:
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs',
                    'mask2former', name)




def test_inventory():
    """COCO panoptic and instance, R50 and Swin-T; every one has a twin."""
    names = sorted(osp.basename(p) for p in COCO)
    assert names == sorted(
        f'mask2former_{bb}_8xb2-lsj-50e_coco{task}.py'
        for bb in ('r50', 'swin-t-p4-w7-224') for task in ('', '-panoptic'))
    for p in COCO:
        assert osp.isfile(_mmdet_config(osp.basename(p))), p


@pytest.mark.parametrize('path', COCO, ids=osp.basename)
def test_same_settings_as_mmdet_builtin_except_the_head(path):
    ours_cfg = Config.fromfile(path)
    assert ours_cfg.custom_imports == CUSTOM_IMPORTS
    assert ours_cfg.default_scope == 'mmdet'
    ours = flat(strip_scope(ours_cfg.to_dict()))
    ref = flat(strip_scope(
        Config.fromfile(_mmdet_config(osp.basename(path))).to_dict()))
    assert ours.pop('model.panoptic_fusion_head.type') == 'M2FFusionHead'
    assert ref.pop('model.panoptic_fusion_head.type') == 'MaskFormerFusionHead'
    # deliberate: readable overlays (m2f_plugin/visualization)
    assert ours.pop('visualizer.type') == 'M2FDetLocalVisualizer'
    assert ref.pop('visualizer.type') == 'DetLocalVisualizer'
    # deliberate: the training guards (configs/_base_/m2f_runtime.py)
    assert ours.pop('custom_hooks') == guard_hooks()
    # the shared head (configs/_base_/models/mask2former_det_head.py) the
    # config's head is made of, checked in the next test
    assert ours_cfg.m2f_det_head.type == ours_cfg.model.panoptic_head.type
    skip = ('model.panoptic_head', 'custom_imports', 'm2f_det_head')
    diff = config_diff(ours, ref, skip)
    assert not diff, diff
    for k in ('train_pipeline', 'test_pipeline', 'model.backbone.type',
              'model.train_cfg.num_points', 'param_scheduler',
              'optim_wrapper.optimizer.lr', 'val_evaluator'):
        assert any(o.startswith(k) for o in ours), k


@pytest.mark.parametrize('path', COCO, ids=osp.basename)
def test_head_hyper_parameters_as_mmdet_builtin(path):
    cfg = Config.fromfile(path)
    ours = cfg.model.panoptic_head
    ref_cfg = Config.fromfile(_mmdet_config(osp.basename(path)))
    ref = ref_cfg.model.panoptic_head
    enc = ref.pixel_decoder.encoder
    attn = enc.layer_cfg.self_attn_cfg
    dec = ref.transformer_decoder
    train = ref_cfg.model.train_cfg
    k = ref.num_things_classes + ref.num_stuff_classes
    assert ref.loss_cls.class_weight == [1.0] * k + [0.1]
    costs = {c.type: c for c in train.assigner.match_costs}
    pairs = [
        (ours.in_channels, ref.in_channels),
        (ours.strides, ref.strides),
        (ours.feat_channels, ref.feat_channels),
        (ours.out_channels, ref.out_channels),
        (ours.num_things_classes, ref.num_things_classes),
        (ours.num_stuff_classes, ref.num_stuff_classes),
        (ours.num_queries, ref.num_queries),
        (ours.pixel_decoder.num_levels, ref.num_transformer_feat_level),
        (ours.pixel_decoder.num_levels, attn.num_levels),
        (ours.pixel_decoder.num_layers, enc.num_layers),
        (ours.pixel_decoder.num_heads, attn.num_heads),
        (ours.pixel_decoder.num_points, attn.num_points),
        (ours.pixel_decoder.ffn_dims, enc.layer_cfg.ffn_cfg.feedforward_channels),
        (ours.pixel_decoder.dropout, attn.dropout),
        (ours.pixel_decoder.num_groups, ref.pixel_decoder.norm_cfg.num_groups),
        (ours.transformer_decoder.num_layers, dec.num_layers),
        (ours.transformer_decoder.num_heads,
         dec.layer_cfg.self_attn_cfg.num_heads),
        (ours.transformer_decoder.ffn_dims,
         dec.layer_cfg.ffn_cfg.feedforward_channels),
        (ours.transformer_decoder.dropout, dec.layer_cfg.ffn_cfg.ffn_drop),
        (ours.loss_cls.loss_weight, ref.loss_cls.loss_weight),
        (ours.loss_cls.no_object_weight, ref.loss_cls.class_weight[-1]),
        (ours.loss_mask.loss_weight, ref.loss_mask.loss_weight),
        (ours.loss_dice.loss_weight, ref.loss_dice.loss_weight),
        (ours.loss_dice.eps, ref.loss_dice.eps),
        (ours.num_points, train.num_points),
        (ours.oversample_ratio, train.oversample_ratio),
        (ours.importance_sample_ratio, train.importance_sample_ratio),
        (ours.matcher.num_points, train.num_points),
        (ours.matcher.cost_class, costs['ClassificationCost'].weight),
        (ours.matcher.cost_mask, costs['CrossEntropyLossCost'].weight),
        (ours.matcher.cost_dice, costs['DiceCost'].weight),
    ]
    assert_pairs_equal(pairs)
    # the fusion head keeps mmdet's class split
    fusion = cfg.model.panoptic_fusion_head
    assert (fusion.num_things_classes, fusion.num_stuff_classes) == (
        ref.num_things_classes, ref.num_stuff_classes)


@pytest.mark.parametrize('path', COCO, ids=osp.basename)
def test_builds_under_mmdet_scope(path):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(model_cfg)
    assert type(model).__name__ == 'Mask2Former'
    assert type(model.panoptic_head).__name__ == 'M2FDetHead'
    assert type(model.panoptic_fusion_head).__name__ == 'M2FFusionHead'
    head = model.panoptic_head
    assert head.masks_at_input_size is False  # the fusion head upsamples
    assert (head.num_things_classes, head.num_stuff_classes) == (
        cfg.num_things_classes, cfg.num_stuff_classes)
