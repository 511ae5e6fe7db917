"""ONNX export of a small random Mask2Former: onnxruntime equals PyTorch.

Small model: ResNet-18 at 1/8 width (8..64 channels), an M2FHead with 32
channels, 8 queries, 2 encoder + 3 decoder layers, 5 classes. The reference
is the model's own ``encode_decode`` (not the export wrapper).
"""
from __future__ import annotations

import os.path as osp

import mmcv
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from mmengine.config import Config

from m2f_plugin.tools.export_onnx import (
    M2FOnnxWrapper,
    TraceableMultiheadAttention,
    build_model,
    check_onnx,
    export_onnx,
    force_pytorch_msda,
    main,
)

NUM_CLASSES = 5
ATOL = 1e-4
MIN_AGREEMENT = 0.999


def tiny_config(msda_impl: str = 'mmcv') -> dict:
    """A config dict: SyncBN and the default 'mmcv' kernel on purpose, to
    check that the tool replaces both."""
    return dict(
        custom_imports=dict(imports=['m2f_plugin'],
                            allow_failed_imports=False),
        model=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                seg_pad_val=255, test_cfg=dict(size_divisor=32)),
            backbone=dict(type='ResNet', depth=18, base_channels=8,
                          num_stages=4, out_indices=(0, 1, 2, 3),
                          norm_cfg=dict(type='SyncBN', requires_grad=True),
                          style='pytorch'),
            decode_head=dict(
                type='M2FHead', in_channels=[8, 16, 32, 64],
                strides=[4, 8, 16, 32], feat_channels=32, out_channels=32,
                num_classes=NUM_CLASSES, num_queries=8,
                pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2,
                                   num_heads=4, ffn_dims=64, num_groups=8,
                                   msda_impl=msda_impl),
                transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                                         num_layers=3, num_heads=4,
                                         ffn_dims=64),
                matcher=dict(type='M2FHungarianMatcher', num_points=64),
                num_points=64),
            test_cfg=dict(mode='whole')))


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return build_model(tiny_config())


@pytest.fixture(scope='module')
def static_onnx(model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('onnx') / 'static.onnx')
    return export_onnx(model, out, (64, 64), dynamic=False)


@pytest.fixture(scope='module')
def dynamic_onnx(model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('onnx') / 'dynamic.onnx')
    return export_onnx(model, out, (64, 64), dynamic=True)


def _images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, h, w, generator=g) for h, w in sizes]


def _assert_close(results, sizes):
    assert [r['shape'] for r in results] == list(sizes)
    for r in results:
        # the logits are O(1), not ~0: a diff of 1e-4 is a real check
        assert r['max_abs_logit'] > 0.5
        assert r['max_abs_diff'] < ATOL, r
        assert r['agreement'] >= MIN_AGREEMENT, r
        assert r['flips_beyond_noise'] == 0, r


def test_build_model_prepares_for_export(model):
    """BN instead of SyncBN, PyTorch deformable attention, eval mode."""
    assert not any(isinstance(m, torch.nn.SyncBatchNorm)
                   for m in model.modules())
    layers = model.decode_head.pixel_decoder.encoder.layers
    assert [la.self_attn.impl for la in layers] == ['pytorch'] * 2
    assert not model.training
    # and the helper on its own
    for la in layers:
        la.self_attn.impl = 'mmcv'
    assert force_pytorch_msda(model) == 2
    assert all(la.self_attn.impl == 'pytorch' for la in layers)


def test_wrapper_equals_model_inference_in_eager_mode(model):
    """The wrapper (with its dynamic-shape hook) computes exactly what
    ``encode_decode`` does, and its labels are the argmax."""
    wrapper = M2FOnnxWrapper(model).eval()
    for img in _images([(64, 64), (96, 128)]):
        h, w = img.shape[-2:]
        meta = dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w))
        with torch.no_grad():
            logits, labels = wrapper(img)
            ref = model.encode_decode(img, [meta])
        assert logits.shape == (1, NUM_CLASSES, h, w)
        assert labels.shape == (1, h, w) and labels.dtype == torch.int64
        assert torch.equal(logits, ref)
        assert torch.equal(labels, ref.argmax(1))
    # the hook is removed after each call
    assert not model.decode_head.pixel_decoder.encoder._forward_pre_hooks


