"""Every shipped config: loads, builds, trains a step, mirrors mmseg's own.

Nothing here downloads: pretrained ``init_cfg`` is dropped before building and
any network connection fails the test (see ``_no_network``).
"""
from __future__ import annotations

import copy
import glob
import os.path as osp
import socket
from typing import Any, List

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from m2f_plugin.engine.train_command import guard_hooks
from m2f_plugin.utils.pretrained_urls import HOSTS, family_url, installed_family
from tests.helpers import CONFIGS, make_label_maps, mmseg_config_path, seg_data_samples
from tests.helpers.configs import (
    assert_pairs_equal,
    config_diff,
    flat,
    strip_scope,
)


def _is_mmdet_config(path: str) -> bool:
    """Detector configs (mmdet's default scope): tested in test_configs_mmdet
    and test_demo_detection."""
    return Config.fromfile(path, import_custom_modules=False).get(
        'default_scope') == 'mmdet'


# the segmentor configs (mmseg bases)
ALL_CONFIGS = sorted(
    p for p in glob.glob(osp.join(CONFIGS, '**', '*.py'), recursive=True)
    if '_base_' not in p.split(osp.sep) and not _is_mmdet_config(p))
MMSEG_M2F = mmseg_config_path('mask2former')
# ours whose file name is also one of mmseg's built-in Mask2Former configs
TWINS = [p for p in ALL_CONFIGS
         if osp.isfile(osp.join(MMSEG_M2F, osp.basename(p)))]
CUSTOM_IMPORTS = dict(imports=['m2f_plugin'], allow_failed_imports=False)
METRICS = ['mIoU', 'mDice', 'mFscore']
BASE_LR, BASE_WD = 1e-4, 0.05
# no weight decay on these parameters (besides norm layers)
NO_DECAY_NAMES = ('query_embed', 'query_feat', 'level_embed', 'pos_embed',
                  'cls_token', 'relative_position_bias_table')

# dataset -> (classes, crop sizes used)
DATASETS = {'ADE20KDataset': (150, [(512, 512), (640, 640)]),
            'CityscapesDataset': (19, [(512, 1024)])}
# config folders whose optimizers follow ``_expected_lr_wd``
MINE = ('mask2former', 'mask2former_mit', 'mask2former_vit', 'mask2former_fast')
MIT_B0 = 'mask2former_mit/mask2former_mit-b0_8xb2-160k_ade20k-512x512.py'
MIT_B5 = 'mask2former_mit/mask2former_mit-b5_8xb2-160k_ade20k-512x512.py'
VIT_B = 'mask2former_vit/mask2former_vit-b16-mln_8xb2-160k_ade20k-512x512.py'
R50_ADE = 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
SWIN_T_ADE = 'mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'


