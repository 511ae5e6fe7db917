"""A diverging run of the demo config through tools/train.py, as a user runs
it: it stops with the error, keeps only finite checkpoints, and the command
the error prints resumes it. The panoptic detector (mmdet's Mask2Former with
``M2FDetHead``) stops the same way in an mmengine Runner."""
from __future__ import annotations

import glob
import os.path as osp
import shlex
import sys

import pytest

from m2f_plugin.engine import M2FNonFiniteError
from tests.engine import (
    checkpoints,
    demo_options,
    nonfinite_checkpoints,
    run,
    train_cmd,
)
from tests.helpers import CONFIGS, DEMO_CONFIG

PANOPTIC_DEMO = osp.join(
    CONFIGS, 'demo',
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from m2f_plugin.datasets import generate_synthetic_shapes
    return generate_synthetic_shapes(
        str(tmp_path_factory.mktemp('shapes')), num_train=8, num_val=2,
        size=64)


def _error(log: str) -> str:
    """The error's message, from the traceback to the end."""
    start = log.rindex('M2FNonFiniteError: ')
    return log[start:]


def test_diverging_learning_rate_stops_with_the_error(tmp_path, data_root):
    """The reported case: lr=1e6, no clipping, a checkpoint every iteration.
    mmengine alone trains on to the end, exits 0 and saves NaN weights."""
    work = str(tmp_path / 'work')
    out = run(train_cmd(DEMO_CONFIG, work) + demo_options(
        data_root, 12, **{'optim_wrapper.optimizer.lr': 1e6,
                          'optim_wrapper.clip_grad': None,
                          'default_hooks.checkpoint.interval': 1}))
    log = out.stdout + out.stderr
    assert out.returncode == 1, log[-3000:]
    msg = _error(log)
    assert msg.startswith('M2FNonFiniteError: Loss became infinite or NaN at '
                          'iteration=2 (of max_iters=12).')
    assert 'loss=nan' in msg and 'decode.loss_mask=nan' in msg
    images = [line for line in msg.splitlines()
              if '/img_dir/train/' in line]
    assert len(images) == 2, msg  # batch size 2, both named
    assert all(line.endswith('.png  (input finite)') for line in images)
    ckpt = osp.join(work, 'iter_1.pth')
    assert f'Last checkpoint (finite weights): {ckpt}' in msg
    assert f'--resume --resume-schedule config --cfg-options load_from={ckpt}' \
        in msg
    assert checkpoints(work) == ['iter_1.pth']
    assert glob.glob(osp.join(work, '*.pth'))
    assert nonfinite_checkpoints(work) == []


@pytest.mark.slow
def test_the_printed_command_resumes_from_the_last_good_checkpoint(
        tmp_path, data_root):
    """Trains 2 good iterations, then the schedule multiplies the learning
    rate by 1e10: NaN at iteration 4, before the iteration-4 checkpoint. The
    user runs the printed command with the cause fixed (the schedule's
    gamma): it resumes from iteration 2 on the fixed schedule and finishes."""
    cfg = tmp_path / 'jump.py'
    cfg.write_text(
        f'_base_ = [{DEMO_CONFIG!r}]\n'
        "param_scheduler = [dict(type='MultiStepLR', by_epoch=False, "
        'milestones=[2], gamma=1e10)]\n'
        'optim_wrapper = dict(clip_grad=None)\n')
    work = str(tmp_path / 'work')
    options = [o for o in demo_options(
        data_root, 6, **{'default_hooks.checkpoint.interval': 2})
        if not o.startswith('param_scheduler.')]
    out = run(train_cmd(str(cfg), work) + options)
    log = out.stdout + out.stderr
    assert out.returncode == 1, log[-3000:]
    msg = _error(log)
    assert 'iteration=4 (of max_iters=6)' in msg
    assert checkpoints(work) == ['iter_2.pth']
    command = msg.splitlines()[-1].strip()
    assert command.startswith('python ') and command.endswith(
        f'--resume --resume-schedule config --cfg-options load_from='
        f'{osp.join(work, "iter_2.pth")} optim_wrapper.optimizer.lr=3e-05')

    fixed = [sys.executable] + shlex.split(command)[1:] + [
        'param_scheduler.0.gamma=1.0']
    out = run(fixed)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'resumed epoch: 0, iter: 2' in log
    assert 'param_scheduler[0] (MultiStepLR) gamma: 1e+10 -> 1' in log
    assert "Applied this config's schedule" in log
    assert 'Iter(train) [3/6]  base_lr: 3.0000e-05 lr: 3.0000e-05' in log
    # the final validation adds a best checkpoint: finite too
    assert checkpoints(work) == ['best_mIoU_iter_6.pth', 'iter_4.pth',
                                 'iter_6.pth']
    assert nonfinite_checkpoints(work) == []


def _detector_runner(work: str, data_root: str, max_iters: int):
    """The panoptic demo config, small: 64 x 64 images, batch 2, 256 points,
    no validation, no checkpoints; the guards are the config's own
    (configs/_base_/m2f_runtime.py), built by a plain ``Runner.from_cfg``."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(PANOPTIC_DEMO)
    cfg.work_dir = work
    cfg.train_dataloader.update(
        batch_size=2, num_workers=0, persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=False))
    cfg.train_dataloader.dataset.update(data_root=data_root, num_train=8,
                                        num_val=2, size=64)
    for loop in ('val', 'test'):
        cfg[f'{loop}_dataloader'] = cfg[f'{loop}_cfg'] = None
        cfg[f'{loop}_evaluator'] = None
    head = cfg.model.panoptic_head
    head.num_points = head.matcher.num_points = 256
    cfg.train_cfg.update(max_iters=max_iters, val_interval=10**6)
    cfg.param_scheduler[0].end = max_iters
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(interval=10**6, save_best=None)
    cfg.experiment_name = f'detector_nan_{osp.basename(work)}'
    cfg.visualizer.name = cfg.experiment_name  # one instance per run
    return Runner.from_cfg(cfg)


def test_detector_run_stops_at_a_nan_loss_term(tmp_path, data_root,
                                               monkeypatch):
    """mmdet's Mask2Former with our head: one loss term of the head becomes
    NaN at iteration 2 (forward and backward). The run stops there and
    names that term (mmdet's key, no ``decode.`` prefix) and the two
    images."""
    work = str(tmp_path / 'work')
    runner = _detector_runner(work, data_root, 3)
    head = runner.model.panoptic_head
    assert type(head).__name__ == 'M2FDetHead'
    real_loss, calls = head.loss, []

    def loss(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        calls.append(sorted(losses))
        if len(calls) == 2:
            losses['d1.loss_dice'] = losses['d1.loss_dice'] * float('nan')
        return losses

    monkeypatch.setattr(head, 'loss', loss)
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert len(calls) == 2
    assert 'd1.loss_dice' in calls[0] and 'loss_cls' in calls[0]
    assert msg.startswith('Loss became infinite or NaN at iteration=2 '
                          '(of max_iters=3).'), msg
    terms = next(line for line in msg.splitlines()
                 if line.startswith('Non-finite terms'))
    assert terms == 'Non-finite terms (2): loss=nan, d1.loss_dice=nan', terms
    images = [line for line in msg.splitlines() if '/img_dir/train/' in line]
    assert len(images) == 2, msg
    assert all(line.endswith('.png  (input finite)') for line in images)
    assert 'the training diverged' in msg
    assert 'No checkpoint of this run was written' in msg
    assert checkpoints(work) == []
