"""``semantic_on`` through the detector: mmdet's Mask2Former with
``M2FDetHead`` and ``M2FFusionHead`` returns ``pred_sem_seg``, the semantic
Mask2Former's map of the head's own class and mask logits:
``argmax_k sum_q softmax(cls)[q, k] * sigmoid(mask_q)`` with the mask logits
taken to the padded input, cropped to the image and resized to the original
size (the resizes of mmdet's post-processing)."""
from __future__ import annotations

import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope

from tests.helpers import CONFIGS

pytest.importorskip('mmdet')
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402

PANOPTIC_DEMO = osp.join(
    CONFIGS, 'demo',
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')


@pytest.fixture(scope='module')
def detector():
    """The panoptic demo detector (5 things, 1 stuff, 20 queries), random
    init."""
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(PANOPTIC_DEMO).model
    cfg.init_cfg = None
    cfg.test_cfg.update(panoptic_on=True, instance_on=False,
                        semantic_on=True)
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        det = MODELS.build(cfg)
        det.init_weights()
    return det.eval()


def _with_layout(head, monkeypatch):
    """Add a layout to the head's final prediction set: queries 0-11 each
    own one cell of a 3 x 4 grid (mask logits +-4) and say class
    ``q % 6`` (+6), so that the semantic map has several classes (a random
    head alone gives about one class everywhere)."""
    real = head.predict_low_res

    def predict_low_res(x):
        cls, masks = real(x)
        _, q, h, w = masks.shape
        cell = ((torch.arange(h)[:, None] * 3 // h) * 4 +
                torch.arange(w)[None, :] * 4 // w)  # (h, w) in 0..11
        owner = cell[None] == torch.arange(q)[:, None, None]  # (Q, h, w)
        layout = torch.zeros_like(cls)
        layout[:, :12, :6] = 6.0 * torch.eye(6).repeat(2, 1)
        return cls + layout, masks + torch.where(owner, 4.0, -4.0)

    monkeypatch.setattr(head, 'predict_low_res', predict_low_res)


def _samples(batch_input, img, ori):
    scale = (ori[1] / img[1], ori[0] / img[0])
    out = []
    for _ in range(2):
        s = DetDataSample()
        s.set_metainfo(dict(batch_input_shape=batch_input, pad_shape=img,
                            img_shape=img, ori_shape=ori, scale_factor=scale))
        out.append(s)
    return out


def _predict(detector, monkeypatch, batch_input, img, ori):
    """The detector's results and the (class, mask) logits its head gave
    the fusion head."""
    seen = {}
    _with_layout(detector.panoptic_head, monkeypatch)
    real = detector.panoptic_head.predict

    def spy(*args, **kwargs):
        seen['cls'], seen['masks'] = real(*args, **kwargs)
        return seen['cls'], seen['masks']

    monkeypatch.setattr(detector.panoptic_head, 'predict', spy)
    images = torch.randn(2, 3, *batch_input,
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        results = detector.predict(images, _samples(batch_input, img, ori),
                                   rescale=True)
    return results, seen['cls'], seen['masks']


def _reference(cls, masks, batch_input, img, ori):
    """(B, H, W) semantic labels from the head's logits, upsampled as
    mmdet's fusion head does: to the padded input, cropped, to ori_shape."""
    probs = cls.softmax(-1)[..., :-1]  # (B, Q, K)
    full = F.interpolate(masks, size=batch_input, mode='bilinear',
                         align_corners=False)[..., :img[0], :img[1]]
    if tuple(ori) != tuple(img):
        full = F.interpolate(full, size=ori, mode='bilinear',
                             align_corners=False)
    return torch.einsum('bqk,bqhw->bkhw', probs, full.sigmoid()).argmax(1)


def test_pred_sem_seg_is_the_semantic_map_of_the_head_logits(
        detector, monkeypatch):
    size = (64, 96)
    results, cls, masks = _predict(detector, monkeypatch, size, size, size)
    assert masks.shape[-2:] == (16, 24)  # stride-4 masks into the fusion head
    ref = _reference(cls, masks, size, size, size)
    for i, result in enumerate(results):
        sem = result.pred_sem_seg.sem_seg
        assert sem.shape == (1, *size) and sem.dtype == torch.long
        assert torch.equal(sem[0], ref[i])
        assert len(sem.unique()) == 6  # every class somewhere
        assert 'pred_panoptic_seg' in result  # panoptic still there


def test_pred_sem_seg_at_the_original_size_without_the_padding(
        detector, monkeypatch):
    """A padded batch and a resized image: the map covers the image only,
    at ``ori_shape``. The fusion head resizes the valid part once where
    mmdet resizes twice, which can flip near-ties (measured here: no pixel
    differs; a map that kept the padding would be shifted by 8 of 56 rows)."""
    batch_input, img, ori = (64, 96), (56, 84), (112, 168)
    results, cls, masks = _predict(detector, monkeypatch, batch_input, img,
                                   ori)
    ref = _reference(cls, masks, batch_input, img, ori)
    for i, result in enumerate(results):
        sem = result.pred_sem_seg.sem_seg[0]
        assert sem.shape == ori
        assert (sem != ref[i]).float().mean() < 0.005
        assert len(sem.unique()) == 6
