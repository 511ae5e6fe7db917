"""The built-in ``Mask2FormerHead`` layout translation (``builtin_layout``):
every key is used or refused, refusals name the key, and the translated
match costs and losses compute mmdet's numbers."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any, Iterator, List, Tuple

import pytest
import torch
from mmengine.config import Config

from m2f_plugin.models.heads.builtin_layout import (
    BuiltinLayoutError,
    is_builtin_layout,
    matcher_from_assigner,
    translate_builtin_head,
)
from m2f_plugin.models.losses import (
    M2FClassLoss,
    M2FPointBCELoss,
    M2FPointDiceLoss,
)
from m2f_plugin.models.matcher.match_costs import class_cost, mask_costs
from tests.helpers import CONFIGS, TINY_HEAD_CFG, mmseg_config_path

mmdet = pytest.importorskip('mmdet')

MMSEG_R50 = 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
MMDET_R50 = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs',
                     'mask2former',
                     'mask2former_r50_8xb2-lsj-50e_coco-panoptic.py')


def _mmseg_head() -> dict:
    return Config.fromfile(mmseg_config_path(MMSEG_R50)).to_dict()[
        'model']['decode_head']


def _mmdet_head() -> dict:
    """The head's kwargs as mmdet's detector passes them."""
    model = Config.fromfile(MMDET_R50).to_dict()['model']
    return dict(model['panoptic_head'], train_cfg=model['train_cfg'],
                test_cfg=model['test_cfg'])


HEADS = {'mmseg': _mmseg_head, 'mmdet': _mmdet_head}


def _dict_paths(obj: Any, path: Tuple = ()) -> Iterator[Tuple]:
    """Paths of every dict in ``obj`` (list items included)."""
    if isinstance(obj, dict):
        yield path
        for k, v in obj.items():
            yield from _dict_paths(v, path + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _dict_paths(v, path + (i,))


def _at(obj: Any, path: Tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


@pytest.mark.parametrize('toolbox', ['mmseg', 'mmdet'])
def test_translates_the_shipped_head(toolbox):
    head = HEADS[toolbox]()
    assert is_builtin_layout(head, toolbox)
    out = translate_builtin_head(head, toolbox)
    assert out['pixel_decoder'] == dict(
        type='M2FPixelDecoder', num_levels=3, num_layers=6, num_heads=8,
        num_points=4, ffn_dims=1024, dropout=0.0, num_groups=32)
    assert out['transformer_decoder'] == dict(
        type='M2FMaskedTransformerDecoder', num_layers=9, num_heads=8,
        ffn_dims=2048, dropout=0.0)
    assert out['loss_cls']['type'] == 'M2FClassLoss'
    assert out['loss_cls']['loss_weight'] == 2.0
    assert out['loss_mask'] == dict(type='M2FPointBCELoss', loss_weight=5.0)
    assert out['loss_dice'] == dict(type='M2FPointDiceLoss', eps=1.0,
                                    loss_weight=5.0)
    assert out['matcher'] == dict(type='M2FHungarianMatcher',
                                  num_points=12544, cost_class=2.0,
                                  cost_mask=5.0, cost_dice=5.0)
    assert (out['num_points'], out['oversample_ratio'],
            out['importance_sample_ratio']) == (12544, 3.0, 0.75)
    assert out['strides'] == [4, 8, 16, 32]


@pytest.mark.parametrize('toolbox', ['mmseg', 'mmdet'])
def test_every_unused_key_is_refused(toolbox):
    """A key added to any dict of the built-in head config (the detector's
    ``test_cfg`` aside: the fusion head reads it) is refused by name."""
    head = HEADS[toolbox]()
    paths = [p for p in _dict_paths(head) if 'test_cfg' not in p]
    assert len(paths) > 20
    for path in paths:
        cfg = copy.deepcopy(head)
        _at(cfg, path)['bogus_key'] = 1
        with pytest.raises(BuiltinLayoutError, match='bogus_key'):
            translate_builtin_head(cfg, toolbox)


def _set(cfg: dict, path: str, value: Any) -> dict:
    keys = [int(k) if k.isdigit() else k for k in path.split('.')]
    _at(cfg, keys[:-1])[keys[-1]] = value
    return cfg


REFUSED = [
    ('enforce_decoder_input_project', True, 'enforce_decoder_input_project'),
    ('loss_cls.use_sigmoid', True, 'loss_cls.use_sigmoid'),
    ('loss_cls.reduction', 'sum', 'loss_cls.reduction'),
    ('loss_mask.class_weight', [2.0], 'loss_mask.class_weight'),
    ('loss_dice.naive_dice', False, 'loss_dice.naive_dice'),
    ('loss_dice.activate', False, 'loss_dice.activate'),
    ('train_cfg.assigner.match_costs.0',
     dict(type='mmdet.FocalLossCost', weight=2.0), 'FocalLossCost'),
    ('train_cfg.assigner.match_costs.0',
     dict(type='MaskFocalLossCost', weight=2.0), 'MaskFocalLossCost'),
    ('train_cfg.assigner.match_costs.2.eps', 1e-3, 'match_costs[2].eps'),
    ('train_cfg.assigner.match_costs.2.pred_act', False, 'pred_act'),
    ('train_cfg.assigner.match_costs.1.use_sigmoid', False, 'use_sigmoid'),
    ('train_cfg.sampler.type', 'PseudoSampler', 'sampler.type'),
    ('transformer_decoder.layer_cfg.self_attn_cfg.proj_drop', 0.1,
     'proj_drop'),
    ('transformer_decoder.layer_cfg.cross_attn_cfg.num_heads', 4,
     'num_heads'),
    ('transformer_decoder.layer_cfg.ffn_cfg.act_cfg.type', 'GELU',
     'act_cfg.type'),
    ('pixel_decoder.encoder.layer_cfg.self_attn_cfg.dropout', 0.1,
     'ffn_cfg.ffn_drop'),
    ('pixel_decoder.encoder.num_cp', 2, 'num_cp'),
    ('pixel_decoder.norm_cfg.type', 'BN', 'norm_cfg.type'),
    ('pixel_decoder.num_outs', 4, 'num_outs'),
    ('positional_encoding.normalize', False, 'normalize'),
    ('pixel_decoder.strides', [4, 8, 16, 64], 'strides'),
    ('transformer_decoder.type', 'DetrTransformerDecoder',
     'transformer_decoder.type'),
]


@pytest.mark.parametrize('toolbox', ['mmseg', 'mmdet'])
@pytest.mark.parametrize('path, value, named', REFUSED,
                         ids=[f'{p}={v}' for p, v, _ in REFUSED])
def test_refused_settings_name_the_key(toolbox, path, value, named):
    cfg = _set(HEADS[toolbox](), path, value)
    with pytest.raises(BuiltinLayoutError, match=named.replace(
            '[', r'\[').replace(']', r'\]').replace('.', r'\.')):
        translate_builtin_head(cfg, toolbox)


def test_mmseg_only_refusals():
    for path, value in (('align_corners', True), ('test_cfg', dict(a=1)),
                        ('num_stuff_classes', 0)):
        with pytest.raises(BuiltinLayoutError, match=path):
            translate_builtin_head(_set(_mmseg_head(), path, value), 'mmseg')


def test_our_layout_is_left_alone():
    assert not is_builtin_layout(dict(TINY_HEAD_CFG), 'mmseg')
    ours = Config.fromfile(osp.join(
        CONFIGS, 'mask2former_coco',
        'mask2former_r50_8xb2-lsj-50e_coco-panoptic.py')).model
    head = dict(ours.panoptic_head, train_cfg=ours.train_cfg)
    assert not is_builtin_layout(head, 'mmdet')


@pytest.mark.parametrize('prefix', ['', 'mmdet.'])
def test_mmdet_head_reads_every_assigner_cost(prefix):
    """Our layout, matcher from the detector's train_cfg: prefixed names and
    weights are honoured; a cost ours cannot compute is refused."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    train_cfg = dict(num_points=64, assigner=dict(
        type=f'{prefix}HungarianAssigner', match_costs=[
            dict(type=f'{prefix}ClassificationCost', weight=1.5),
            dict(type=f'{prefix}DiceCost', weight=3.0, pred_act=True,
                 eps=1.0)]))
    cfg = dict(TINY_HEAD_CFG, type='M2FDetHead', num_things_classes=3,
               num_stuff_classes=2, train_cfg=train_cfg)
    cfg.pop('matcher')
    cfg.pop('num_classes')
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MODELS.build(cfg)
        matcher = head.criterion.matcher
        assert (matcher.cost_class, matcher.cost_mask, matcher.cost_dice) == (
            1.5, 0.0, 3.0)
        train_cfg['assigner']['match_costs'].append(
            dict(type=f'{prefix}FocalLossCost', weight=2.0))
        with pytest.raises(BuiltinLayoutError, match='FocalLossCost'):
            MODELS.build(cfg)


