"""``python -m m2f_plugin.tools.convert``: --from hf and --from mmseg."""
from __future__ import annotations

import copy
import json
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS

from m2f_plugin.converters import convert_mmseg_state_dict
from m2f_plugin.tools.convert import main
from tests.converters import rel_err, tiny_hf_model
from tests.helpers import (
    make_label_maps,
    mmseg_config_path,
    prediction_sets,
    seg_data_samples,
)

pytest.importorskip('transformers')


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    """A tiny random Swin Mask2Former written by save_pretrained."""
    path = tmp_path_factory.mktemp('hf_swin')
    hf = tiny_hf_model('swin', seed=0)
    hf.save_pretrained(path)
    return path, hf


def _build(cfg_path: str) -> torch.nn.Module:
    cfg = Config.fromfile(cfg_path)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg.model).eval()


def test_hf_dir_to_checkpoint_and_config(hf_dir, tmp_path, capsys):
    src, hf = hf_dir
    dst = tmp_path / 'out' / 'm2f_swin.pth'
    assert main([str(src), str(dst), '--from', 'hf']) == 0
    out = capsys.readouterr().out
    assert re.search(r'mapped \d+ HF keys', out)
    assert 'ignored criterion.empty_weight' in out
    assert 'UNEXPECTED' not in out and 'MISSING' not in out
    cfg_path = tmp_path / 'out' / 'm2f_swin.py'
    assert f'mim test m2f_plugin {cfg_path}' in out
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert ckpt['meta']['converted_from'] == 'hf'
    assert ckpt['meta']['dataset_meta']['classes'] == [
        f'class_{i}' for i in range(5)]
    # the derived config builds our model, which loads the checkpoint
    # strictly and predicts what HF predicts
    model = _build(str(cfg_path))
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ref = hf(pixel_values=x)
        cls, masks = prediction_sets(model.decode_head(model.extract_feat(x)))
    assert rel_err(cls[-1], ref.class_queries_logits) < 1e-4
    assert rel_err(masks[-1], ref.masks_queries_logits) < 1e-4


def test_hf_weights_file_with_config_and_options(hf_dir, tmp_path, capsys):
    src, hf = hf_dir
    weights = tmp_path / 'weights.bin'
    torch.save(hf.state_dict(), weights)  # transformers 5 in-memory names
    cfg_out = tmp_path / 'cfg' / 'derived.py'
    rc = main([str(weights), str(tmp_path / 'ckpt.pth'), '--from', 'hf',
               '--hf-config', str(src / 'config.json'), '--config-out',
               str(cfg_out), '--base', '--msda-impl', 'pytorch', '-v'])
    assert rc == 0
    out = capsys.readouterr().out
    assert ('model.pixel_level_module.encoder.swin.encoder.layers.0.blocks.0.'
            'attention.q_proj.weight -> backbone.stages.0.blocks.0.attn.'
            'w_msa.qkv.weight') in out
    text = cfg_out.read_text()
    assert '_base_' not in text and "msda_impl='pytorch'" in text


def test_hf_shape_mismatch_exits_nonzero(hf_dir, tmp_path, capsys):
    src, hf = hf_dir
    hf.save_pretrained(tmp_path / 'm')
    cfg = json.loads((tmp_path / 'm' / 'config.json').read_text())
    cfg['num_queries'] = 9
    (tmp_path / 'm' / 'config.json').write_text(json.dumps(cfg))
    dst = tmp_path / 'x.pth'
    assert main([str(tmp_path / 'm'), str(dst), '--from', 'hf']) == 1
    cap = capsys.readouterr()
    assert 'SHAPE MISMATCHES' in cap.out and 'num_queries' in cap.out
    assert 'nothing written' in cap.err
    assert not dst.exists() and not (tmp_path / 'x.py').exists()


