"""M2FResumeScheduleHook: a resume whose schedule differs from the
checkpoint's stops with the fix, or applies the config's schedule exactly."""
from __future__ import annotations

import copy
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.optim.scheduler import LinearLR, PolyLR

from m2f_plugin.engine import M2FResumeScheduleHook, replay_schedule
from tests.engine import toy_runner


class RecordLRHook(Hook):
    """The learning rate each iteration trains at (1-based iteration)."""

    def __init__(self) -> None:
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.lrs[runner.iter + 1] = runner.optim_wrapper.param_groups[0]['lr']


def _poly(end: int) -> list:
    return [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=end,
                 by_epoch=False)]


def _resume(work: str, max_iters: int, end: int, lr: float = 0.01,
            **hook_options):
    record = RecordLRHook()
    runner = toy_runner(work, max_iters, param_scheduler=_poly(end), lr=lr,
                        resume=True, interval=5, hooks=[
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
    toy_runner(str(tmp_path / 'straight'), max_iters,
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
