"""The command the errors tell the user to run next."""
from __future__ import annotations

import os.path as osp
import sys

from mmengine.config import Config
from mmengine.logging import MessageHub

from m2f_plugin.engine.nonfinite_error import last_checkpoint, resume_advice
from m2f_plugin.engine.train_command import train_command


class _Runner:
    def __init__(self, work_dir: str, name: str) -> None:
        self.work_dir = work_dir
        self.message_hub = MessageHub(name)
        self.cfg = Config(dict(optim_wrapper=dict(optimizer=dict(lr=1e6))))


def test_train_command_drops_and_appends_flags(monkeypatch):
    monkeypatch.setattr(sys, 'argv', [
        'tools/train.py', 'my cfg.py', '--resume', '--resume-schedule',
        'error', '--cfg-options', 'a=1'])
    assert train_command(['--x']) == \
        "python tools/train.py 'my cfg.py' --cfg-options a=1 --x"
    monkeypatch.setattr(sys, 'argv', [
        'tools/train.py', 'c.py', '--launcher', 'pytorch',
        '--resume-schedule=config'])
    assert train_command([], drop=('--resume-schedule',)) == \
        'torchrun --nproc_per_node=1 tools/train.py c.py --launcher pytorch'
    monkeypatch.setattr(sys, 'argv', ['-c'])
    assert train_command([]) is None


def test_train_command_merges_cfg_options_into_the_users(monkeypatch):
    """Settings join the command's own --cfg-options (the same key replaced),
    so the printed command reads as one list of overrides."""
    monkeypatch.setattr(sys, 'argv', [
        'tools/train.py', 'c.py', '--cfg-options', 'train_cfg.max_iters=70',
        'param_scheduler.0.end=50', '--resume', '--resume-schedule', 'error'])
    assert train_command(
        ['--resume-schedule', 'config'], drop=('--resume-schedule',),
        cfg_options=['param_scheduler.0.end=70']) == (
        'python tools/train.py c.py --cfg-options train_cfg.max_iters=70 '
        'param_scheduler.0.end=70 --resume --resume-schedule config')
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', 'c.py', '--resume'])
    assert train_command([], drop=(), cfg_options=['a.b=1']) == \
        'python tools/train.py c.py --resume --cfg-options a.b=1'


def test_advice_resumes_from_the_last_checkpoint_with_a_lower_lr(
        tmp_path, monkeypatch):
    ckpt = tmp_path / 'iter_4.pth'
    ckpt.write_bytes(b'')
    runner = _Runner(str(tmp_path), 'advice_a')
    runner.message_hub.update_info('last_ckpt', str(ckpt))
    monkeypatch.setattr(sys, 'argv', [
        'tools/train.py', 'c.py', '--work-dir', 'w', '--cfg-options',
        'optim_wrapper.optimizer.lr=1e6'])
    advice = resume_advice(runner)
    assert f'Last checkpoint (finite weights): {ckpt}' in advice
    assert advice.splitlines()[-1] == (
        '  python tools/train.py c.py --work-dir w --cfg-options '
        'optim_wrapper.optimizer.lr=1e6 --resume --resume-schedule config '
        f'--cfg-options load_from={ckpt} optim_wrapper.optimizer.lr=100000')
    # bad inputs: same resume, no learning-rate change
    advice = resume_advice(runner, inputs_finite=False)
    assert advice.splitlines()[-1].endswith(
        f'--resume --cfg-options load_from={ckpt}')
    assert 'fixing or removing those images' in advice


def test_last_checkpoint_skips_deleted_files(tmp_path):
    runner = _Runner(str(tmp_path), 'advice_b')
    runner.message_hub.update_info('last_ckpt', str(tmp_path / 'gone.pth'))
    assert last_checkpoint(runner) is None
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert last_checkpoint(runner) == osp.join(str(tmp_path), 'iter_2.pth')
    assert 'No checkpoint' not in resume_advice(runner)
