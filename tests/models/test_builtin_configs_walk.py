"""Every Mask2Former config shipped with the installed mmseg and mmdet, with
only the heads' ``type`` changed, is the same model as the built-in: it
builds, the built-in's state dict loads strictly (renamed on load) and the
outputs agree (all prediction sets; mmseg: the segmentor's logits).

The fast walk shrinks each config first (ResNet-18 or a 32-channel Swin,
32-channel head, 8 queries, 1 encoder and 2 decoder layers), then swaps the
type, so both sides have the same shrunk hyper-parameters; one R-50 and one
Swin config per toolbox are also compared at full size. Nothing downloads:
``init_cfg``/``pretrained`` are dropped before building.
"""
from __future__ import annotations

import copy
import glob
import os.path as osp
from typing import Dict, List, Tuple

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope

from tests.helpers import mmseg_config_path, prediction_sets

mmdet = pytest.importorskip('mmdet')

MMSEG_DIR = mmseg_config_path('mask2former')
MMDET_DIR = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs',
                     'mask2former')
MMSEG_CONFIGS = sorted(glob.glob(osp.join(MMSEG_DIR, '*.py')))
MMDET_CONFIGS = sorted(glob.glob(osp.join(MMDET_DIR, '*.py')))
# head key, built-in type -> ours, per toolbox
SWAPS: Dict[str, Dict[str, Tuple[str, str]]] = {
    'mmseg': {'decode_head': ('Mask2FormerHead', 'M2FHead')},
    'mmdet': {'panoptic_head': ('Mask2FormerHead', 'M2FDetHead'),
              'panoptic_fusion_head': ('MaskFormerFusionHead',
                                       'M2FFusionHead')},
}
FULL_SIZE = {
    'mmseg': ['mask2former_r50_8xb2-160k_ade20k-512x512.py',
              'mask2former_swin-t_8xb2-160k_ade20k-512x512.py'],
    'mmdet': ['mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
              'mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py'],
}
C = 32  # shrunk head width
SIZE = 64  # input height and width


def _no_downloads(obj):
    """Drop pretrained weights anywhere; SyncBN -> BN (CPU)."""
    if isinstance(obj, dict):
        out = {k: _no_downloads(v) for k, v in obj.items()
               if k != 'pretrained'}
        if 'init_cfg' in out and isinstance(out['init_cfg'], dict) and \
                out['init_cfg'].get('type') == 'Pretrained':
            out['init_cfg'] = None
        if out.get('type') == 'SyncBN':
            out['type'] = 'BN'
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_no_downloads(v) for v in obj)
    return obj