def _random_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, n, p = 7, 5, 4, 50
    cls = torch.randn(q, k + 1, generator=g) * 2
    logits = torch.randn(q, p, generator=g) * 3
    labels = torch.randint(0, k, (n,), generator=g)
    masks = (torch.rand(n, p, generator=g) > 0.5).float()
    return cls, logits, labels, masks


@pytest.mark.parametrize('prefix', ['', 'mmdet.'])
def test_match_costs_equal_mmdets(prefix):
    """The translated matcher weights with our cost functions give mmdet's
    total match cost."""
    from mmdet.registry import TASK_UTILS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    register_all_modules(init_default_scope=False)
    costs = [dict(type=f'{prefix}ClassificationCost', weight=2.5),
             dict(type=f'{prefix}CrossEntropyLossCost', weight=4.0,
                  use_sigmoid=True),
             dict(type=f'{prefix}DiceCost', weight=3.0, pred_act=True,
                  eps=1.0),
             dict(type=f'{prefix}ClassificationCost', weight=0.5)]
    matcher = matcher_from_assigner(
        dict(type='HungarianAssigner', match_costs=costs), 50)
    cls, logits, labels, masks = _random_case()
    pred = InstanceData(scores=cls, masks=logits)
    gt = InstanceData(labels=labels, masks=masks)
    with DefaultScope.overwrite_default_scope('mmdet'):
        ref = sum(TASK_UTILS.build(c)(pred_instances=pred, gt_instances=gt)
                  for c in costs)
    bce, dice = mask_costs(logits[None], masks[None])
    ours = (matcher['cost_class'] * class_cost(cls[None], labels[None])
            + matcher['cost_mask'] * bce + matcher['cost_dice'] * dice)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('loss_weight', [1.0, 2.0, 5.0])
