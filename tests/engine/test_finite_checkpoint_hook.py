"""M2FFiniteCheckpointHook: no checkpoint with NaN/Inf weights is written,
the rotation never loses the last finite one, NaN checkpoints are refused on
load."""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict

import pytest
import torch

from m2f_plugin.engine import (
    M2FFiniteCheckpointHook,
    M2FNonFiniteError,
    nonfinite_tensors,
)
from tests.engine import (
    CorruptWeightsHook,
    checkpoints,
    nonfinite_checkpoints,
    toy_runner,
)


def test_nonfinite_tensors_names_only_nan_and_inf():
    state = OrderedDict(
        ok=torch.ones(3), big=torch.tensor([3e38, -3e38]),
        nan=torch.tensor([0.0, float('nan')]),
        inf=torch.tensor([float('-inf')]),
        half=torch.tensor([float('nan')], dtype=torch.float16),
        bf16=torch.ones(2, dtype=torch.bfloat16),
        steps=torch.tensor(7), empty=torch.empty(0), note='not a tensor')
    assert nonfinite_tensors(state) == ['nan', 'inf', 'half']
    assert nonfinite_tensors(OrderedDict(ok=torch.ones(2))) == []
    assert nonfinite_tensors({}) == []


def test_premise_mmengine_rotation_replaces_the_last_good_checkpoint(
        tmp_path):
    """Without the guard, NaN weights after iteration 3 (finite loss):
    max_keep_ckpts=1 deletes iter_2.pth and keeps a NaN iter_3.pth."""
    work = str(tmp_path)
    toy_runner(work, 3, hooks=[CorruptWeightsHook(at=3)]).train()
    assert checkpoints(work) == ['iter_3.pth']
    assert nonfinite_checkpoints(work) == [osp.join(work, 'iter_3.pth')]


def test_refuses_to_save_and_keeps_the_last_finite_checkpoint(tmp_path):
    work = str(tmp_path)
    runner = toy_runner(work, 6, hooks=[CorruptWeightsHook(at=3),
                                        M2FFiniteCheckpointHook()])
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert 'Refusing to save a checkpoint at iteration=3' in msg
    assert 'linear.weight' in msg and 'linear.bias' not in msg
    assert 'no earlier checkpoint was deleted' in msg
    assert f'Last checkpoint (finite weights): {osp.join(work, "iter_2.pth")}' \
        in msg
    assert checkpoints(work) == ['iter_2.pth']
    assert nonfinite_checkpoints(work) == []
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_2.pth')


def test_checks_only_when_a_checkpoint_is_due(tmp_path, monkeypatch):
    """One reduction per save, none on the other iterations."""
    import m2f_plugin.engine.finite_checkpoint_hook as mod
    calls = []
    real = mod.nonfinite_tensors
    monkeypatch.setattr(mod, 'nonfinite_tensors',
                        lambda state: calls.append(1) or real(state))
    toy_runner(str(tmp_path), 7, interval=3,
               hooks=[M2FFiniteCheckpointHook()]).train()
    # iterations 3 and 6, the last one (7), and before_save_checkpoint x3
    assert len(calls) == 6


def test_best_checkpoint_is_not_replaced_by_a_nonfinite_one(tmp_path):
    """Validation every iteration with a metric that always improves; the
    weights go NaN after iteration 3 (no regular checkpoint due): the best
    checkpoint of iteration 2 stays, none of iteration 3 is written."""
    work = str(tmp_path)
    hooks = [CorruptWeightsHook(at=3)]
    toy_runner(work, 4, interval=100, val=True, hooks=hooks).train()
    assert 'best_acc_iter_2.pth' not in checkpoints(work)  # premise
    assert nonfinite_checkpoints(work)

    work = str(tmp_path / 'guarded')
    runner = toy_runner(work, 4, interval=100, val=True,
                        hooks=hooks + [M2FFiniteCheckpointHook()])
    with pytest.raises(M2FNonFiniteError, match='best checkpoint'):
        runner.train()
    assert checkpoints(work) == ['best_acc_iter_2.pth']
    assert nonfinite_checkpoints(work) == []


def test_loading_a_nonfinite_checkpoint_is_refused(tmp_path):
    work = str(tmp_path)
    toy_runner(work, 3, hooks=[CorruptWeightsHook(at=3)]).train()
    bad = osp.join(work, 'iter_3.pth')
    runner = toy_runner(str(tmp_path / 'next'), 2, load_from=bad,
                        hooks=[M2FFiniteCheckpointHook()])
    with pytest.raises(M2FNonFiniteError, match=f'{bad} holds NaN/Inf in 1 '
                       r'weight tensors \(linear.weight\)'):
        runner.train()


def test_resume_from_a_named_nonfinite_checkpoint_names_that_file(tmp_path):
    """``load_from`` with ``resume=True`` resumes from the named file, not from
    the latest one of the work directory: the refusal names that file (here
    the new work directory holds a finite checkpoint of its own, which the
    message must not blame)."""
    work = str(tmp_path)
    toy_runner(work, 3, hooks=[CorruptWeightsHook(at=3)]).train()
    bad = osp.join(work, 'iter_3.pth')
    next_work = str(tmp_path / 'next')
    toy_runner(next_work, 1).train()
    assert checkpoints(next_work) == ['iter_1.pth']  # premise
    runner = toy_runner(next_work, 2, load_from=bad, resume=True,
                        hooks=[M2FFiniteCheckpointHook()])
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert msg.startswith(f'{bad} holds NaN/Inf in 1 weight tensors '
                          '(linear.weight)')
    assert 'iter_1.pth' not in msg


def test_loading_without_a_named_source_does_not_blame_the_work_dir(
        tmp_path):
    """A non-finite checkpoint loaded directly (no ``load_from``, no resume)
    is refused without naming a file: the finite checkpoint in the work
    directory is not where the weights came from."""
    work = str(tmp_path)
    toy_runner(work, 3, hooks=[CorruptWeightsHook(at=3)]).train()
    bad = osp.join(work, 'iter_3.pth')
    next_work = str(tmp_path / 'next')
    runner = toy_runner(next_work, 1, hooks=[M2FFiniteCheckpointHook()])
    runner.train()
    assert checkpoints(next_work) == ['iter_1.pth']  # premise
    with pytest.raises(M2FNonFiniteError) as err:
        runner.load_checkpoint(bad)
    msg = str(err.value)
    assert msg.startswith('The checkpoint holds NaN/Inf in 1 weight tensors '
                          '(linear.weight)')
    assert 'iter_1.pth' not in msg and next_work not in msg
