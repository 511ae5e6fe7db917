"""M2FResumeScheduleHook: a resume whose learning rates would differ from
the checkpoint's stops with the fix, or applies the config's schedule
exactly; one whose learning rates would not differ resumes."""
from __future__ import annotations

import copy
import importlib.util
import os.path as osp
import shlex
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.optim.scheduler import LinearLR, PolyLR

from m2f_plugin.engine import M2FResumeScheduleHook, replay_schedule
from m2f_plugin.engine.resume_schedule_hook import (
    _distinct,
    first_difference,
    schedule_values,
)
from tests.engine import TRAIN, toy_runner


class RecordLRHook(Hook):
    """The learning rate each iteration trains at (1-based iteration)."""

    def __init__(self) -> None:
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.lrs[runner.iter + 1] = runner.optim_wrapper.param_groups[0]['lr']


class LoggedLRHook(Hook):
    """The learning rate the runner logged for each iteration (1-based), as
    read back from its message hub."""

    def __init__(self) -> None:
        self.lrs = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.lrs[runner.iter + 1] = \
            runner.message_hub.get_scalar('train/lr').current()


def _poly(end: int, eta_min: float = 0.0) -> list:
    return [dict(type='PolyLR', eta_min=eta_min, power=0.9, begin=0, end=end,
                 by_epoch=False)]


def _resume(work: str, max_iters: int, end: int, lr: float = 0.01,
            eta_min: float = 0.0, **hook_options):
    record = RecordLRHook()
    runner = toy_runner(work, max_iters, param_scheduler=_poly(end, eta_min),
                        lr=lr, resume=True, interval=5, hooks=[
                            record, M2FResumeScheduleHook(**hook_options)])
    return runner, record


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """A finished 5-iteration PolyLR run (lr 0.01 -> 0)."""
    work = str(tmp_path_factory.mktemp('finished'))
    toy_runner(work, 5, param_scheduler=_poly(5), interval=5).train()
    assert osp.exists(osp.join(work, 'iter_5.pth'))
    return work


def _copy(finished: str, tmp_path) -> str:
    import shutil
    work = str(tmp_path / 'work')
    shutil.copytree(finished, work)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'iter_5.pth'))
    return work


def _straight_lrs(tmp_path, max_iters: int, end: int, lr: float = 0.01):
    record = RecordLRHook()
    toy_runner(str(tmp_path / f'straight_{max_iters}_{end}_{lr}'), max_iters,
               param_scheduler=_poly(end), lr=lr, interval=100,
               hooks=[record]).train()
    return record.lrs


def test_premise_mmengine_extends_a_run_at_lr_zero(finished, tmp_path):
    work = _copy(finished, tmp_path)
    runner, record = _resume(work, 8, 8, on_change='checkpoint')
    runner.train()
    assert [record.lrs[i] for i in (6, 7, 8)] == [0.0, 0.0, 0.0]


def test_extension_stops_with_the_differences_and_the_fix(finished, tmp_path):
    work = _copy(finished, tmp_path)
    runner, record = _resume(work, 8, 8)
    with pytest.raises(ValueError) as err:
        runner.train()
    msg = str(err.value)
    assert 'iteration 5' in msg and 'iter_5.pth' in msg
    assert 'train_cfg.max_iters: 5 -> 8' in msg
    assert 'param_scheduler[0] (PolyLR) end: 5 -> 8' in msg
    assert 'total_iters: 4 -> 7' in msg
    assert 'iteration 6 would train at lr=0 (' in msg
    assert "M2FResumeScheduleHook(on_change='config')" in msg
    assert record.lrs == {}  # not a single step


def test_config_policy_continues_on_the_new_schedule_exactly(finished,
                                                             tmp_path):
    """Iterations 6-8 train at the learning rates of an 8-iteration run."""
    work = _copy(finished, tmp_path)
    runner, record = _resume(work, 8, 8, on_change='config')
    runner.train()
    straight = _straight_lrs(tmp_path, 8, 8)
    assert record.lrs[6] > 0
    assert [record.lrs[i] for i in (6, 7, 8)] == \
        [straight[i] for i in (6, 7, 8)]
    assert runner.param_schedulers[0].end == 8


