"""M2FNonFiniteLossHook: stops at the first NaN/Inf loss with a useful
message, reads only host values, and skips (then stops) under AMP."""
from __future__ import annotations

import itertools
import os.path as osp
from typing import List

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook, RuntimeInfoHook
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.structures import BaseDataElement

from m2f_plugin.engine import (
    M2FFiniteCheckpointHook,
    M2FNonFiniteError,
    M2FNonFiniteLossHook,
)
from m2f_plugin.engine.nonfinite_loss_hook import batch_images
from tests.engine import (
    ToyDataset,
    ToyModel,
    checkpoints,
    nonfinite_checkpoints,
    toy_runner,
)

_hubs = itertools.count()


class FakeRunner:
    """What the hook reads of a runner; the losses reach the message hub as
    host floats the way RuntimeInfoHook puts them there."""

    def __init__(self, optim_wrapper=None, work_dir: str = '.') -> None:
        self.message_hub = MessageHub(f'fake_hub_{next(_hubs)}')
        self.iter, self.max_iters = 0, 100
        self.hooks = [RuntimeInfoHook()]
        self.work_dir = work_dir
        self.optim_wrapper = optim_wrapper or object()
        self.cfg = Config(dict(optim_wrapper=dict(optimizer=dict(lr=0.2))))

    def step(self, hook, losses: dict, batch=None) -> None:
        for key, value in losses.items():
            self.message_hub.update_scalar(f'train/{key}', value)
        # meta tensors: any .item()/float() by the hook would raise
        outputs = {k: torch.empty((), device='meta') for k in losses}
        try:
            hook.after_train_iter(self, self.iter, batch, outputs)
        finally:
            self.iter += 1


def _batch(*paths: str, nan: int = -1) -> dict:
    inputs = [torch.full((3, 4, 4), float('nan')) if i == nan
              else torch.zeros(3, 4, 4, dtype=torch.uint8)
              for i in range(len(paths))]
    samples = [BaseDataElement(metainfo=dict(img_path=p)) for p in paths]
    return dict(inputs=inputs, data_samples=samples)


def _ready(hook, runner):
    hook.before_train(runner)
    return hook


def test_finite_losses_pass_without_touching_device_tensors():
    runner = FakeRunner()
    hook = _ready(M2FNonFiniteLossHook(), runner)
    for _ in range(3):
        runner.step(hook, {'loss': 1.5, 'decode.loss_cls': 0.5,
                           'decode.loss_mask': 1.0})
    assert hook.active_policy == 'raise'


def test_nan_term_stops_with_iteration_terms_and_images():
    runner = FakeRunner()
    hook = _ready(M2FNonFiniteLossHook(), runner)
    runner.step(hook, {'loss': 1.0, 'decode.loss_cls': 1.0})
    with pytest.raises(M2FNonFiniteError) as err:
        runner.step(hook, {'loss': float('nan'), 'decode.loss_cls': 0.3,
                           'decode.loss_mask': float('inf')},
                    _batch('data/a.png', 'data/b.png'))
    msg = str(err.value)
    assert isinstance(err.value, FloatingPointError)
    assert 'Loss became infinite or NaN at iteration=2 ' in msg
    assert 'loss=nan' in msg and 'decode.loss_mask=inf' in msg
    assert 'decode.loss_cls' not in msg  # finite terms are not blamed
    assert 'data/a.png  (input finite)' in msg
    assert 'data/b.png  (input finite)' in msg
    assert 'the training diverged' in msg
    # no checkpoint yet: says so, and suggests a lower learning rate
    assert 'No checkpoint of this run was written' in msg
    assert 'optim_wrapper.optimizer.lr=0.02' in msg


def test_nonfinite_input_is_blamed_on_the_data():
    runner = FakeRunner()
    hook = _ready(M2FNonFiniteLossHook(), runner)
    with pytest.raises(M2FNonFiniteError) as err:
        runner.step(hook, {'loss': float('nan')},
                    _batch('ok.png', 'broken.tif', nan=1))
    msg = str(err.value)
    assert 'broken.tif  (input NOT FINITE)' in msg
    assert 'ok.png  (input finite)' in msg
    assert 'the data is at fault' in msg
    assert 'optim_wrapper.optimizer.lr' not in msg  # not the fix here


