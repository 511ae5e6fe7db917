"""tools/train.py on the panoptic demo config (mmdet's Mask2Former with our
head) refuses a things/stuff split that does not match the data set before
the first step, naming the keys and the values to set."""
from __future__ import annotations

import os.path as osp
import runpy
import sys

import pytest
from mmengine.runner import Runner

from tests.helpers import CONFIGS, REPO

PANOPTIC_DEMO = osp.join(
    CONFIGS, 'demo',
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')
TRAIN = osp.join(REPO, 'tools', 'train.py')


def _options(root: str) -> list:
    opts = []
    for loader in ('train', 'val', 'test'):
        prefix = f'{loader}_dataloader'
        opts += [f'{prefix}.dataset.data_root={root}/',
                 f'{prefix}.dataset.num_train=4',
                 f'{prefix}.dataset.num_val=2', f'{prefix}.dataset.size=64',
                 f'{prefix}.num_workers=0',
                 f'{prefix}.persistent_workers=False']
    for evaluator in ('val_evaluator', 'test_evaluator'):
        opts += [
            f'{evaluator}.0.ann_file={root}/annotations/panoptic_val.json',
            f'{evaluator}.0.seg_prefix={root}/annotations/panoptic_val/',
            f'{evaluator}.1.ann_file={root}/annotations/instances_val.json']
    return opts + ['train_dataloader.batch_size=2',
                   'model.panoptic_head.num_points=256',
                   'model.panoptic_head.matcher.num_points=256',
                   'train_cfg.max_iters=2', 'param_scheduler.0.end=2',
                   'default_hooks.logger.interval=1',
                   f'visualizer.name=things_stuff_{osp.basename(root)}']


def test_wrong_things_stuff_split_is_refused_before_step_1(tmp_path,
                                                          monkeypatch):
    """Six classes in all, as the data set, but split 4 + 2 instead of its
    5 things + 1 stuff: stuff would get instance ids. Refused by
    tools/train.py before any iteration or checkpoint."""
    pytest.importorskip('panopticapi')  # the config's CocoPanopticMetric
    from m2f_plugin.datasets.synthetic_shapes import generate_synthetic_shapes
    root = generate_synthetic_shapes(str(tmp_path / 'shapes'), num_train=4,
                                     num_val=2, size=64)
    work = tmp_path / 'work'
    steps = []
    real_call_hook = Runner.call_hook

    def call_hook(self, fn_name, **kwargs):
        if fn_name == 'before_train_iter':
            steps.append(self.iter)
        return real_call_hook(self, fn_name, **kwargs)

    monkeypatch.setattr(Runner, 'call_hook', call_hook)
    monkeypatch.setenv('LOCAL_RANK', '0')  # what tools/train.py sets
    main = runpy.run_path(TRAIN, run_name='train_tool')['main']
    monkeypatch.setattr(sys, 'argv', [
        TRAIN, PANOPTIC_DEMO, '--work-dir', str(work), '--cfg-options',
        *_options(root), 'model.panoptic_head.num_things_classes=4',
        'model.panoptic_head.num_stuff_classes=2'])
    with pytest.raises(ValueError) as err:
        main()
    msg = str(err.value)
    assert 'num_things_classes=5, num_stuff_classes=1' in msg, msg
    assert steps == []
    assert not list(work.glob('*.pth'))