def test_losses_equal_mmdets(loss_weight):
    """Translated losses against mmdet's, called as the built-in head calls
    them (avg_factor: class-weight sum, masks x points, masks)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    k = 5
    class_weight = [1.0, 2.0, 0.5, 1.0, 3.0, 0.1]
    head = dict(
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False,
                      loss_weight=loss_weight, reduction='mean',
                      class_weight=class_weight),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True,
                       reduction='mean', loss_weight=loss_weight),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True,
                       reduction='mean', naive_dice=True, eps=1.0,
                       loss_weight=loss_weight))
    cfg = dict(_mmseg_head(), num_classes=k, **head)
    out = translate_builtin_head(cfg, 'mmseg')
    cls, logits, labels, masks = _random_case(1)
    targets = torch.randint(0, k + 1, (cls.shape[0],))
    num_masks = masks.shape[0]
    with DefaultScope.overwrite_default_scope('mmdet'):
        ref = {key: MODELS.build(head[key]) for key in head}
    ref_cls = ref['loss_cls'](cls, targets, torch.ones(len(targets)),
                              avg_factor=torch.tensor(class_weight)[
                                  targets].sum())
    ours_cls = M2FClassLoss(num_classes=k, **_args(out['loss_cls']))(
        cls[None], targets[None])
    torch.testing.assert_close(ours_cls, ref_cls, rtol=1e-5, atol=1e-6)
    pred = logits[:num_masks]
    ref_mask = ref['loss_mask'](pred.reshape(-1), masks.reshape(-1),
                                avg_factor=num_masks * masks.shape[1])
    ours_mask = M2FPointBCELoss(**_args(out['loss_mask']))(
        pred, masks, torch.tensor(float(num_masks)))
    torch.testing.assert_close(ours_mask, ref_mask, rtol=1e-5, atol=1e-6)
    ref_dice = ref['loss_dice'](pred, masks, avg_factor=num_masks)
    ours_dice = M2FPointDiceLoss(**_args(out['loss_dice']))(
        pred, masks, torch.tensor(float(num_masks)))
    torch.testing.assert_close(ours_dice, ref_dice, rtol=1e-5, atol=1e-6)


def _args(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != 'type'}


def test_refusal_list_is_documented():
    """Each refused match cost and loss option is in the module docstring."""
    from m2f_plugin.models.heads import builtin_layout
    doc = builtin_layout.__doc__
    names: List[str] = ['FocalLossCost', 'MaskFocalLossCost', 'naive_dice',
                        'enforce_decoder_input_project', 'proj_drop',
                        'num_cp', 'align_corners', 'MaskPseudoSampler']
    assert all(n in doc for n in names)