def test_hf_refusals_exit_2(hf_dir, tmp_path, capsys):
    src, hf = hf_dir
    # unsupported option: named in the message
    bad = tmp_path / 'prenorm'
    hf.save_pretrained(bad)
    cfg = json.loads((bad / 'config.json').read_text())
    cfg['pre_norm'] = True
    (bad / 'config.json').write_text(json.dumps(cfg))
    assert main([str(bad), str(tmp_path / 'a.pth'), '--from', 'hf']) == 2
    assert "'pre_norm'" in capsys.readouterr().err
    # not a Mask2Former state dict
    weights = tmp_path / 'other.bin'
    torch.save({'encoder.weight': torch.zeros(2)}, weights)
    assert main([str(weights), str(tmp_path / 'b.pth'), '--from', 'hf',
                 '--hf-config', str(src / 'config.json')]) == 2
    assert 'not a transformers Mask2Former' in capsys.readouterr().err
    # no config.json
    assert main([str(weights), str(tmp_path / 'c.pth'), '--from', 'hf']) == 2
    assert 'config.json' in capsys.readouterr().err


def test_derived_config_runs_mmseg_test_loop(tmp_path, capsys):
    """150 classes -> ADE20K base: the derived config is a complete test
    config (what ``mim test`` runs), here on a 2-image fake ADE20K."""
    import cv2
    from mmengine.runner import Runner

    hf = tiny_hf_model('swin', seed=1, id2label={
        str(i): f'c{i}' for i in range(150)})
    hf.save_pretrained(tmp_path / 'hf')
    dst = tmp_path / 'ade.pth'
    assert main([str(tmp_path / 'hf'), str(dst), '--from', 'hf']) == 0
    root = tmp_path / 'ade'
    rng = np.random.default_rng(0)
    for i in range(2):
        img_dir = root / 'images' / 'validation'
        ann_dir = root / 'annotations' / 'validation'
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_dir / f'{i}.jpg'),
                    rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        labels = make_label_maps(1, 48, 64, 150, seed=i)[0].numpy() + 1
        cv2.imwrite(str(ann_dir / f'{i}.png'),
                    np.where(labels > 150, 0, labels).astype(np.uint8))
    cfg = Config.fromfile(str(tmp_path / 'ade.py'))
    assert "'ADE20KDataset'" in repr(cfg.test_dataloader.dataset.type)
    cfg.test_dataloader.dataset.data_root = str(root)
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.test_dataloader.dataset.pipeline[1].scale = (128, 64)  # small
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(dst)
    cfg.default_hooks.logger.interval = 1
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert 'mIoU' in metrics and np.isfinite(metrics['mIoU'])


# ---------------------------------------------------------------- mmseg

_SHRINK = dict(embed_dims=32, feat_channels=32, out_channels=32,
               feedforward_channels=64, num_feats=16, num_queries=5,
               num_classes=3)


def _shrink(cfg):
    """mmseg's built-in Mask2Former head config, with tiny sizes."""
    if isinstance(cfg, dict):
        out = {}
        for k, v in cfg.items():
            if k in _SHRINK:
                out[k] = _SHRINK[k]
            elif k == 'num_layers':
                out[k] = 1 if v == 6 else 2
            else:
                out[k] = _shrink(v)
        return out
    if isinstance(cfg, list):
        return [_shrink(v) for v in cfg]
    return cfg


@pytest.fixture(scope='module')
def builtin_head():
    import mmdet.models  # noqa: F401  (the built-in head wraps mmdet's)
    cfg = Config.fromfile(mmseg_config_path(
        'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'))
    head = ConfigDict(_shrink(copy.deepcopy(cfg.model.decode_head.to_dict())))
    head['in_channels'] = [16, 32, 64, 128]
    head['loss_cls']['class_weight'] = [1.0] * 3 + [0.1]
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(head)
    model.init_weights()
    return model.eval()