def test_config_policy_refuses_a_schedule_that_ended(finished, tmp_path):
    """max_iters raised, the scheduler's end not: still lr 0, so stop."""
    work = _copy(finished, tmp_path)
    runner, _ = _resume(work, 8, 5, on_change='config')
    with pytest.raises(ValueError, match='ends at iteration 5 but '
                       r'train_cfg.max_iters=8.*param_scheduler.0.end=8'):
        runner.train()


def test_a_lower_learning_rate_is_detected_and_applied(finished, tmp_path):
    """A resumed run keeps the checkpoint's lr unless told otherwise."""
    work = _copy(finished, tmp_path)
    runner, _ = _resume(work, 8, 8, lr=0.001)
    with pytest.raises(ValueError,
                       match=r'base values \(learning rates\): \[0.01\] -> '
                       r'\[0.001\]'):
        runner.train()
    work = _copy(finished, tmp_path / 'b')
    runner, record = _resume(work, 8, 8, lr=0.001, on_change='config')
    runner.train()
    straight = _straight_lrs(tmp_path, 8, 8, lr=0.001)
    assert [record.lrs[i] for i in (6, 7, 8)] == \
        [straight[i] for i in (6, 7, 8)]


class StopAtHook(Hook):
    """A crash right after iteration ``at``, in a run of its own length."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 >= self.at:
            runner.train_loop.stop_training = True


def test_same_schedule_resumes_untouched(tmp_path):
    """An interrupted run resumed with its own config: no error, and the
    learning rates are those of the uninterrupted run."""
    work = str(tmp_path / 'split')
    toy_runner(work, 8, param_scheduler=_poly(8), interval=4,
               hooks=[StopAtHook(4)]).train()
    runner, record = _resume(work, 8, 8)  # on_change='error'
    runner.train()
    straight = _straight_lrs(tmp_path, 8, 8)
    assert sorted(record.lrs) == [5, 6, 7, 8]
    assert [record.lrs[i] for i in (5, 6, 7, 8)] == \
        [straight[i] for i in (5, 6, 7, 8)]


def test_replay_matches_stepping_warmup_then_poly():
    """The replay equals a real optimizer stepped by chained schedulers."""
    def build():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
        return opt, [LinearLR(opt, start_factor=0.1, begin=0, end=3,
                              by_epoch=False),
                     PolyLR(opt, eta_min=1e-4, power=1.0, begin=3, end=10,
                            by_epoch=False)]

    opt, scheds = build()
    states = [copy.deepcopy(s.state_dict()) for s in scheds]
    groups = [{k: v for k, v in g.items() if k != 'params'}
              for g in opt.param_groups]
    for _ in range(6):
        opt.step()
        for s in scheds:
            s.step()
    replayed, new_states = replay_schedule(scheds, states, groups, 6)
    assert replayed[0]['lr'] == opt.param_groups[0]['lr']
    assert [s['last_step'] for s in new_states] == \
        [s.last_step for s in scheds]
    # the templates and the inputs are untouched
    assert states[0]['last_step'] == 0 and groups[0]['lr'] == 0.1 * 0.1


def test_more_iters_within_the_schedule_resume_as_if_uninterrupted(tmp_path):
    """max_iters 2 -> 4 with PolyLR end=300 kept: both schedules give the same
    learning rates for iterations 3-4, so the resume is not refused and logs
    those of an uninterrupted 4-iteration run."""
    work = str(tmp_path / 'short')
    toy_runner(work, 2, param_scheduler=_poly(300), interval=2).train()
    logged = LoggedLRHook()
    runner = toy_runner(work, 4, param_scheduler=_poly(300), interval=2,
                        resume=True, hooks=[logged, M2FResumeScheduleHook()])
    runner.train()  # on_change='error'
    straight = LoggedLRHook()
    toy_runner(str(tmp_path / 'straight'), 4, param_scheduler=_poly(300),
               interval=100, hooks=[straight]).train()
    assert sorted(logged.lrs) == [3, 4]
    assert logged.lrs[3] > 0
    assert [logged.lrs[i] for i in (3, 4)] == pytest.approx(
        [straight.lrs[i] for i in (3, 4)], rel=1e-9)
    assert runner.iter == 4


def _load_train_tool():
    spec = importlib.util.spec_from_file_location('m2f_tools_train', TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _printed_command(message: str) -> list:
    """The ``tools/train.py`` command line a message tells the user to run
    (the first one)."""
    for line in message.splitlines():
        words = shlex.split(line.strip()) if line.startswith(' ') else []
        if words[:1] == ['python'] and words[1:2] == ['tools/train.py']:
            return words[1:]
    raise AssertionError(f'no command in:\n{message}')


def test_extension_past_the_schedule_end_names_the_key_and_its_command(
        finished, tmp_path, monkeypatch):
    """A finished 5-iteration run (PolyLR end=5) resumed with max_iters=8:
    both choices would train iterations 6-8 at lr 0, so it stops, names
    ``param_scheduler.0.end`` and prints a command; that command, parsed by
    tools/train.py's own parser and applied, trains them at lr > 0."""
    work = _copy(finished, tmp_path)
    monkeypatch.setenv('LOCAL_RANK', '0')  # what tools/train.py would set
    monkeypatch.setattr(sys, 'argv', [
        'tools/train.py', 'toy.py', '--work-dir', work, '--resume',
        '--cfg-options', 'train_cfg.max_iters=8'])
    runner, record = _resume(work, 8, 5)  # on_change='error'
    with pytest.raises(ValueError) as err:
        runner.train()
    msg = str(err.value)
    assert record.lrs == {}  # not a single step
    assert 'ends at iteration 5 but train_cfg.max_iters=8: iterations 6-8 ' \
        'would train at lr=0 with the checkpoint\'s schedule as with this ' \
        "config's" in msg
    assert 'Set param_scheduler.0.end=8' in msg
    assert 'on purpose' not in msg  # no choice that trains at lr 0
    command = _printed_command(msg)
    assert command == ['tools/train.py', 'toy.py', '--work-dir', work,
                       '--resume', '--cfg-options', 'train_cfg.max_iters=8',
                       'param_scheduler.0.end=8', '--resume-schedule',
                       'config']

    # follow it: the config (5 iterations, end 5) with its overrides
    monkeypatch.setattr(sys, 'argv', command)
    args = _load_train_tool().parse_args()
    cfg = Config(dict(train_cfg=dict(max_iters=5), param_scheduler=_poly(5)))
    cfg.merge_from_dict(args.cfg_options)
    logged = LoggedLRHook()
    runner = toy_runner(
        args.work_dir, cfg.train_cfg.max_iters,
        param_scheduler=cfg.param_scheduler, resume=args.resume, interval=5,
        hooks=[logged,
               M2FResumeScheduleHook(on_change=args.resume_schedule)])
    runner.train()
    assert sorted(logged.lrs) == [6, 7, 8]
    # mmengine's PolyLR reaches eta_min at its last iteration (8), in an
    # uninterrupted run too; the ones before it train
    assert logged.lrs[6] > logged.lrs[7] > 0
    straight = _straight_lrs(tmp_path, 8, 8)  # as if run for 8 from the start
    assert [logged.lrs[i] for i in (6, 7, 8)] == pytest.approx(
        [straight[i] for i in (6, 7, 8)], rel=1e-9)


