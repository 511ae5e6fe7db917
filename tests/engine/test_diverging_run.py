"""A diverging run of the demo config through tools/train.py, as a user runs
it: it stops with the error, keeps only finite checkpoints, and the command
the error prints resumes it."""
from __future__ import annotations

import glob
import os.path as osp
import shlex
import sys

import pytest

from tests.engine import (
    checkpoints,
    demo_options,
    nonfinite_checkpoints,
    run,
    train_cmd,
)
from tests.helpers import DEMO_CONFIG


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