def test_non_loss_values_are_ignored():
    """Only 'loss' and the terms parse_losses sums (names with 'loss')."""
    runner = FakeRunner()
    hook = _ready(M2FNonFiniteLossHook(), runner)
    runner.step(hook, {'loss': 1.0, 'decode.acc_seg': float('nan')})


def test_batch_images_handles_stacked_inputs_and_missing_paths():
    batch = dict(inputs=torch.tensor([[0.0], [float('inf')]]),
                 data_samples=[BaseDataElement(metainfo=dict(img_path='x')),
                               BaseDataElement()])
    assert batch_images(batch) == [('x', True),
                                   ('<sample 1, no img_path>', False)]
    assert batch_images(None) == []
    assert len(batch_images(_batch(*'abcdef'), limit=4)) == 4


class _Scaler:
    def is_enabled(self) -> bool:
        return True


def _amp_wrapper():
    # mmengine refuses to build AmpOptimWrapper without a GPU; the hook only
    # looks at its type and its loss scaler
    wrapper = AmpOptimWrapper.__new__(AmpOptimWrapper)
    wrapper.loss_scaler = _Scaler()
    return wrapper


def test_auto_policy_skips_under_amp_and_stops_after_n_in_a_row():
    runner = FakeRunner(optim_wrapper=_amp_wrapper())
    hook = _ready(M2FNonFiniteLossHook(max_consecutive_skips=3), runner)
    assert hook.active_policy == 'skip'
    nan, ok = {'loss': float('nan')}, {'loss': 1.0}
    for losses in (nan, nan, ok, nan, nan):  # never 3 in a row
        runner.step(hook, losses)
    assert hook.skipped_steps == 4
    assert runner.message_hub.get_info('skipped_steps') == 4
    with pytest.raises(M2FNonFiniteError) as err:
        runner.step(hook, nan, _batch('c.png'))
    msg = str(err.value)
    assert 'iteration=6' in msg
    assert 'The last 3 steps in a row had a non-finite loss' in msg
    assert 'c.png' in msg


def _real_amp_wrapper(scaler: torch.amp.GradScaler) -> AmpOptimWrapper:
    wrapper = AmpOptimWrapper.__new__(AmpOptimWrapper)
    wrapper.loss_scaler = scaler
    return wrapper


def test_auto_policy_raises_when_the_loss_scaler_is_disabled():
    """A disabled GradScaler (bf16 configs: ``loss_scale=dict(enabled=False)``;
    mmengine's fp16 scaler built where CUDA is missing) steps whatever the
    gradients: ``'auto'`` must stop at the first NaN, not count it as
    skipped, and ``'skip'`` must be refused."""
    disabled = torch.amp.GradScaler('cuda', enabled=False)
    assert not disabled.is_enabled()
    runner = FakeRunner(optim_wrapper=_real_amp_wrapper(disabled))
    hook = _ready(M2FNonFiniteLossHook(), runner)
    assert hook.active_policy == 'raise'
    runner.step(hook, {'loss': 1.0})
    with pytest.raises(M2FNonFiniteError) as err:
        runner.step(hook, {'loss': float('nan')}, _batch('d.png'))
    msg = str(err.value)
    assert 'iteration=2 ' in msg
    assert 'skipped by the loss scaler' not in msg
    assert hook.skipped_steps == 0
    with pytest.raises(ValueError, match=r"\(policy='skip'\) needs an "
                       'AmpOptimWrapper'):
        M2FNonFiniteLossHook(policy='skip').before_train(FakeRunner(
            optim_wrapper=_real_amp_wrapper(disabled)))


def test_auto_policy_skips_with_an_enabled_real_loss_scaler():
    enabled = torch.amp.GradScaler('cpu')
    assert enabled.is_enabled()
    runner = FakeRunner(optim_wrapper=_real_amp_wrapper(enabled))
    assert _ready(M2FNonFiniteLossHook(), runner).active_policy == 'skip'