def test_extension_past_a_schedule_ending_at_eta_min_offers_both(
        tmp_path, monkeypatch):
    """With eta_min > 0 the added iterations would train at eta_min: the
    message gives the command that moves the end, and the commands that
    train them at eta_min on purpose; the checkpoint's choice does that."""
    work = str(tmp_path / 'eta')
    toy_runner(work, 5, param_scheduler=_poly(5, 1e-4), interval=5).train()
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', 'toy.py', '--resume'])
    runner, _ = _resume(work, 8, 5, eta_min=1e-4)
    with pytest.raises(ValueError) as err:
        runner.train()
    msg = str(err.value)
    assert 'iterations 6-8 would train at lr=0.0001 (its final value)' in msg
    assert ('python tools/train.py toy.py --resume --cfg-options '
            'param_scheduler.0.end=8 --resume-schedule config') in msg
    assert 'To train iterations 6-8 at lr=0.0001 on purpose' in msg
    assert 'python tools/train.py toy.py --resume --resume-schedule ' \
        'checkpoint' in msg
    runner, record = _resume(work, 8, 5, eta_min=1e-4,
                             on_change='checkpoint')
    runner.train()
    assert [record.lrs[i] for i in (6, 7, 8)] == pytest.approx([1e-4] * 3)


def test_a_schedule_that_ended_before_the_checkpoint_is_not_questioned(
        tmp_path):
    """PolyLR end=3 in a 5-iteration run: its last iterations trained at
    eta_min on purpose; extending to 8 keeps doing that under either
    schedule, so the resume is not refused."""
    work = str(tmp_path / 'tail')
    toy_runner(work, 5, param_scheduler=_poly(3, 1e-4), interval=5).train()
    runner, record = _resume(work, 8, 3, eta_min=1e-4)
    runner.train()
    assert [record.lrs[i] for i in (6, 7, 8)] == pytest.approx([1e-4] * 3)


