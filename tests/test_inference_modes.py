"""Whole and slide inference at any size, and test-time augmentation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
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


def _position_dependent(model):
    """Give the segmentor a fixed network whose logits depend on the pixels
    and on their absolute position (in pixels): a flipped or resized view
    then gives other logits than the plain view, even after the flip is
    undone and the logits resized back. Returns the network."""
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(6, 3, generator=g) * 0.3
    freq = torch.randn(2, 6, 1, 1, generator=g)
    phase = torch.rand(6, 1, 1, generator=g) * 6.3

    def network(inputs: torch.Tensor) -> torch.Tensor:
        _, _, h, w = inputs.shape
        ys = torch.arange(h, dtype=torch.float32)[:, None] / 8
        xs = torch.arange(w, dtype=torch.float32)[None, :] / 8
        position = 2 * torch.sin(freq[0] * ys + freq[1] * xs + phase)
        return torch.einsum('kc,bchw->bkhw', mix, inputs) + position[None]

    # EncoderDecoder's whole inference: encode_decode gives the logits at
    # the input size; mmseg then undoes the flip and resizes
    model.encode_decode = lambda inputs, metas: network(inputs)
    return network


def _dataset(tmp_path, pipeline):
    return DATASETS.build(dict(
        type='M2FSyntheticShapesDataset', data_root=str(tmp_path / 'd'),
        num_train=1, num_val=2, size=64,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=[dict(type='LoadImageFromFile', backend_args=None),
                  *pipeline]))


def _tta_views(tmp_path, *transforms):
    """Images 0 and 1 through ``TestTimeAug`` (one list per step)."""
    ds = _dataset(tmp_path, [dict(type='TestTimeAug', transforms=[
        *transforms, [dict(type='LoadAnnotations')],
        [dict(type='PackSegInputs')]])])
    return pseudo_collate([ds[0], ds[1]])


def _views(tmp_path, transforms):
    """The synthetic val images 0 and 1 through one pipeline, collated."""
    ds = _dataset(tmp_path, [*transforms, dict(type='LoadAnnotations'),
                             dict(type='PackSegInputs')])
    return pseudo_collate([ds[0], ds[1]])


def _independent_view_probs(model, network, batch, view: int, image: int):
    """One view's class probabilities at the original size, computed
    directly: the network on the normalised view (padded to /32 by the data
    preprocessor), the padding cropped, the flip undone, bilinear resize to
    ``ori_shape``, softmax over classes. (6, H, W)."""
    sample = batch['data_samples'][view][image]
    data = model.data_preprocessor(dict(inputs=[batch['inputs'][view][image]],
                                        data_samples=[sample]), False)
    h, w = sample.metainfo['img_shape']
    logits = network(data['inputs'])[..., :h, :w]
    if sample.metainfo.get('flip'):
        assert sample.metainfo['flip_direction'] == 'horizontal'
        logits = logits.flip(-1)
    logits = F.interpolate(logits, size=sample.metainfo['ori_shape'],
                           mode='bilinear', align_corners=False)
    return logits[0].softmax(0)


# mmseg's SegTTAModel packs (H, W) maps into PixelData, which warns
@pytest.mark.filterwarnings('ignore:The shape of value will convert')
@torch.no_grad()
def test_tta_multiscale_flip(tmp_path):
    """3 scales x 2 flips: the merged map is the argmax of the mean of the six
    views' class probabilities, each view flipped back and resized to the
    original size (mmseg's SegTTAModel), computed here independently. Each
    view matters: leaving any one out changes the map."""
    from mmseg.utils import register_all_modules
    register_all_modules()
    model = build_tiny_segmentor().eval()
    network = _position_dependent(model)
    tta = MODELS.build(dict(type='SegTTAModel', module=model))
    batch = _tta_views(
        tmp_path,
        [dict(type='Resize', scale_factor=r, keep_ratio=True)
         for r in (0.75, 1.0, 1.25)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')])
    assert len(batch['inputs']) == 6  # 3 scales x 2 flips
    sizes = sorted({tuple(v[0].shape[-2:]) for v in batch['inputs']})
    assert sizes == [(48, 48), (64, 64), (80, 80)]
    results = tta.test_step(batch)
    assert len(results) == 2
    for i, result in enumerate(results):
        probs = torch.stack([_independent_view_probs(model, network, batch,
                                                     v, i) for v in range(6)])
        merged = result.pred_sem_seg.data
        assert merged.shape == (1, 64, 64)
        assert torch.equal(merged[0], probs.mean(0).argmax(0))
        assert len(merged.unique()) >= 3  # a map, not one class
        for v in range(6):
            others = torch.cat([probs[:v], probs[v + 1:]]).mean(0).argmax(0)
            changed = (others != merged[0]).sum().item()
            assert changed > 0, f'view {v} does not change the merged map'


# mmseg's SegTTAModel packs (H, W) maps into PixelData, which warns
@pytest.mark.filterwarnings('ignore:The shape of value will convert')
@torch.no_grad()
def test_tta_merges_the_views_as_mmseg_defines(tmp_path):
    """One scale without flip equals ``predict``; with a flip, the result is
    the argmax of the mean class probabilities of the plain view and the
    flipped view (flipped back), each computed by the plain model; it is
    neither view's own map."""
    from mmseg.utils import register_all_modules
    register_all_modules()
    model = build_tiny_segmentor().eval()
    _position_dependent(model)
    tta = MODELS.build(dict(type='SegTTAModel', module=model))
    plain = model.test_step(_views(tmp_path, []))
    flipped = model.test_step(_views(tmp_path, [dict(
        type='RandomFlip', prob=1., direction='horizontal')]))

    def flips(*probs):
        return [dict(type='RandomFlip', prob=p, direction='horizontal')
                for p in probs]

    single = tta.test_step(_tta_views(tmp_path, flips(0.)))
    both = tta.test_step(_tta_views(tmp_path, flips(0., 1.)))
    for i in range(2):
        plain_map = plain[i].pred_sem_seg.data[0]
        flipped_map = flipped[i].pred_sem_seg.data[0]
        torch.testing.assert_close(single[i].pred_sem_seg.data[0], plain_map)
        mean = (plain[i].seg_logits.data.softmax(0) +
                flipped[i].seg_logits.data.softmax(0)) / 2
        merged = both[i].pred_sem_seg.data[0]
        assert torch.equal(merged, mean.argmax(0))
        # a merge that kept one view only would fail above
        assert (merged != plain_map).any() and (merged != flipped_map).any()
