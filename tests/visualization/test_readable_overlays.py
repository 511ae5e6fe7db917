"""Readable overlays: one kind of result per image, see-through masks,
labels inside the image; and the configs use them (so DetInferencer and
MMSegInferencer draw the same)."""
from __future__ import annotations

import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData, PixelData

from m2f_plugin.visualization import M2FDetLocalVisualizer, keep_inside
from tests.helpers import CONFIGS

CLASSES = ('disc', 'square', 'triangle', 'ring', 'cross', 'background')
PALETTE = [(220, 60, 60), (60, 200, 80), (70, 90, 230), (230, 210, 60),
           (200, 70, 210), (40, 40, 40)]
H, W = 48, 64


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _sample(panoptic_void: bool = False):
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    from mmdet.structures import DetDataSample
    sample = DetDataSample()
    pan = np.full((H, W), 5, np.int64)  # stuff 'background' everywhere
    pan[10:30, 10:30] = 0 + 1 * INSTANCE_OFFSET  # one disc
    if panoptic_void:
        pan[:] = len(CLASSES)
    sample.pred_panoptic_seg = PixelData(sem_seg=torch.from_numpy(pan)[None])
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 5:20, 40:60] = True
    sample.pred_instances = InstanceData(
        masks=masks, bboxes=torch.tensor([[40., 5., 60., 20.]]),
        scores=torch.tensor([0.9]), labels=torch.tensor([1]))
    sample.pred_sem_seg = PixelData(sem_seg=torch.full((1, H, W), 2))
    return sample


def _draw(vis, sample) -> np.ndarray:
    np.random.seed(0)  # mmdet jitters instance colours with NumPy's RNG
    vis.add_datasample('x', _image(), sample, draw_gt=False, show=False)
    return vis.get_image()


def _det_vis(cls, name: str, **kwargs):
    vis = cls.get_instance(name, **kwargs)
    vis.dataset_meta = dict(classes=CLASSES, palette=PALETTE)
    return vis


def test_keep_inside_moves_anchors_in_for_every_alignment():
    pos = np.array([[62., 46.], [1., 1.], [63., 20.], [30., 20.]])
    texts = ['abcd', 'abcd', 'abcd', 'abcd']  # 0.6 * 4 * 10 = 24 px wide
    out = keep_inside(pos, texts, 10, W, H,
                      horizontal=['left', 'center', 'center', 'right'],
                      vertical=['top', 'center', 'top', 'bottom'])
    np.testing.assert_allclose(out[0], [W - 24, H - 13])  # left/top anchor
    np.testing.assert_allclose(out[1], [12, 6.5])          # centred box
    np.testing.assert_allclose(out[2], [W - 12, 20])
    np.testing.assert_allclose(out[3], [30, 20])           # fits: unmoved
    wide = keep_inside(np.array([[5., 5.]]), ['x' * 50], 10, W, H)
    np.testing.assert_allclose(wide[0], [0, 5])  # wider than the image


def test_draw_texts_hands_moved_anchors_to_mmengine(monkeypatch):
    from mmengine.visualization import Visualizer
    seen = {}

    def record(self, texts, positions, *args, **kwargs):
        seen['positions'] = np.asarray(positions)
        return self
    monkeypatch.setattr(Visualizer, 'draw_texts', record)
    vis = _det_vis(M2FDetLocalVisualizer, 'vis_texts')
    vis.set_image(_image())
    vis.draw_texts('square', torch.tensor([W - 1., H - 1.]), font_sizes=10)
    np.testing.assert_allclose(seen['positions'], [W - 36, H - 13])


def test_panoptic_drawn_alone_and_image_shows_through():
    """With panoptic, instance and semantic results in one sample, only the
    panoptic map is drawn: the same image as mmdet's visualizer drawing the
    panoptic map alone at the same opacity."""
    from mmdet.visualization import DetLocalVisualizer
    ours = _draw(_det_vis(M2FDetLocalVisualizer, 'vis_ours'), _sample())
    alone = _sample()
    del alone.pred_instances, alone.pred_sem_seg
    ref = _draw(_det_vis(DetLocalVisualizer, 'vis_ref', alpha=0.5), alone)
    np.testing.assert_array_equal(ours, ref)
    # stuff region (bottom rows, away from the outlines and labels): half
    # image, half palette colour, so the image's texture shows
    img = _image().astype(np.float64)
    region = (slice(38, 46), slice(4, 62))
    expected = 0.5 * img[region] + 0.5 * np.array(PALETTE[5])
    assert np.abs(ours[region].astype(np.float64) - expected).mean() < 2.0


def test_void_panoptic_map_falls_back_to_the_instances(monkeypatch):
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.visualization import Visualizer

    # the instance's label sits at the border, where ours moves it in: compare
    # the masks and boxes only
    monkeypatch.setattr(Visualizer, 'draw_texts', lambda self, *a, **k: self)
    ours = _draw(_det_vis(M2FDetLocalVisualizer, 'vis_void'),
                 _sample(panoptic_void=True))
    only = _sample()
    del only.pred_panoptic_seg, only.pred_sem_seg
    ref = _draw(_det_vis(DetLocalVisualizer, 'vis_void_ref', alpha=0.5), only)
    np.testing.assert_array_equal(ours, ref)
    assert (ours[30:48, :30] == _image()[30:48, :30]).all()  # undrawn


def test_seg_visualizer_is_see_through():
    from mmseg.structures import SegDataSample
    from mmseg.visualization import SegLocalVisualizer
    cfg = Config.fromfile(osp.join(
        CONFIGS, 'demo', 'mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py'))
    kwargs = {k: v for k, v in cfg.visualizer.items()
              if k not in ('type', '_scope_', 'vis_backends')}
    kwargs['name'] = 'vis_seg'
    vis = SegLocalVisualizer.get_instance(**kwargs)
    vis.dataset_meta = dict(classes=('a', 'b'), palette=[(0, 0, 0),
                                                        (255, 255, 255)])
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.ones(1, H, W, dtype=torch.long))
    vis.add_datasample('x', _image(), sample, draw_gt=False, show=False,
                       with_labels=False)
    drawn = vis.get_image().astype(np.float64)
    expected = 0.5 * _image() + 0.5 * 255
    assert np.abs(drawn - expected).mean() < 2.0


@pytest.mark.parametrize('path,kind', [
    ('demo/mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py', 'Seg'),
    ('mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py', 'Seg'),
    ('mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-'
     '640x640.py', 'Seg'),
    ('demo/mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py',
     'Det'),
    ('demo/mask2former_r18-tiny_1xb8-600it_synthetic-instance-128x128.py',
     'Det'),
    ('mask2former_coco/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py', 'Det'),
])
def test_configs_use_the_readable_visualizers(path, kind):
    cfg = Config.fromfile(osp.join(CONFIGS, path))
    if kind == 'Det':
        assert cfg.visualizer.type == 'M2FDetLocalVisualizer'
    else:
        assert cfg.visualizer.type == 'SegLocalVisualizer'
        assert cfg.visualizer.alpha == 0.5
    assert cfg.visualizer.vis_backends  # the toolbox's backends kept