def test_many_groups_are_replayed_one_of_each_kind():
    """Per-parameter groups (three kinds among seven) are replayed and
    simulated through one representative each, with the values of stepping
    every group; a relative change of 1e-9 is the same schedule, 1e-3 not."""
    def build(scale=1.0):
        opt = torch.optim.SGD(
            [dict(params=[torch.nn.Parameter(torch.ones(1))],
                  lr=0.1 * scale * (0.1 if i % 3 == 1 else 1),
                  weight_decay=0.0 if i % 3 == 2 else 1e-4)
             for i in range(7)], lr=0.1, momentum=0.9)
        return opt, [LinearLR(opt, start_factor=0.1, begin=0, end=3,
                              by_epoch=False),
                     PolyLR(opt, eta_min=1e-4, power=0.9, begin=3, end=12,
                            by_epoch=False)]

    opt, scheds = build()
    states = [copy.deepcopy(s.state_dict()) for s in scheds]
    groups = [{k: v for k, v in g.items() if k != 'params'}
              for g in opt.param_groups]
    index, kinds = _distinct((groups, states))
    assert index == [0, 1, 2] and kinds == [0, 1, 2, 0, 1, 2, 0]
    stepped = []
    for _ in range(10):
        stepped.append([(g['lr'],) for g in opt.param_groups])
        opt.step()
        for s in scheds:
            s.step()
    replayed, new_states = replay_schedule(scheds, states, groups, 4)
    assert [g['lr'] for g in replayed] == [lr for lr, in stepped[4]]
    assert [g['weight_decay'] for g in replayed] == \
        [g['weight_decay'] for g in groups]
    assert len(new_states[1]['base_values']) == 7
    values = schedule_values(scheds, new_states, replayed, 4, 6, ['lr'],
                             index=index)
    assert values == [[row[i] for i in index] for row in stepped[4:]]
    near = [[(lr * (1 + 1e-9),) for lr, in row] for row in values]
    assert first_difference(values, near) is None
    far = [row[:1] + [(row[1][0] * (1 + 1e-3),)] + row[2:] for row in values]
    assert first_difference(values, far) == (0, 1, 0)


def test_a_config_schedule_at_lr_zero_is_not_offered(tmp_path, monkeypatch):
    """The config's end lowered to the resumed iteration (300 -> 4, 6
    iterations): its schedule would train at lr 0, the checkpoint's would
    not; the message offers moving the end or keeping the checkpoint's."""
    work = str(tmp_path / 'lowered')
    toy_runner(work, 4, param_scheduler=_poly(300), interval=4).train()
    monkeypatch.setattr(sys, 'argv', ['tools/train.py', 'toy.py', '--resume'])
    runner, _ = _resume(work, 6, 4)
    with pytest.raises(ValueError) as err:
        runner.train()
    msg = str(err.value)
    assert 'iterations 5-6 would train at lr=0 with this config\'s ' \
        'schedule' in msg
    assert '--cfg-options param_scheduler.0.end=6 --resume-schedule ' \
        'config' in msg
    assert "Or keep the checkpoint's schedule:\n" in msg
    assert msg.endswith('python tools/train.py toy.py --resume '
                        '--resume-schedule checkpoint')
    assert "this config's schedule:" not in msg
