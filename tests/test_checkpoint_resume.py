"""mmengine 0.10.7 checkpoints resume on torch >= 2.6 (weights_only=True)."""
from __future__ import annotations

import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from m2f_plugin.utils import allow_mmengine_checkpoints, mmengine_checkpoint_globals


class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.linear(x)
        if mode == 'loss':
            return {'loss': (out**2).mean()}
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 32

    def __getitem__(self, idx):
        g = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.randn(4, generator=g), data_samples=idx)


def _runner(work_dir: str, max_iters: int, resume: bool,
            load_from: str | None = None) -> Runner:
    return Runner(
        model=ToyModel(),
        work_dir=work_dir,
        train_dataloader=dict(dataset=ToyDataset(), batch_size=4,
                              num_workers=0,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=4,
                                           by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        experiment_name=f'exp_{max_iters}_{resume}')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('resume'))
    runner = _runner(work_dir, 4, False)
    runner.train()
    ckpt = osp.join(work_dir, 'iter_4.pth')
    assert osp.exists(ckpt)
    return work_dir, runner, ckpt


def test_resume_restores_iteration_optimizer_and_message_hub(trained):
    work_dir, first, _ = trained
    second = _runner(work_dir, 8, True)
    second.load_or_resume()
    assert second.iter == 4
    state1 = first.optim_wrapper.optimizer.state_dict()['state']
    state2 = second.optim_wrapper.optimizer.state_dict()['state']
    assert state1.keys() == state2.keys() and state1
    for k in state1:
        assert torch.equal(state1[k]['momentum_buffer'],
                           state2[k]['momentum_buffer'])
    hist1 = first.message_hub.get_scalar('train/loss').data[0]
    hist2 = second.message_hub.get_scalar('train/loss').data[0]
    assert len(hist2) == len(hist1) == 4
    assert (hist1 == hist2).all()
    second.train()
    assert second.iter == 8
    assert osp.exists(osp.join(work_dir, 'iter_8.pth'))


def test_checkpoint_needs_exactly_the_allow_listed_globals(trained):
    _, _, ckpt = trained
    torch.serialization.clear_safe_globals()  # see what torch alone refuses
    try:
        unsafe = set(
            torch.serialization.get_unsafe_globals_in_checkpoint(ckpt))
    finally:
        allow_mmengine_checkpoints()
    allowed = {g[1] if isinstance(g, tuple) else
               f'{g.__module__}.{g.__qualname__}'
               for g in mmengine_checkpoint_globals()}
    assert unsafe, 'mmengine wrote no custom globals? test premise broken'
    assert unsafe <= allowed, unsafe - allowed


FIXTURES = osp.join(osp.dirname(osp.abspath(__file__)), 'fixtures')


def test_allow_list_survives_a_loader_that_lists_the_same_types(trained):
    """A loader that wraps its ``torch.load`` in torch's ``safe_globals``
    context with the same bare types (OneDL's mmengine does) removes them
    on exit; ours stay, so a later plain ``torch.load`` still works."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    _, _, ckpt = trained
    with torch.serialization.safe_globals([HistoryBuffer, np.ndarray,
                                           np.dtype, getattr]):
        torch.load(ckpt, map_location='cpu', weights_only=True)
    torch.load(ckpt, map_location='cpu', weights_only=True)


@pytest.mark.parametrize('numpy_major', [1, 2])
def test_checkpoints_written_under_either_numpy_load(numpy_major):
    """A checkpoint written under NumPy 1 (``numpy.core`` in its pickle) and
    one written under NumPy 2 (``numpy._core``) load with
    ``weights_only=True`` whichever NumPy is installed, and need nothing
    beyond the allow-list (tests/fixtures/README.md)."""
    path = osp.join(FIXTURES, f'mmengine_numpy{numpy_major}.ckpt')
    package = 'numpy._core' if numpy_major == 2 else 'numpy.core'
    torch.serialization.clear_safe_globals()
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(
            path))
    finally:
        allow_mmengine_checkpoints()
    assert f'{package}.multiarray._reconstruct' in unsafe  # the premise
    allowed = {g[1] if isinstance(g, tuple) else
               f'{g.__module__}.{g.__qualname__}'
               for g in mmengine_checkpoint_globals()}
    assert unsafe <= allowed, unsafe - allowed
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert ckpt['meta']['seed'] == 42
    assert ckpt['meta']['hist'].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert ckpt['meta']['m2f_random_state']['numpy'][0] == 'MT19937'
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() == \
        pytest.approx(1.4)


def test_without_plugin_torch_refuses_the_checkpoint(trained):
    """The failure users hit, reproduced in a clean interpreter."""
    _, _, ckpt = trained
    code = f'import torch; torch.load({ckpt!r}, map_location="cpu")'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True)
    assert out.returncode != 0
    assert 'HistoryBuffer' in out.stderr or 'numpy' in out.stderr


def test_getattr_stand_in_only_resolves_history_buffer_methods(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    path = tmp_path / 'getattr.pth'
    torch.save({'m': HistoryBuffer.mean}, str(path))
    assert torch.load(str(path))['m'] is HistoryBuffer.mean
    torch.save({'m': HistoryBuffer.__init__}, str(path))
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        torch.load(str(path))


class _Evil:
    def __reduce__(self):
        return (print, ('pwned',))


@pytest.mark.filterwarnings('ignore:Detected pickle protocol 4:UserWarning')
def test_weights_only_still_rejects_other_globals(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'x': _Evil()}, f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(str(path), map_location='cpu')


def test_load_from_in_a_runner(trained, tmp_path):
    """``load_from`` (not resume) loads the weights."""
    _, first, ckpt = trained
    runner = _runner(str(tmp_path), 4, False, load_from=ckpt)
    runner.load_or_resume()
    assert runner.iter == 0  # weights only, not the schedule
    assert torch.equal(runner.model.linear.weight, first.model.linear.weight)