def test_mmseg_round_trip(builtin_head, tmp_path, capsys):
    state = {f'decode_head.{k}': v for k, v in builtin_head.state_dict().items()}
    state['backbone.conv1.weight'] = torch.randn(4, 3, 3, 3)  # kept as is
    src, dst = tmp_path / 'builtin.pth', tmp_path / 'ours.pth'
    torch.save({'state_dict': state, 'meta': {}}, src)
    assert main([str(src), str(dst), '--from', 'mmseg']) == 0
    assert 'kept 1 other keys' in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)['state_dict']
    expected, _ = convert_mmseg_state_dict(state)
    assert list(converted) == list(expected)
    assert all(torch.equal(converted[k], expected[k]) for k in expected)
    assert torch.equal(converted['backbone.conv1.weight'],
                       state['backbone.conv1.weight'])
    # ... and our head loads it strictly and predicts what the built-in does
    ours_cfg = dict(
        type='M2FHead', in_channels=[16, 32, 64, 128], feat_channels=32,
        out_channels=32, num_classes=3, num_queries=5,
        pixel_decoder=dict(type='M2FPixelDecoder', num_layers=1, ffn_dims=64),
        transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                                 num_layers=2, ffn_dims=64))
    with DefaultScope.overwrite_default_scope('mmseg'):
        ours = MODELS.build(ours_cfg).eval()
    head_sd = {k[len('decode_head.'):]: v for k, v in converted.items()
               if k.startswith('decode_head.')}
    ours.load_state_dict(head_sd, strict=True)
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, c, 32 // 2**i, 48 // 2**i, generator=g)
             for i, c in enumerate([16, 32, 64, 128])]
    samples = seg_data_samples(make_label_maps(1, 128, 192, 3))
    with torch.no_grad():
        cls_ref, mask_ref = builtin_head(feats, samples)
        cls, masks = prediction_sets(ours(feats))
    assert len(cls) == len(cls_ref) == 3
    for a, b in zip(cls + masks, cls_ref + mask_ref):
        assert rel_err(a, b) < 1e-5


def test_mmseg_refuses_non_mask2former(tmp_path, capsys):
    src = tmp_path / 'fcn.pth'
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(1),
                               'decode_head.conv_seg.weight': torch.zeros(1)}},
               src)
    dst = tmp_path / 'x.pth'
    assert main([str(src), str(dst), '--from', 'mmseg']) == 2
    err = capsys.readouterr().err
    assert 'not an mmseg/mmdet Mask2Former state dict' in err
    assert not osp.exists(dst)


def test_mmdet_round_trip(builtin_head, tmp_path, capsys):
    """An mmdet detector checkpoint (``panoptic_head.*``) converts with
    ``--from mmdet``, and the head keys equal the mmseg conversion's."""
    head = builtin_head.state_dict()
    state = {f'panoptic_head.{k}': v for k, v in head.items()}
    state['backbone.conv1.weight'] = torch.randn(4, 3, 3, 3)
    src, dst = tmp_path / 'builtin_det.pth', tmp_path / 'ours_det.pth'
    torch.save({'state_dict': state, 'meta': {}}, src)
    assert main([str(src), str(dst), '--from', 'mmdet']) == 0
    assert 'kept 1 other keys' in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)['state_dict']
    seg, _ = convert_mmseg_state_dict(
        {f'decode_head.{k}': v for k, v in head.items()})
    det_head = {k[len('panoptic_head.'):]: v for k, v in converted.items()
                if k.startswith('panoptic_head.')}
    seg_head = {k[len('decode_head.'):]: v for k, v in seg.items()}
    assert det_head.keys() == seg_head.keys()
    assert all(torch.equal(det_head[k], seg_head[k]) for k in seg_head)
    # an mmseg checkpoint is not an mmdet one: exit 2, nothing written
    seg_src = tmp_path / 'builtin_seg.pth'
    torch.save({'state_dict': {f'decode_head.{k}': v for k, v in head.items()}},
               seg_src)
    assert main([str(seg_src), str(tmp_path / 'x.pth'), '--from', 'mmdet']) == 2
    assert 'panoptic_head.pixel_decoder.input_convs' in capsys.readouterr().err