def _rel(path: str) -> str:
    return osp.relpath(path, CONFIGS)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Fail loudly on any attempt to connect (e.g. a checkpoint download)."""

    def refuse(*args, **kwargs):
        raise RuntimeError('test_configs must not use the network')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.fixture(scope='module', autouse=True)
def _registered():
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)



def _on_family_host(obj: Any) -> Any:
    """Weight URLs as the installed toolbox family serves them (its configs
    name its own host; ours name the OpenMMLab one and are fetched from the
    installed family's, see ``m2f_plugin.utils.pretrained_urls``)."""
    if isinstance(obj, str):
        return family_url(obj)
    if isinstance(obj, dict):
        return {k: _on_family_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_family_host(v) for v in obj)
    return obj



def _replace_syncbn(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: ('BN' if k == 'type' and v == 'SyncBN' else
                    _replace_syncbn(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_syncbn(v) for v in obj)
    return obj


def _model_cfg(cfg: Config, num_points: int | None = None) -> dict:
    """The model config, CPU-buildable: BN for SyncBN, no pretrained init."""
    model = _replace_syncbn(copy.deepcopy(cfg.to_dict()['model']))
    model['backbone']['init_cfg'] = None
    model['backbone'].pop('pretrained', None)
    model.pop('pretrained', None)
    if num_points is not None:
        model['decode_head']['num_points'] = num_points
        model['decode_head']['matcher']['num_points'] = num_points
    return model


def _backbone_channels(model: nn.Module) -> List[int]:
    """Channels of the maps the head receives, read from the modules.

    No forward pass: works for big backbones too.
    """
    if getattr(model, 'with_neck', False):
        return [c.conv.out_channels for c in model.neck.convs]
    bb = model.backbone
    name = type(bb).__name__
    if name in ('ResNet', 'M2FResNet'):
        last = [getattr(bb, n)[-1] for n in bb.res_layers]  # last block
        return [(b.conv3 if hasattr(b, 'conv3') else b.conv2).out_channels
                for b in last]
    if name == 'SwinTransformer':
        return [getattr(bb, f'norm{i}').normalized_shape[0]
                for i in bb.out_indices]
    if name == 'MixVisionTransformer':
        return [bb.layers[i][2].normalized_shape[0] for i in bb.out_indices]
    raise AssertionError(f'unknown backbone {name}')


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, nn.GroupNorm, nn.LayerNorm))


def _expected_lr_wd(name: str, owner: nn.Module) -> tuple:
    """The intended (lr, weight_decay) of a parameter: backbone at lr x0.1, no
    decay on norms, position/class tokens, queries and level embeddings."""
    lr = BASE_LR * (0.1 if name.startswith('backbone.') else 1.0)
    no_decay = _is_norm(owner) or any(k in name for k in NO_DECAY_NAMES)
    return lr, 0.0 if no_decay else BASE_WD


def _check_param_groups(model: nn.Module, cfg: Config) -> int:
    """Build the config's optimizer and compare every parameter's lr and wd
    with ``_expected_lr_wd``. Returns the number of parameters checked."""
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(wrapper.optimizer).__name__ == 'AdamW'
    group_of = {id(p): g for g in wrapper.optimizer.param_groups
                for p in g['params']}
    modules = dict(model.named_modules())
    wrong, checked = [], 0
    for name, p in model.named_parameters():
        if not p.requires_grad:  # e.g. ResNet's frozen BN
            continue
        owner = modules[name.rsplit('.', 1)[0]]
        lr, wd = _expected_lr_wd(name, owner)
        g = group_of[id(p)]
        checked += 1
        if abs(g['lr'] - lr) > 1e-12 or abs(g['weight_decay'] - wd) > 1e-12:
            wrong.append((name, g['lr'], g['weight_decay'], lr, wd))
    assert not wrong, wrong[:10]
    if cfg.optim_wrapper.get('constructor') == 'M2FOptimWrapperConstructor':
        # one group per (lr, decay) pair, not one per parameter
        assert len(wrapper.optimizer.param_groups) <= 8, len(
            wrapper.optimizer.param_groups)
    return checked


def test_inventory():
    """All of mmseg's Mask2Former configs have a twin, plus MiT and ViT."""
    builtin = sorted(osp.basename(p)
                     for p in glob.glob(osp.join(MMSEG_M2F, '*.py')))
    assert len(builtin) == 13
    assert sorted(osp.basename(p) for p in TWINS) == builtin
    ours = {_rel(p) for p in ALL_CONFIGS}
    assert {MIT_B0, MIT_B5, VIT_B} <= ours


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_rel)
def test_config_loads_builds_and_is_wired(path):
    """Loads, imports the plugin, evaluates 3 metrics, builds without network;
    the head's input channels equal the backbone's (or neck's) output
    channels, and the optimizer's parameter groups follow the intended
    rules."""
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == CUSTOM_IMPORTS
    for key in ('val_evaluator', 'test_evaluator'):
        assert cfg[key]['type'] == 'IoUMetric'
        assert list(cfg[key]['iou_metrics']) == METRICS
    head = cfg.model.decode_head
    assert head.type in ('M2FHead', 'M2FGraphedHead')
    assert list(head.strides) == [4, 8, 16, 32]
    crop = tuple(cfg.get('crop_size') or cfg.model.data_preprocessor['size'])
    assert tuple(cfg.model.data_preprocessor['size']) == crop
    dataset = cfg.get('dataset_type')
    if dataset in DATASETS:
        num_classes, crops = DATASETS[dataset]
        assert head.num_classes == num_classes
        assert crop in crops

    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(cfg))
    assert _backbone_channels(model) == list(head.in_channels)
    # the pixel decoder's projections really take those channels
    projs = model.decode_head.pixel_decoder.input_projs
    assert [p[0].in_channels for p in projs] == list(head.in_channels)[::-1][:3]
    assert model.decode_head.num_classes == head.num_classes
    if _rel(path).split(osp.sep)[0] in MINE:  # not e.g. the demo's
        assert _check_param_groups(model, cfg) > 100
    del model