def test_static_export_matches_pytorch(model, static_onnx):
    sizes = [(64, 64)] * 3
    _assert_close(check_onnx(static_onnx['path'], model, _images(sizes)),
                  sizes)
    # static really means static
    sess = ort.InferenceSession(static_onnx['path'],
                                providers=['CPUExecutionProvider'])
    with pytest.raises(Exception, match='[Ii]nvalid|dimension'):
        sess.run(None, {'img': np.zeros((1, 3, 96, 128), np.float32)})


def test_dynamic_export_matches_pytorch_at_other_sizes(model, dynamic_onnx):
    """Traced at 64x64, run at 64x64, 96x128, 160x96 and a size that is not
    a multiple of 32 (100x140)."""
    sizes = [(64, 64), (96, 128), (160, 96), (100, 140)]
    _assert_close(check_onnx(dynamic_onnx['path'], model, _images(sizes, 1)),
                  sizes)


def test_exported_graph(static_onnx, dynamic_onnx):
    """Opset 17, GridSample (the PyTorch deformable attention) in the graph,
    named outputs with the right types, symbolic H/W only when dynamic."""
    for info, dynamic in ((static_onnx, False), (dynamic_onnx, True)):
        m = onnx.load(info['path'])
        opset = {o.domain: o.version for o in m.opset_import}['']
        assert opset == 17 == info['opset']
        ops = {n.op_type for n in m.graph.node}
        assert 'GridSample' in ops
        assert not any('MultiScaleDeformable' in op for op in ops)
        (inp, ) = m.graph.input
        dims = [d.dim_param or d.dim_value for d in
                inp.type.tensor_type.shape.dim]
        outs = {o.name: o for o in m.graph.output}
        assert set(outs) == {'logits', 'labels'}
        assert outs['labels'].type.tensor_type.elem_type == \
            onnx.TensorProto.INT64
        logit_dims = [d.dim_param or d.dim_value for d in
                      outs['logits'].type.tensor_type.shape.dim]
        if dynamic:
            assert dims == [1, 3, 'height', 'width']
            assert logit_dims == [1, NUM_CLASSES, 'height', 'width']
        else:
            assert dims == [1, 3, 64, 64]
            assert logit_dims == [1, NUM_CLASSES, 64, 64]


def test_logits_only_export_and_opset_check(model, tmp_path):
    out = str(tmp_path / 'logits.onnx')
    with pytest.raises(ValueError, match='GridSample'):
        export_onnx(model, out, (64, 64), opset=15)
    info = export_onnx(model, out, (64, 64), with_labels=False, opset=16)
    assert info['outputs'] == ['logits']
    assert [o.name for o in onnx.load(out).graph.output] == ['logits']
    _assert_close(check_onnx(out, model, _images([(64, 64)], 2)), [(64, 64)])


