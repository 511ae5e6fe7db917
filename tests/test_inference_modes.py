"""Whole and slide inference at any size, and test-time augmentation."""
from __future__ import annotations

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.dataset import pseudo_collate
from mmseg.registry import DATASETS, MODELS

from tests.helpers import build_tiny_segmentor


def _metas(h: int, w: int):
    return [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))]


@torch.no_grad()
def test_slide_equals_whole_inference_of_each_window():
    model = build_tiny_segmentor().eval()
    torch.manual_seed(0)
    img = torch.randn(1, 3, 96, 160)
    model.test_cfg = ConfigDict(mode='slide', crop_size=(96, 96), stride=(64, 64))
    slide = model.inference(img, _metas(96, 160))
    model.test_cfg = ConfigDict(mode='whole')
    left = model.inference(img[..., :96], _metas(96, 96))
    right = model.inference(img[..., 64:], _metas(96, 96))
    assert slide.shape == (1, 6, 96, 160)
    # columns seen by one window equal that window's whole inference
    assert torch.allclose(slide[..., :64], left[..., :64], atol=1e-5)
    assert torch.allclose(slide[..., 96:], right[..., 32:], atol=1e-5)
    # the overlap is the mean of the two windows
    assert torch.allclose(slide[..., 64:96],
                          (left[..., 64:] + right[..., :32]) / 2, atol=1e-5)


@torch.no_grad()
def test_slide_with_image_larger_than_crop_and_odd_size():
    model = build_tiny_segmentor().eval()
    model.test_cfg = ConfigDict(mode='slide', crop_size=(64, 64), stride=(48, 48))
    img = torch.randn(2, 3, 150, 171)
    out = model.inference(img, _metas(150, 171) * 2)
    assert out.shape == (2, 6, 150, 171)
    assert torch.isfinite(out).all()
    # the top-left corner is seen by the first window only
    model.test_cfg = ConfigDict(mode='whole')
    first = model.inference(img[..., :64, :64], _metas(64, 64) * 2)
    assert torch.allclose(out[..., :48, :48], first[..., :48, :48], atol=1e-5)
    # the bottom-right corner by the last window only (mmseg clamps it to
    # end at the border: rows 86.., cols 107..; the one before ends at col 160)
    last = model.inference(img[..., 86:, 107:], _metas(64, 64) * 2)
    assert torch.allclose(out[..., -10:, -10:], last[..., -10:, -10:],
                          atol=1e-5)


@torch.no_grad()
def test_whole_predict_odd_size_through_data_preprocessor():
    model = build_tiny_segmentor().eval()
    img = (torch.rand(3, 100, 141) * 255).to(torch.uint8)
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(img_shape=(100, 141),
                                         ori_shape=(100, 141)))
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]))
    assert data['inputs'].shape[-2:] == (128, 160)  # padded to /32
    result = model.predict(data['inputs'], data['data_samples'])[0]
    assert result.seg_logits.data.shape == (6, 100, 141)
    assert result.pred_sem_seg.data.shape == (1, 100, 141)


# mmseg's SegTTAModel packs (H, W) maps into PixelData, which warns
@pytest.mark.filterwarnings('ignore:The shape of value will convert')
@torch.no_grad()
def test_tta_multiscale_flip(tmp_path):
    from mmseg.utils import register_all_modules
    register_all_modules()
    model = build_tiny_segmentor().eval()
    tta = MODELS.build(dict(type='SegTTAModel', module=model))
    tta_pipeline = [
        dict(type='LoadImageFromFile', backend_args=None),
        dict(type='TestTimeAug', transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True)
             for r in (0.75, 1.0, 1.25)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
    ]
    ds = DATASETS.build(dict(
        type='M2FSyntheticShapesDataset', data_root=str(tmp_path / 'd'),
        num_train=1, num_val=2, size=64,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=tta_pipeline))
    batch = pseudo_collate([ds[0], ds[1]])
    assert len(batch['inputs']) == 6  # 3 scales x 2 flips
    results = tta.test_step(batch)
    assert len(results) == 2
    for r in results:
        assert r.pred_sem_seg.data.shape == (1, 64, 64)
        assert r.pred_sem_seg.data.max() < 6


def _views(tmp_path, transforms):
    """The synthetic val images 0 and 1 through one pipeline, collated."""
    ds = DATASETS.build(dict(
        type='M2FSyntheticShapesDataset', data_root=str(tmp_path / 'd'),
        num_train=1, num_val=2, size=64,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=[dict(type='LoadImageFromFile', backend_args=None),
                  *transforms, dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')]))
    return pseudo_collate([ds[0], ds[1]])


# mmseg's SegTTAModel packs (H, W) maps into PixelData, which warns
@pytest.mark.filterwarnings('ignore:The shape of value will convert')
@torch.no_grad()
def test_tta_merges_the_views_as_mmseg_defines(tmp_path):
    """One scale without flip equals ``predict``; with a flip, the result is
    the argmax of the mean class probabilities of the plain view and the
    flipped view (flipped back), each computed by the plain model."""
    from mmseg.utils import register_all_modules
    register_all_modules()
    model = build_tiny_segmentor().eval()
    tta = MODELS.build(dict(type='SegTTAModel', module=model))
    plain = model.test_step(_views(tmp_path, []))
    flipped = model.test_step(_views(tmp_path, [dict(
        type='RandomFlip', prob=1., direction='horizontal')]))

    def tta_views(flips):
        ds = DATASETS.build(dict(
            type='M2FSyntheticShapesDataset', data_root=str(tmp_path / 'd'),
            num_train=1, num_val=2, size=64,
            data_prefix=dict(img_path='img_dir/val',
                             seg_map_path='ann_dir/val'),
            pipeline=[dict(type='LoadImageFromFile', backend_args=None),
                      dict(type='TestTimeAug', transforms=[
                          [dict(type='RandomFlip', prob=p,
                                direction='horizontal') for p in flips],
                          [dict(type='LoadAnnotations')],
                          [dict(type='PackSegInputs')]])]))
        return tta.test_step(pseudo_collate([ds[0], ds[1]]))

    single = tta_views([0.])
    both = tta_views([0., 1.])
    for i in range(2):
        torch.testing.assert_close(single[i].pred_sem_seg.data,
                                   plain[i].pred_sem_seg.data)
        # the flip really changes this (untrained, not symmetric) model
        assert not torch.equal(plain[i].seg_logits.data,
                               flipped[i].seg_logits.data)
        mean = (plain[i].seg_logits.data.softmax(0) +
                flipped[i].seg_logits.data.softmax(0)) / 2
        assert torch.equal(both[i].pred_sem_seg.data[0], mean.argmax(0))