def test_skip_policy_is_refused_without_a_loss_scaler():
    runner = FakeRunner(optim_wrapper=OptimWrapper.__new__(OptimWrapper))
    with pytest.raises(ValueError, match=r"\(policy='skip'\) needs an "
                       'AmpOptimWrapper'):
        M2FNonFiniteLossHook(policy='skip').before_train(runner)
    hook = _ready(M2FNonFiniteLossHook(policy='raise'), FakeRunner(
        optim_wrapper=_amp_wrapper()))
    assert hook.active_policy == 'raise'
    with pytest.raises(ValueError):
        M2FNonFiniteLossHook(policy='ignore')


# ---------------------------------------------------- a real (toy) runner
def test_toy_run_stops_at_the_nan_iteration_and_keeps_the_checkpoint(
        tmp_path):
    """Checkpoint every iteration, keep 1: the run stops at iteration 4, the
    last checkpoint (iteration 3) is kept and finite, nothing newer."""
    work = str(tmp_path)
    runner = toy_runner(work, 8, model=ToyModel(nan_at=4),
                        hooks=[M2FNonFiniteLossHook(),
                               M2FFiniteCheckpointHook()])
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert 'iteration=4 (of max_iters=8)' in msg
    assert 'loss=nan' in msg and 'loss_aux=nan' in msg
    assert 'loss_main' not in msg
    # batch 4 of an unshuffled sampler with batch size 2: samples 6 and 7
    assert 'toy/006.png  (input finite)' in msg
    assert 'toy/007.png  (input finite)' in msg
    assert f'Last checkpoint (finite weights): {osp.join(work, "iter_3.pth")}' \
        in msg
    assert checkpoints(work) == ['iter_3.pth']
    assert nonfinite_checkpoints(work) == []
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_3.pth')


def test_toy_run_names_the_nonfinite_image(tmp_path):
    runner = toy_runner(str(tmp_path), 8, dataset=ToyDataset(nan_index=5),
                        hooks=[M2FNonFiniteLossHook()])
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert 'iteration=3 ' in msg
    assert 'toy/005.png  (input NOT FINITE)' in msg
    assert 'toy/004.png  (input finite)' in msg


def test_premise_mmengine_alone_trains_through_nan(tmp_path):
    """Without the guard the toy run finishes and writes NaN weights."""
    work = str(tmp_path)
    toy_runner(work, 6, model=ToyModel(nan_at=4)).train()
    assert nonfinite_checkpoints(work) == [osp.join(work, 'iter_6.pth')]


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="mmengine's AmpOptimWrapper needs a GPU")
def test_amp_loss_scaler_skips_the_steps_and_the_guard_counts_them(
        tmp_path):
    """Real AmpOptimWrapper: NaN losses at iterations 3, 5, 6, 7. The scaler
    skips those steps (the weights stay finite, so the checkpoints of 3, 5
    and 6 are written); the third in a row (7) stops the run."""
    work = str(tmp_path)
    runner = toy_runner(work, 10, amp=True, model=ToyModel(nan_at=(3, 5, 6, 7)),
                        hooks=[M2FNonFiniteLossHook(max_consecutive_skips=3),
                               M2FFiniteCheckpointHook()])
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert 'iteration=7 ' in msg and 'The last 3 steps in a row' in msg
    assert runner.message_hub.get_info('skipped_steps') == 4
    assert checkpoints(work) == ['iter_6.pth']
    assert nonfinite_checkpoints(work) == []