def _shrink_backbone(backbone: dict) -> List[int]:
    """A small backbone of the same kind; returns its channels."""
    kind = backbone['type'].rsplit('.', 1)[-1]
    if kind == 'ResNet':
        backbone['depth'] = 18
        return [64, 128, 256, 512]
    assert kind == 'SwinTransformer', kind
    backbone.update(embed_dims=C, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    return [C, 2 * C, 4 * C, 8 * C]


def _shrink_head(head: dict, channels: List[int]) -> None:
    """The built-in head's widths and depths, in its own layout."""
    head.update(in_channels=channels, feat_channels=C, out_channels=C,
                num_queries=8)
    head['positional_encoding']['num_feats'] = C // 2
    pixel = head['pixel_decoder']
    pixel['norm_cfg']['num_groups'] = 8
    pixel['positional_encoding']['num_feats'] = C // 2
    pixel['encoder']['num_layers'] = 1
    layer = pixel['encoder']['layer_cfg']
    layer['self_attn_cfg'].update(embed_dims=C, num_heads=4)
    layer['ffn_cfg'].update(embed_dims=C, feedforward_channels=2 * C)
    decoder = head['transformer_decoder']
    decoder['num_layers'] = 2
    layer = decoder['layer_cfg']
    for key in ('self_attn_cfg', 'cross_attn_cfg'):
        layer[key].update(embed_dims=C, num_heads=4)
    layer['ffn_cfg'].update(embed_dims=C, feedforward_channels=2 * C)


def _model_cfgs(path: str, toolbox: str, shrink: bool) -> Tuple[dict, dict]:
    """(built-in model config, the same with only the head types swapped)."""
    model = _no_downloads(Config.fromfile(path).to_dict()['model'])
    head_key = next(iter(SWAPS[toolbox]))
    if shrink:
        _shrink_head(model[head_key], _shrink_backbone(model['backbone']))
        train_cfg = (model[head_key] if toolbox == 'mmseg'
                     else model)['train_cfg']
        train_cfg['num_points'] = 64
    ours = copy.deepcopy(model)
    for key, (builtin_type, our_type) in SWAPS[toolbox].items():
        assert model[key]['type'].rsplit('.', 1)[-1] == builtin_type
        ours[key]['type'] = our_type
    return ConfigDict(model), ConfigDict(ours)


def _registry(toolbox: str):
    if toolbox == 'mmseg':
        import mmdet.models  # noqa: F401  (the built-in head wraps mmdet's)
        from mmseg.registry import MODELS
        return MODELS
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def _check(path: str, toolbox: str, shrink: bool) -> None:
    builtin_cfg, ours_cfg = _model_cfgs(path, toolbox, shrink)
    models = _registry(toolbox)
    with DefaultScope.overwrite_default_scope(toolbox):
        torch.manual_seed(0)
        builtin = models.build(builtin_cfg)
        builtin.init_weights()
        ours = models.build(ours_cfg)
    head_key = next(iter(SWAPS[toolbox]))
    assert type(getattr(ours, head_key)).__name__ == \
        SWAPS[toolbox][head_key][1]
    missing, unexpected = ours.load_state_dict(builtin.state_dict(),
                                               strict=True)
    assert not missing and not unexpected
    builtin.eval()
    ours.eval()
    torch.manual_seed(1)
    imgs = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = builtin.extract_feat(imgs)
        if toolbox == 'mmseg':
            from tests.helpers import seg_data_samples
            samples = seg_data_samples(torch.zeros(1, SIZE, SIZE).long())
            cls_ref, mask_ref = builtin.decode_head(feats, samples)
            preds = ours.decode_head(feats)
            metas = [dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                          ori_shape=(SIZE, SIZE))]
            assert _rel_err(ours.encode_decode(imgs, metas),
                            builtin.encode_decode(imgs, metas)) < 1e-5
        else:
            cls_ref, mask_ref = builtin.panoptic_head(feats, None)
            preds = ours.panoptic_head(feats)
    cls_out, mask_out = prediction_sets(preds)
    assert len(cls_out) == len(cls_ref)
    for s, (a, b, c, d) in enumerate(zip(cls_out, cls_ref, mask_out,
                                         mask_ref)):
        assert _rel_err(a, b) < 1e-5, s
        assert _rel_err(c, d) < 1e-5, s


def _cases(toolbox: str, paths: List[str]) -> list:
    return [pytest.param(p, toolbox, id=f'{toolbox}-{osp.basename(p)[:-3]}')
            for p in paths]


def test_inventory():
    """The walk covers every shipped config of both toolboxes."""
    assert len(MMSEG_CONFIGS) == 13
    assert len(MMDET_CONFIGS) == 11
    for toolbox, names in FULL_SIZE.items():
        folder = MMSEG_DIR if toolbox == 'mmseg' else MMDET_DIR
        for name in names:
            assert osp.isfile(osp.join(folder, name)), name


@pytest.mark.parametrize('path, toolbox',
                         _cases('mmseg', MMSEG_CONFIGS)
                         + _cases('mmdet', MMDET_CONFIGS))
def test_type_swap_is_the_same_model(path, toolbox):
    _check(path, toolbox, shrink=True)


@pytest.mark.slow
@pytest.mark.parametrize('path, toolbox', [
    pytest.param(osp.join(MMSEG_DIR if tb == 'mmseg' else MMDET_DIR, name),
                 tb, id=f'{tb}-{name[:-3]}')
    for tb, names in FULL_SIZE.items() for name in names])
def test_type_swap_is_the_same_model_full_size(path, toolbox):
    _check(path, toolbox, shrink=False)
