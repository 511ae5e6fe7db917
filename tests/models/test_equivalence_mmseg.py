"""Same weights, same outputs as mmseg 1.2.2's built-in Mask2Former (R50)."""
from __future__ import annotations

import copy

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from m2f_plugin.converters import convert_mmseg_state_dict
from tests.helpers import (
    CONFIGS,
    assert_builtin_outputs_equal,
    make_label_maps,
    mmseg_config_path,
    seg_data_samples,
    use_fixed_points,
)

BUILTIN = 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
OURS = f'{CONFIGS}/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'


def _build(cfg_path: str) -> torch.nn.Module:
    cfg = Config.fromfile(cfg_path)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    model_cfg.backbone.init_cfg = None  # no download
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def pair():
    register_all_modules()
    import mmdet.models  # noqa: F401  (the built-in head wraps mmdet's)
    torch.manual_seed(0)
    builtin = _build(mmseg_config_path(BUILTIN))
    ours = _build(OURS)
    converted, report = convert_mmseg_state_dict(builtin.state_dict())
    assert not report.unmapped
    missing, unexpected = ours.load_state_dict(converted, strict=True)
    assert not missing and not unexpected
    return builtin.eval(), ours.eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.mark.parametrize('size', [(128, 128), (100, 140)])
def test_seg_logits_match_builtin(pair, size):
    builtin, ours = pair
    h, w = size
    torch.manual_seed(1)
    imgs = torch.randn(2, 3, h, w)
    metas = [dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w))] * 2
    with torch.no_grad():
        ref = builtin.encode_decode(imgs, metas)
        out = ours.encode_decode(imgs, metas)
    assert out.shape == ref.shape == (2, 150, h, w)
    assert _rel_err(out, ref) < 1e-5


def test_all_prediction_sets_match_builtin(pair):
    builtin, ours = pair
    imgs = torch.randn(2, 3, 96, 128)
    samples = seg_data_samples(make_label_maps(2, 96, 128, 150))
    with torch.no_grad():
        feats_ref = builtin.extract_feat(imgs)
        cls_ref, mask_ref = builtin.decode_head(feats_ref, samples)
        preds = ours.decode_head.prediction_sets(ours.extract_feat(imgs))
        assert preds.num_sets == len(cls_ref) == 10
        for s in range(preds.num_sets):
            assert _rel_err(preds.class_logits[s], cls_ref[s]) < 1e-5
            assert _rel_err(preds.mask_logits(s), mask_ref[s]) < 1e-5


def test_losses_match_builtin(pair, fixed_rand):
    """The built-in draws its points with ``torch.rand`` (patched by
    ``fixed_rand``), ours through its ``draw_points`` seam: both get
    ``fixed_points``."""
    builtin, ours = pair
    use_fixed_points(ours)
    builtin.train()
    ours.train()
    torch.manual_seed(2)
    imgs = torch.randn(2, 3, 128, 128)
    labels = make_label_maps(2, 128, 128, 150, seed=3)
    try:
        ref = builtin.loss(imgs, seg_data_samples(labels))
        out = ours.loss(imgs, seg_data_samples(labels))
    finally:
        builtin.eval()
        ours.eval()
    assert set(out) == set(ref)
    assert len([k for k in out if 'loss' in k]) == 30
    for key in ref:
        assert torch.isfinite(out[key]), key
        rel = abs(out[key].item() - ref[key].item()) / max(
            abs(ref[key].item()), 1e-8)
        assert rel < 1e-4, (key, out[key].item(), ref[key].item())


def test_raw_builtin_state_dict_loads_into_our_segmentor(pair):
    """The built-in's own keys (no converter run by the user) load strictly
    into ours, renamed on load, and give the built-in's logits."""
    builtin, _ = pair
    ours = _build(OURS).eval()
    missing, unexpected = ours.load_state_dict(builtin.state_dict(),
                                               strict=True)
    assert not missing and not unexpected
    imgs = torch.randn(1, 3, 96, 96)
    metas = [dict(img_shape=(96, 96), pad_shape=(96, 96),
                  ori_shape=(96, 96))]
    with torch.no_grad():
        assert _rel_err(ours.encode_decode(imgs, metas),
                        builtin.encode_decode(imgs, metas)) < 1e-5


def test_raw_builtin_state_dict_with_other_class_count(pair):
    """A 150-class built-in checkpoint into a 6-class model: everything but
    the class head is loaded, the class head keeps its initial values."""
    builtin, _ = pair
    cfg = Config.fromfile(OURS)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    model_cfg.backbone.init_cfg = None
    model_cfg.decode_head.num_classes = 6
    ours = MODELS.build(model_cfg)
    ours.init_weights()
    cls = ours.decode_head.transformer_decoder.predictor.cls_embed
    fresh = cls.weight.detach().clone()
    ours.load_state_dict(builtin.state_dict(), strict=True)
    assert torch.equal(cls.weight, fresh) and cls.weight.shape[0] == 7
    converted, _ = convert_mmseg_state_dict(builtin.state_dict())
    for key, value in ours.state_dict().items():
        if 'cls_embed' not in key:
            assert torch.equal(value, converted[key]), key


def test_tensor_mode_returns_what_the_builtin_returns(pair):
    """``model(x, mode='tensor')`` and ``cls, masks = decode_head(feats)``
    give two lists of per-set tensors, equal to the built-in head's (whose
    own tensor mode fails: its forward needs the data samples)."""
    builtin, ours = pair
    imgs = torch.randn(1, 3, 64, 96)
    samples = seg_data_samples(make_label_maps(1, 64, 96, 150))
    with torch.no_grad():
        ref = builtin.decode_head(builtin.extract_feat(imgs), samples)
        out = ours(imgs, mode='tensor')
        cls_sets, mask_sets = ours.decode_head(ours.extract_feat(imgs))
    assert_builtin_outputs_equal(out, ref)
    assert torch.equal(cls_sets[-1], out[0][-1])


def test_type_swapped_builtin_config_same_losses_with_an_unlabelled_image(
        pair, fixed_rand):
    """mmseg's own config with only the head type changed trains as the
    built-in, also on a batch holding an image without labelled pixels (the
    built-in counts it as one mask in the losses' normaliser; the
    translation sets ``min_masks_per_image=1``)."""
    builtin, _ = pair
    cfg = Config.fromfile(mmseg_config_path(BUILTIN))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    model_cfg.backbone.init_cfg = None
    model_cfg.decode_head.type = 'M2FHead'
    swapped = MODELS.build(model_cfg)
    swapped.load_state_dict(builtin.state_dict(), strict=True)
    use_fixed_points(swapped)
    torch.manual_seed(2)
    imgs = torch.randn(2, 3, 128, 128)
    labels = make_label_maps(2, 128, 128, 150, seed=3)
    labels[1] = 255  # nothing labelled
    builtin.train()
    swapped.train()
    try:
        ref = builtin.loss(imgs, seg_data_samples(labels))
        out = swapped.loss(imgs, seg_data_samples(labels))
    finally:
        builtin.eval()
    assert set(out) == set(ref)
    for key in ref:
        rel = abs(out[key].item() - ref[key].item()) / max(
            abs(ref[key].item()), 1e-8)
        assert rel < 1e-4, (key, out[key].item(), ref[key].item())
