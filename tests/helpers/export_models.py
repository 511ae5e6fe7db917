"""Tiny versions of the demo configs for the export tests: ResNet-18 at
1/8 width, a 32-channel head with 8 queries, and a keep-ratio ``Resize`` in
the test pipeline so the graph's resize runs too."""
from __future__ import annotations

import os.path as osp

from mmengine.config import Config

__all__ = ['DEMO', 'tiny_config']

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = dict(
    semantic=osp.join(ROOT, 'configs/demo/'
                      'mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py'),
    panoptic=osp.join(ROOT, 'configs/demo/mask2former_r18-tiny_1xb8-600it_'
                      'synthetic-panoptic-128x128.py'),
    instance=osp.join(ROOT, 'configs/demo/mask2former_r18-tiny_1xb8-600it_'
                      'synthetic-instance-128x128.py'))


def tiny_config(task: str, data_root: str = None,
                resize=(160, 96)) -> Config:
    """The demo config of ``task`` with a tiny model.

    Panoptic: thresholds low enough that random weights keep segments
    (``object_mask_thr=0``, ``iou_thr=0.05``).
    """
    cfg = Config.fromfile(DEMO[task])
    head = cfg.model.decode_head if task == 'semantic' else \
        cfg.model.panoptic_head
    cfg.model.backbone.base_channels = 8
    head.in_channels = [8, 16, 32, 64]
    head.feat_channels = head.out_channels = 32
    head.num_queries = 8
    head.pixel_decoder.update(num_heads=4, ffn_dims=64, num_groups=8)
    head.transformer_decoder.update(num_heads=4, ffn_dims=64)
    pipeline = cfg.test_pipeline
    if resize is not None:
        pipeline.insert(1, dict(type='Resize', scale=resize, keep_ratio=True))
    if task != 'semantic':
        cfg.model.test_cfg.update(max_per_image=20, object_mask_thr=0.0,
                                  iou_thr=0.05)
    if data_root is not None:
        cfg.test_dataloader.dataset.update(data_root=data_root,
                                           generate=False)
        for metric in (cfg.test_evaluator if isinstance(
                cfg.test_evaluator, list) else [cfg.test_evaluator]):
            for key in ('ann_file', 'seg_prefix'):
                if key in metric:
                    metric[key] = osp.join(
                        data_root, metric[key].split('synthetic_shapes/')[-1])
    cfg.test_dataloader.dataset.pipeline = pipeline
    return cfg
