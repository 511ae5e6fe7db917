"""Backbones whose trace would freeze a size: mmseg's MiT (torch's
nn.MultiheadAttention) and ViT (a position-embedding resize skipped at its
own grid) export with free H and W."""
from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from m2f_plugin.export.check import compare, torch_predict
from m2f_plugin.export.exporter import export_model, load_model
from m2f_plugin.export.traceable_attention import TraceableMultiheadAttention
from tests.helpers.export_models import tiny_config


@pytest.mark.parametrize('batch_first', [False, True])
def test_traceable_attention_equals_torch(batch_first):
    """The stand-in computes what nn.MultiheadAttention does (self- and
    cross-attention, unequal lengths)."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    q = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    kv = torch.randn(2, 5, 32) if batch_first else torch.randn(5, 2, 32)
    rep = TraceableMultiheadAttention(mha)
    with torch.no_grad():
        for key in (q, kv):
            out, weights = rep(q, key, key)
            assert weights is None
            torch.testing.assert_close(out, mha(q, key, key)[0], rtol=0,
                                       atol=1e-5)


def _with_backbone(backbone: dict, in_channels, neck=None, resize=None):
    cfg = tiny_config('semantic', resize=resize)
    cfg.model.backbone = backbone
    cfg.model.decode_head.in_channels = in_channels
    if neck is not None:
        cfg.model.neck = neck
    return cfg


def _agree(loaded, path, sizes):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    rng = np.random.RandomState(0)
    for h, w in sizes:
        image = cv2.GaussianBlur(rng.randint(0, 256, (h, w, 3)).astype(
            np.uint8), (9, 9), 3)
        ours = {'labels': session.run(None, {'image': image})[0]}
        result = compare('semantic', ours, torch_predict(loaded, image),
                         loaded.model.decode_head.num_classes)
        assert result['ok'], (h, w, result)


def test_mit_backbone_exports_dynamic_and_is_put_back(tmp_path):
    torch.manual_seed(0)
    loaded = load_model(_with_backbone(
        dict(type='MixVisionTransformer', embed_dims=16, num_layers=[1] * 4,
             num_heads=[1, 2, 2, 4], sr_ratios=[8, 4, 2, 1]),
        [16, 32, 32, 64]))
    info = export_model(loaded, str(tmp_path / 'mit.onnx'))
    assert info['swapped_attention'] == 4
    assert sum(isinstance(m, torch.nn.MultiheadAttention)
               for m in loaded.model.modules()) == 4
    assert not any(isinstance(m, TraceableMultiheadAttention)
                   for m in loaded.model.modules())
    _agree(loaded, info['path'], [(64, 64), (96, 128), (100, 140)])


def test_vit_trace_size_is_moved_off_its_own_grid(tmp_path):
    """ViT + MultiLevelNeck, images resized to 64x64 (the ViT's own grid):
    a trace there would drop the position-embedding resize; the exporter
    traces elsewhere and the file runs at other sizes."""
    torch.manual_seed(0)
    loaded = load_model(_with_backbone(
        dict(type='VisionTransformer', img_size=(64, 64), patch_size=16,
             embed_dims=32, num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3),
             final_norm=True, with_cls_token=True,
             interpolate_mode='bicubic'),
        [32] * 4,
        dict(type='MultiLevelNeck', in_channels=[32] * 4, out_channels=32,
             scales=[4, 2, 1, 0.5])))
    info = export_model(loaded, str(tmp_path / 'vit.onnx'), trace_hw=(64, 64))
    _agree(loaded, info['path'], [(64, 64), (96, 96), (128, 96)])
