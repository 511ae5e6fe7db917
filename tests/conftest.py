"""Shared fixtures: tiny configs, the built-in reference model, fake GT."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Sequence

import pytest
import torch

import m2f_plugin  # noqa: F401  (registers the plugin)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than ~30 s on 2 cores')
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def mmseg_config_path(rel: str) -> str:
    """Path of a config shipped with mmseg (``mmseg/.mim/configs/<rel>``)."""
    import mmseg
    return osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs', rel)


def make_label_maps(batch: int, height: int, width: int, num_classes: int,
                    ignore_index: int = 255, seed: int = 0) -> torch.Tensor:
    """Blocky label maps with several classes and some ignored pixels.

    Returns (B, H, W) long.
    """
    g = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(batch):
        coarse = torch.randint(0, num_classes, (1, 1, 4, 5), generator=g)
        m = torch.nn.functional.interpolate(coarse.float(), (height, width),
                                            mode='nearest').long()[0, 0]
        m[:height // 8, :width // 6] = ignore_index
        maps.append(m)
    return torch.stack(maps)


def seg_data_samples(label_maps: torch.Tensor,
                     pad_shape: Sequence[int] | None = None) -> List:
    """SegDataSamples carrying ``gt_sem_seg`` and the usual metas."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for m in label_maps:
        h, w = m.shape
        s = SegDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w),
            pad_shape=tuple(pad_shape or (h, w))))
        s.gt_sem_seg = PixelData(data=m[None])
        samples.append(s)
    return samples


@pytest.fixture(autouse=True, scope='session')
def mmseg_default_scope():
    """Builders resolve bare type names (``PackSegInputs``) in mmseg."""
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture
def fixed_rand(monkeypatch):
    """Make ``torch.rand(N, P, 2)`` depend on (P, 2) only, equal for every N.

    mmdet draws matching points per image as (1, P, 2), we draw (B, P, 2);
    importance sampling draws (M, S, 2) on both sides. With this, both
    implementations see the same points.
    """
    real_rand = torch.rand

    def rand(*size, device=None, dtype=None, **kwargs):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        *lead, p, d = size
        g = torch.Generator().manual_seed(1000 * p + d)
        base = real_rand(p, d, generator=g, dtype=dtype or torch.float32)
        return base.expand(*lead, p, d).clone().to(device)

    monkeypatch.setattr(torch, 'rand', rand)
    return rand


DEMO_CONFIG = osp.join(
    CONFIGS, 'demo', 'mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py')


def tiny_segmentor_cfg(num_classes: int = 6, num_points: int = 256):
    """The demo model (ResNet-18, 128 ch, 20 queries) with fewer points."""
    from mmengine.config import Config
    cfg = Config.fromfile(DEMO_CONFIG)
    head = cfg.model.decode_head
    head.num_classes = num_classes
    head.num_points = num_points
    head.matcher.num_points = num_points
    return cfg


def build_tiny_segmentor(num_classes: int = 6, num_points: int = 256,
                         seed: int = 0):
    """An ``EncoderDecoder`` with our head, random init, no downloads."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    model = MODELS.build(tiny_segmentor_cfg(num_classes, num_points).model)
    model.init_weights()
    return model
