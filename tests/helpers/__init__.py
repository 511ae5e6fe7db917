"""Shared test helpers: tiny configs, fake ground truth, fixed points."""
from __future__ import annotations

import os.path as osp
from typing import List, Sequence

import torch

_REAL_RAND = torch.rand  # before any test patches it
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs')


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


def fixed_points(num: int, num_points: int, device=None) -> torch.Tensor:
    """(num, P, 2) points, the same P for every row, seeded by P only.

    Injected into our matcher and criterion (their ``draw_points`` seam) so
    that each image and mask sees the same points whatever the batch split
    or the implementation."""
    g = torch.Generator().manual_seed(1000 * num_points + 2)
    base = _REAL_RAND(num_points, 2, generator=g)
    return base.expand(num, num_points, 2).clone().to(device)



def use_fixed_points(model: torch.nn.Module) -> None:
    """Make every set criterion (and its matcher) in ``model`` draw
    ``fixed_points``."""
    found = 0
    for m in model.modules():
        if hasattr(m, 'matcher') and hasattr(m, 'draw_points'):
            m.draw_points = fixed_points
            m.matcher.draw_points = fixed_points
            found += 1
    assert found, 'no set criterion in the model'


# a small M2FHead: 32 channels, 8 queries, 2+3 layers, 64 points, 5 classes
TINY_HEAD_CFG = dict(
    type='M2FHead', in_channels=[8, 16, 24, 32], strides=[4, 8, 16, 32],
    feat_channels=32, out_channels=32, num_classes=5, num_queries=8,
    pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                       ffn_dims=64, num_groups=8),
    transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                             num_layers=3, num_heads=4, ffn_dims=64),
    matcher=dict(type='M2FHungarianMatcher', num_points=64),
    num_points=64)


def tiny_head(num_classes: int = 5, **overrides) -> torch.nn.Module:
    """``TINY_HEAD_CFG`` built, with ``num_classes`` and overrides."""
    cfg = dict(TINY_HEAD_CFG, num_classes=num_classes)
    cfg.update(overrides)
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    # whatever scope an earlier test's Runner left current
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(cfg)


def feats(batch: int = 2, h: int = 64, w: int = 64):
    """Random backbone maps for ``tiny_head`` (strides 4..32), seeded."""
    torch.manual_seed(0)
    return [torch.randn(batch, c, h // s, w // s)
            for c, s in zip([8, 16, 24, 32], [4, 8, 16, 32])]


def prediction_sets(predictions):
    """(S class logits (B, Q, K + 1), S full mask logits (B, Q, H, W)) of a
    ``Predictions`` or of a head's ``forward`` (which returns them)."""
    if isinstance(predictions, tuple):
        return predictions
    return predictions.as_lists()


def assert_builtin_outputs_equal(out, ref, rtol: float = 1e-5) -> None:
    """``out`` has the built-ins' tensor-mode type, (class sets, mask sets),
    two lists of tensors, equal to ``ref``'s (max error / max |ref|)."""
    assert isinstance(out, tuple) and len(out) == len(ref) == 2
    for ours_sets, ref_sets in zip(out, ref):
        assert isinstance(ours_sets, list) and len(ours_sets) == len(ref_sets)
        for a, b in zip(ours_sets, ref_sets):
            assert a.shape == b.shape
            err = (a - b).abs().max() / b.abs().max().clamp(min=1e-12)
            assert err.item() < rtol


def train_options(data_root: str, iters: int, **extra) -> list:
    """``--cfg-options`` for a few demo iterations on a small synthetic
    set at ``data_root`` (64x64, 16 train and 4 val images)."""
    opts = {
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.num_train': 16,
        'train_dataloader.dataset.num_val': 4,
        'train_dataloader.dataset.size': 64,
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.num_train': 16,
        'val_dataloader.dataset.num_val': 4,
        'val_dataloader.dataset.size': 64,
        'test_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.num_train': 16,
        'test_dataloader.dataset.num_val': 4,
        'test_dataloader.dataset.size': 64,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'train_dataloader.batch_size': 2,
        'model.decode_head.num_points': 256,
        'model.decode_head.matcher.num_points': 256,
        'train_cfg.max_iters': iters,
        'train_cfg.val_interval': 1000,
        'param_scheduler.0.end': iters,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.visualization.draw': False,
    }
    opts.update(extra)
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