@pytest.mark.parametrize('path', TWINS, ids=osp.basename)
def test_same_settings_as_mmseg_builtin(path):
    """Everything but the head, custom_imports and the (extended) evaluators
    equals mmseg's own config of the same name: backbone, data preprocessor,
    pipelines, dataloaders, optimizer, schedule, loops, hooks, runtime."""
    ours = flat(_on_family_host(strip_scope(Config.fromfile(path).to_dict())))
    ref = flat(strip_scope(
        Config.fromfile(osp.join(MMSEG_M2F, osp.basename(path))).to_dict()))
    skip = ('model.decode_head', 'custom_imports', 'val_evaluator',
            'test_evaluator')
    # deliberate: the same updates with less host time per step (fused AdamW,
    # one group per option set), see test_optim_wrapper_constructor.py
    assert ours.pop('optim_wrapper.constructor') == (
        'M2FOptimWrapperConstructor')
    assert ours.pop('optim_wrapper.optimizer.fused') is True
    assert ours.pop('optimizer.fused', True) is True  # the config's variable
    # deliberate: readable overlays (m2f_plugin/visualization)
    assert ours.pop('visualizer.alpha') == 0.5
    # deliberate: the training guards (configs/_base_/m2f_runtime.py)
    assert ours.pop('custom_hooks') == guard_hooks()
    diff = config_diff(ours, ref, skip)
    assert not diff, diff
    # the pieces the brief names are really in there (not silently absent)
    for k in ('optim_wrapper.optimizer.lr', 'param_scheduler',
              'train_pipeline', 'test_pipeline', 'model.backbone.type',
              'model.data_preprocessor.size', 'train_cfg.max_iters',
              'optim_wrapper.clip_grad.max_norm'):
        assert k in ours, k
    # the evaluators only add metrics
    for k in ('val_evaluator', 'test_evaluator'):
        assert ours[f'{k}.iou_metrics'] == METRICS
        assert ref[f'{k}.iou_metrics'] == ['mIoU']


