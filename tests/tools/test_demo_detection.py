"""The panoptic/instance main job: mmdet's detector with our head trains, tests
with PQ, mask AP and mIoU, and DetInferencer draws overlays (tiny data)."""
from __future__ import annotations

import json
import os.path as osp
import subprocess
import sys

import pytest

from m2f_plugin.tools.demo_detection import DETECTION_CONFIGS, _draw, headline
from tests.helpers import REPO

SMALL = dict(num_train=16, num_val=4, size=64)


def _options(root: str, task: str) -> list:
    opts = []
    for loader in ('train', 'val', 'test'):
        prefix = f'{loader}_dataloader'
        opts += [f'{prefix}.dataset.data_root={root}/']
        opts += [f'{prefix}.dataset.{k}={v}' for k, v in SMALL.items()]
        opts += [f'{prefix}.num_workers=0', f'{prefix}.persistent_workers=False']
    opts += ['train_dataloader.batch_size=2',
             'model.panoptic_head.num_points=256',
             'model.panoptic_head.matcher.num_points=256',
             'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
             'param_scheduler.0.end=2', 'default_hooks.logger.interval=1',
             'default_hooks.checkpoint.interval=2']
    if task == 'panoptic':
        opts += [f'val_evaluator.0.ann_file={root}/annotations/panoptic_val.json',
                 f'val_evaluator.0.seg_prefix={root}/annotations/panoptic_val/',
                 f'val_evaluator.1.ann_file={root}/annotations/instances_val.json',
                 f'test_evaluator.0.ann_file={root}/annotations/panoptic_val.json',
                 f'test_evaluator.0.seg_prefix={root}/annotations/panoptic_val/',
                 f'test_evaluator.1.ann_file={root}/annotations/instances_val.json']
    else:
        opts += [f'val_evaluator.ann_file={root}/annotations/instances_val.json',
                 f'test_evaluator.ann_file={root}/annotations/instances_val.json']
    return opts


def _tool(name: str, *args: str) -> None:
    out = subprocess.run([sys.executable, osp.join(REPO, 'tools', name), *args],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])


@pytest.mark.parametrize('task', ['panoptic', 'instance'])
def test_train_test_and_draw(task, tmp_path):
    config = osp.join(REPO, DETECTION_CONFIGS[task])
    root, work = str(tmp_path / 'shapes'), str(tmp_path / 'work')
    options = _options(root, task)
    _tool('train.py', config, '--work-dir', work, '--cfg-options', *options)
    ckpt = osp.join(work, 'iter_2.pth')
    assert osp.isfile(ckpt)
    _tool('test.py', config, ckpt, '--work-dir', str(tmp_path / 'test'),
          '--cfg-options', *options)
    with open(tmp_path / 'test' / 'test_metrics.json') as f:
        metrics = json.load(f)
    if task == 'panoptic':  # one model, three outputs, three metrics
        for key in ('coco_panoptic/PQ', 'coco_panoptic/PQ_th',
                    'coco_panoptic/PQ_st', 'coco/segm_mAP', 'sem_seg/mIoU'):
            assert key in metrics, (key, sorted(metrics))
        assert 0 <= metrics['sem_seg/mIoU'] <= 100
    else:
        assert 'coco/segm_mAP' in metrics and 'coco_panoptic/PQ' not in metrics
    assert headline(metrics)  # what the demo prints
    overlays = _draw(config, ckpt, root + '/', str(tmp_path / 'vis'),
                     num_images=2)
    assert len(overlays) == 2 and all(osp.getsize(p) > 0 for p in overlays)


def test_headline_reads_mim_test_metrics():
    lines = headline({'coco_panoptic/PQ': 61.234, 'coco_panoptic/PQ_th': 70.0,
                      'coco_panoptic/PQ_st': 20.0, 'coco_panoptic/SQ': 80.0,
                      'coco_panoptic/RQ': 75.0, 'coco/segm_mAP': 0.412,
                      'coco/segm_mAP_50': 0.8, 'sem_seg/mIoU': 90.5})
    assert lines[0].startswith('PQ 61.23 (things 70.00, stuff 20.00)')
    assert lines[1] == 'mask AP 41.20  AP50 80.00'
    assert lines[2].startswith('mIoU 90.50')