def _synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """A BGR uint8 picture of a few flat rectangles plus noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
    for _ in range(4):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        y1, x1 = y0 + rng.integers(8, h // 2), x0 + rng.integers(8, w // 2)
        img[y0:y1, x0:x1] = rng.integers(0, 255, 3)
    noise = rng.integers(-10, 10, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def test_cli_exports_and_checks_images(tmp_path, capsys):
    """``python -m m2f_plugin.tools.export_onnx`` end to end on image files:
    dynamic export, images of their own sizes (zero-padded to 32)."""
    cfg_path = str(tmp_path / 'tiny.py')
    Config(tiny_config()).dump(cfg_path)
    ckpt = str(tmp_path / 'tiny.pth')
    torch.manual_seed(3)
    trained = build_model(cfg_path)
    torch.save({'state_dict': trained.state_dict()}, ckpt)
    images = []
    for i, (h, w) in enumerate([(70, 90), (64, 64)]):
        images.append(str(tmp_path / f'img{i}.png'))
        mmcv.imwrite(_synthetic_image(h, w, i), images[-1])
    out = str(tmp_path / 'cli.onnx')
    code = main([cfg_path, '--checkpoint', ckpt, '--out', out, '--shape',
                 '64', '64', '--dynamic', '--check', *images,
                 '--atol', str(ATOL)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert osp.isfile(out)
    checks = [line for line in text.splitlines() if line.startswith('[check]')]
    assert len(checks) == 3
    assert checks[2].startswith('[check] 2 images:') and '-> OK' in checks[2]
    assert '70x90 (padded to 96x96)' in checks[0]  # multiples of 32
    assert ': 64x64 max' in checks[1]
    assert '0 flips beyond noise' in checks[0]
    assert all('FAIL' not in c for c in checks)
    # --atol is enforced: exit status 1 and a FAIL line
    code = main([cfg_path, '--checkpoint', ckpt, '--out',
                 str(tmp_path / 'strict.onnx'), '--shape', '64', '64',
                 '--check', images[1], '--atol', '1e-12'])
    text = capsys.readouterr().out
    assert code == 1 and '<-- FAIL' in text and '-> FAIL' in text
    # the graph carries the checkpoint's weights, not a fresh random init
    _assert_close(check_onnx(out, trained, _images([(64, 96)], 4)), [(64, 96)])


def _with_backbone(backbone: dict, in_channels, neck: dict | None = None
                   ) -> dict:
    cfg = tiny_config()
    cfg['model']['backbone'] = backbone
    cfg['model']['decode_head']['in_channels'] = in_channels
    if neck is not None:
        cfg['model']['neck'] = neck
    return cfg


@pytest.mark.parametrize('batch_first', [False, True])
def test_traceable_attention_equals_torch(batch_first):
    """The export replacement of ``nn.MultiheadAttention`` computes the same
    outputs (self- and cross-attention, unequal lengths)."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    q = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    kv = torch.randn(2, 5, 32) if batch_first else torch.randn(5, 2, 32)
    rep = TraceableMultiheadAttention(mha)
    with torch.no_grad():
        for key in (q, kv):
            out, weights = rep(q, key, key)
            ref = mha(q, key, key)[0]
            assert weights is None
            assert (out - ref).abs().max() < 1e-5


def test_dynamic_export_with_mit_backbone(tmp_path):
    """mmseg's MixVisionTransformer (attention through torch's
    nn.MultiheadAttention, whose trace freezes the key length) exports with
    free H, W; the model is left unchanged."""
    torch.manual_seed(0)
    model = build_model(_with_backbone(
        dict(type='MixVisionTransformer', embed_dims=16, num_layers=[1] * 4,
             num_heads=[1, 2, 2, 4], sr_ratios=[8, 4, 2, 1]),
        [16, 32, 32, 64]))  # embed_dims * num_heads
    info = export_onnx(model, str(tmp_path / 'mit.onnx'), (64, 64),
                       dynamic=True)
    assert info['swapped_attention'] == 4
    assert sum(isinstance(m, torch.nn.MultiheadAttention)
               for m in model.modules()) == 4
    assert not any(isinstance(m, TraceableMultiheadAttention)
                   for m in model.modules())
    sizes = [(64, 64), (96, 128), (100, 140)]
    _assert_close(check_onnx(info['path'], model, _images(sizes, 5)), sizes)


def test_dynamic_export_with_vit_backbone_and_neck(tmp_path):
    """mmseg's VisionTransformer + MultiLevelNeck (scales 4/2/1/0.5 ->
    strides 4..32): traced at a size other than ``img_size`` it runs at any
    multiple of 16; traced at ``img_size`` it would not, and is refused."""
    torch.manual_seed(0)
    model = build_model(_with_backbone(
        dict(type='VisionTransformer', img_size=(64, 64), patch_size=16,
             embed_dims=32, num_layers=4, num_heads=2, out_indices=(0, 1, 2, 3),
             final_norm=True, with_cls_token=True,
             interpolate_mode='bicubic'),
        [32] * 4,
        dict(type='MultiLevelNeck', in_channels=[32] * 4, out_channels=32,
             scales=[4, 2, 1, 0.5])))
    with pytest.raises(ValueError, match='position embedding'):
        export_onnx(model, str(tmp_path / 'bad.onnx'), (64, 64), dynamic=True)
    info = export_onnx(model, str(tmp_path / 'vit.onnx'), (96, 96),
                       dynamic=True)
    assert info['swapped_attention'] == 4
    sizes = [(64, 64), (96, 96), (128, 96)]
    _assert_close(check_onnx(info['path'], model, _images(sizes, 6)), sizes)