@pytest.mark.parametrize('path', TWINS, ids=osp.basename)
def test_head_hyper_parameters_as_mmseg_builtin(path):
    """Our head's settings, translated key by key from mmseg's
    ``Mask2FormerHead`` config of the same name."""
    ours = Config.fromfile(path).model.decode_head
    ref = Config.fromfile(osp.join(MMSEG_M2F, osp.basename(path))
                          ).model.decode_head
    enc = ref.pixel_decoder.encoder
    attn = enc.layer_cfg.self_attn_cfg
    dec = ref.transformer_decoder
    k = ref.num_classes
    assert ref.loss_cls.class_weight == [1.0] * k + [0.1]
    assert_pairs = [
        (ours.in_channels, ref.in_channels),
        (ours.strides, ref.strides),
        (ours.feat_channels, ref.feat_channels),
        (ours.out_channels, ref.out_channels),
        (ours.num_classes, k),
        (ours.num_queries, ref.num_queries),
        (ours.align_corners, ref.align_corners),
        (ours.pixel_decoder.num_levels, ref.num_transformer_feat_level),
        (ours.pixel_decoder.num_levels, attn.num_levels),
        (ours.pixel_decoder.num_layers, enc.num_layers),
        (ours.pixel_decoder.num_heads, attn.num_heads),
        (ours.pixel_decoder.num_points, attn.num_points),
        (ours.pixel_decoder.ffn_dims,
         enc.layer_cfg.ffn_cfg.feedforward_channels),
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
        (ours.num_points, ref.train_cfg.num_points),
        (ours.oversample_ratio, ref.train_cfg.oversample_ratio),
        (ours.importance_sample_ratio, ref.train_cfg.importance_sample_ratio),
        (ours.matcher.num_points, ref.train_cfg.num_points),
    ]
    costs = {c.type: c for c in ref.train_cfg.assigner.match_costs}
    assert_pairs += [
        (ours.matcher.cost_class, costs['mmdet.ClassificationCost'].weight),
        (ours.matcher.cost_mask, costs['mmdet.CrossEntropyLossCost'].weight),
        (ours.matcher.cost_dice, costs['mmdet.DiceCost'].weight),
    ]
    assert_pairs_equal(assert_pairs)


def test_mit_backbones_are_mmsegs_segformer_backbones():
    """MiT-B0/B5: backbone dict (pretrained URL included) equals mmseg's
    segformer config's."""
    for ours, ref in ((MIT_B0, 'segformer_mit-b0_8xb2-160k_ade20k-512x512.py'),
                      (MIT_B5, 'segformer_mit-b5_8xb2-160k_ade20k-512x512.py')):
        a = _on_family_host(strip_scope(
            Config.fromfile(osp.join(CONFIGS, ours)).to_dict()))
        b = Config.fromfile(mmseg_config_path(f'segformer/{ref}')).to_dict()
        assert a['model']['backbone'] == b['model']['backbone']
        assert a['model']['backbone']['init_cfg']['checkpoint'].startswith(
            HOSTS[installed_family()])
        assert a['model']['decode_head']['in_channels'] == \
            b['model']['decode_head']['in_channels']


def test_vit_backbone_follows_mmseg_segmenter_and_mln():
    """ViT-B/16: segmenter's backbone settings, checkpoint URL and input
    normalisation; the MultiLevelNeck of mmseg's vit-b16 mln configs."""
    ours = _on_family_host(Config.fromfile(osp.join(CONFIGS, VIT_B)).to_dict())
    seg = Config.fromfile(mmseg_config_path(
        'segmenter/segmenter_vit-b_mask_8xb1-160k_ade20k-512x512.py')).to_dict()
    mln = Config.fromfile(mmseg_config_path(
        'vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py')).to_dict()
    bb = ours['model']['backbone']
    for k, v in seg['model']['backbone'].items():  # incl. LN eps 1e-6
        assert bb[k] == v, k
    assert bb['init_cfg'] == dict(type='Pretrained',
                                  checkpoint=seg['model']['pretrained'])
    assert bb['out_indices'] == mln['model']['backbone']['out_indices']
    assert ours['model']['neck'] == mln['model']['neck']
    for k in ('mean', 'std'):
        assert ours['model']['data_preprocessor'][k] == \
            seg['model']['data_preprocessor'][k]


def test_vit_has_no_layer_decay_support_in_mmseg():
    """Why the ViT config uses a backbone lr_mult: mmseg's layer-decay
    constructor rejects ``VisionTransformer``."""
    from mmseg.engine.optimizers import LearningRateDecayOptimizerConstructor
    from mmseg.models.backbones import VisionTransformer

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = VisionTransformer(img_size=(32, 32), embed_dims=16,
                                              num_layers=2, num_heads=2)

    ctor = LearningRateDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4)),
        dict(num_layers=2, decay_rate=0.9, decay_type='layer_wise'))
    with pytest.raises(NotImplementedError):
        ctor(Wrapper())