# ------------------------------- a real AmpOptimWrapper on the toy runner
class _Weights(Hook):
    """The toy model's weights before training and after each iteration."""

    priority = 'HIGHEST'  # recorded before the guard raises

    def __init__(self) -> None:
        self.seen: List[torch.Tensor] = []

    def _record(self, runner) -> None:
        model = getattr(runner.model, 'module', runner.model)
        self.seen.append(model.linear.weight.detach().clone())

    def before_train(self, runner) -> None:
        self._record(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._record(runner)


# mmengine 0.10.7 builds its scaler through torch.cuda.amp.GradScaler
_AMP_WARNING = pytest.mark.filterwarnings(
    r'ignore:`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated'
    ':FutureWarning')


def _amp_runner(monkeypatch, work_dir: str, max_iters: int, model: ToyModel,
                hooks, scaler_enabled: bool):
    """The toy runner with mmengine's AmpOptimWrapper (bf16 autocast) on any
    device: its refusal of a machine without an accelerator is lifted. The
    loss scaler is the disabled one of a bf16 config
    (``loss_scale=dict(enabled=False)``) or an enabled one on the model's
    device."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        lambda: True)
    runner = toy_runner(work_dir, max_iters, model=model, hooks=hooks)
    params = list(runner.model.parameters())
    wrapper = AmpOptimWrapper(
        optimizer=torch.optim.SGD(params, lr=0.01, momentum=0.9),
        dtype='bfloat16', loss_scale=dict(enabled=False))
    if scaler_enabled:
        wrapper.loss_scaler = torch.amp.GradScaler(params[0].device.type)
    assert wrapper.loss_scaler.is_enabled() == scaler_enabled
    runner.optim_wrapper = wrapper  # Runner.train keeps a built wrapper
    return runner


@_AMP_WARNING
def test_disabled_loss_scaler_run_stops_at_the_first_nan(tmp_path,
                                                         monkeypatch):
    """bf16 AMP without loss scaling: the NaN step is applied (the weights
    become NaN), so the default policy stops there instead of skipping."""
    work = str(tmp_path)
    weights = _Weights()
    runner = _amp_runner(monkeypatch, work, 8, ToyModel(nan_at=3),
                         [weights, M2FNonFiniteLossHook(),
                          M2FFiniteCheckpointHook()], scaler_enabled=False)
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert msg.startswith('Loss became infinite or NaN at iteration=3 '
                          '(of max_iters=8).')
    assert 'loss_aux=nan' in msg
    assert 'skipped by the loss scaler' not in msg
    assert runner.message_hub.get_info('skipped_steps', 0) == 0
    # the premise: a disabled scaler applied the NaN step
    assert len(weights.seen) == 4
    assert torch.isfinite(weights.seen[2]).all()
    assert not torch.isfinite(weights.seen[3]).all()
    assert checkpoints(work) == ['iter_2.pth']
    assert nonfinite_checkpoints(work) == []


@_AMP_WARNING
def test_loss_scaler_skips_nan_steps_and_ten_in_a_row_stop(tmp_path,
                                                          monkeypatch):
    """An enabled loss scaler: each NaN step leaves the weights exactly as
    they were, the guard counts it, and the documented limit (10 in a row)
    stops the run with the error; finite steps in between train."""
    work = str(tmp_path)
    nan_at = {3, *range(5, 15)}  # one, then ten in a row (5..14)
    weights = _Weights()
    runner = _amp_runner(monkeypatch, work, 16, ToyModel(nan_at=nan_at),
                         [weights, M2FNonFiniteLossHook(),
                          M2FFiniteCheckpointHook()], scaler_enabled=True)
    with pytest.raises(M2FNonFiniteError) as err:
        runner.train()
    msg = str(err.value)
    assert msg.startswith('Loss became infinite or NaN at iteration=14 '
                          '(of max_iters=16).')
    assert ('The last 10 steps in a row had a non-finite loss (each skipped '
            'by the loss scaler); max_consecutive_skips=10.') in msg
    assert 'loss_aux=nan' in msg
    assert runner.message_hub.get_info('skipped_steps') == 11
    assert len(weights.seen) == 15  # before training, after 1..14
    for it in range(1, 15):
        same = torch.equal(weights.seen[it], weights.seen[it - 1])
        assert same == (it in nan_at), it
        assert torch.isfinite(weights.seen[it]).all(), it
    # skipped steps keep finite weights: their checkpoints are written
    assert checkpoints(work) == ['iter_13.pth']
    assert nonfinite_checkpoints(work) == []