@pytest.mark.parametrize('rel', [R50_ADE, SWIN_T_ADE, MIT_B0, VIT_B])
def test_one_training_step(rel):
    """Full-size model, 64x64 batch of 2, few points: the backbone's maps
    have strides 4/8/16/32, all 30 losses are finite and positive-summed,
    and every trainable parameter gets a finite gradient (the backbone's
    non-zero). The optimizer itself is checked without a step in
    ``test_config_loads_builds_and_is_wired`` (an AdamW step over ~50M
    parameters costs ~10 s on 2 shared cores)."""
    cfg = Config.fromfile(osp.join(CONFIGS, rel))
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(cfg, num_points=256))
    model.train()
    num_classes = cfg.model.decode_head.num_classes
    imgs = torch.randn(2, 3, 64, 64)
    samples = seg_data_samples(make_label_maps(2, 64, 64, num_classes))

    feats = model.extract_feat(imgs)
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4),
                                                    (2, 2)]
    losses = model.loss(imgs, samples)
    # 'decode.' prefix from EncoderDecoder, 10 prediction sets x 3 losses
    assert len(losses) == 30, sorted(losses)
    for k, v in losses.items():
        assert torch.isfinite(v).all(), k
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert total.item() > 0
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing[:10]
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, bad[:10]
    bb_grad = torch.stack([p.grad.norm() for n, p in trainable
                           if n.startswith('backbone.')]).norm()
    assert bb_grad > 0


def test_fast_configs_switch_on_their_options():
    """The low-memory and CUDA-graph variants differ from the R50 config
    only by their switches, and the switches reach the modules."""
    base = Config.fromfile(osp.join(CONFIGS, R50_ADE))
    for name, expect in (
            ('mask2former_r50-lowmem_8xb2-160k_ade20k-512x512.py',
             dict(stages=(0, 1), pixel_cp=True, dec_cp=False, graph=False,
                  segmentor='EncoderDecoder')),
            ('mask2former_r50-graph_8xb2-160k_ade20k-512x512.py',
             dict(stages=(0, 1), pixel_cp=True, dec_cp=True, graph=True,
                  segmentor='M2FEncoderDecoder'))):
        cfg = Config.fromfile(osp.join(CONFIGS, 'mask2former_fast', name))
        model = MODELS.build(_model_cfg(cfg))
        head = model.decode_head
        bb = model.backbone
        assert type(model).__name__ == expect['segmentor']
        assert getattr(bb, 'cp_stages', ()) == expect['stages']
        assert head.pixel_decoder.with_cp is expect['pixel_cp']
        assert head.transformer_decoder.with_cp is expect['dec_cp']
        assert (type(head).__name__ == 'M2FGraphedHead') is expect['graph']
        assert getattr(head, 'cuda_graph', False) is expect['graph']
        assert getattr(head, 'cuda_graph_train', False) is expect['graph']
        ours, ref = flat(cfg.to_dict()), flat(base.to_dict())
        changed = {k for k in set(ours) | set(ref)
                   if ours.get(k) != ref.get(k)}
        assert changed <= {'model.type', 'model.decode_head.type',
                           'model.backbone.type', 'model.backbone.cp_stages',
                           'model.decode_head.pixel_decoder.with_cp',
                           'model.decode_head.transformer_decoder.with_cp',
                           'model.decode_head.cuda_graph',
                           'model.decode_head.cuda_graph_train',
                           'model.decode_head.max_graphs',
                           'model.test_cfg.mode', 'model.test_cfg.crop_size',
                           'model.test_cfg.stride'}, changed
        if expect['graph']:  # fixed-size windows: one graph serves all
            assert cfg.model.test_cfg.mode == 'slide'
