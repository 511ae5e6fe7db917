"""Helpers for the training-guard tests: a toy runner (milliseconds per
iteration), a fake runner for hook unit tests, and the subprocess runs of
``tools/train.py`` on the demo config.

``InjectNonFiniteLossHook`` is imported into training subprocesses through
``custom_imports=['tests.engine']``.
"""
from __future__ import annotations

import glob
import itertools
import os
import os.path as osp
import signal
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from mmseg.registry import HOOKS
from torch.utils.data import Dataset

import m2f_plugin  # noqa: F401  (torch.load of mmengine checkpoints)
from tests.helpers import REPO

TRAIN = osp.join(REPO, 'tools', 'train.py')
_names = itertools.count()


# ----------------------------------------------------------------- toy runner
class ToyModel(BaseModel):
    """Two logged loss terms; ``loss_aux`` becomes NaN at the ``nan_at``-th
    training forward(s) (1-based), like a diverging head."""

    def __init__(self, nan_at: Union[int, Sequence[int], None] = None
                 ) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.nan_at = {nan_at} if isinstance(nan_at, int) else set(
            nan_at or ())
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.linear(x)
        if mode == 'loss':
            self.calls += 1
            aux = out.abs().mean() * 0.1
            if self.calls in self.nan_at:
                aux = aux * float('nan')
            return {'loss_main': ((out - 1) ** 2).mean(), 'loss_aux': aux,
                    'acc': out.mean().detach()}
        if mode == 'predict':
            return [BaseDataElement(metainfo=dict(pred=float(o))) for o in out]
        return out


class ToyDataset(Dataset):
    """32 samples ``toy/NNN.png``; ``nan_index`` gets a NaN in its input."""

    metainfo = dict(classes=('a', 'b'))

    def __init__(self, nan_index: Optional[int] = None) -> None:
        self.nan_index = nan_index

    def __len__(self) -> int:
        return 32

    def __getitem__(self, idx: int) -> dict:
        x = torch.randn(4, generator=torch.Generator().manual_seed(idx))
        if idx == self.nan_index:
            x[1] = float('nan')
        return dict(inputs=x, data_samples=BaseDataElement(
            metainfo=dict(img_path=f'toy/{idx:03d}.png')))


class ToyMetric(BaseMetric):
    """A score that improves at every validation (a new best each time)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def process(self, data_batch, data_samples) -> None:
        self.results.append(1)

    def compute_metrics(self, results) -> Dict[str, float]:
        self.calls += 1
        return {'acc': float(self.calls)}


class CorruptWeightsHook(Hook):
    """Put a NaN in the weights after iteration ``at`` (1-based): a step that
    produced non-finite weights while its loss was still finite."""

    priority = 'HIGH'  # before the guards

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                model = getattr(runner.model, 'module', runner.model)
                model.linear.weight[0, 0] = float('nan')


def toy_runner(work_dir: str, max_iters: int, hooks: Sequence = (),
               model: Optional[ToyModel] = None,
               dataset: Optional[Dataset] = None, interval: int = 1,
               max_keep_ckpts: int = 1, val: bool = False,
               param_scheduler=None, lr: float = 0.01, resume: bool = False,
               load_from: Optional[str] = None, amp: bool = False) -> Runner:
    """An iteration-based mmengine Runner on the toy model (batch 2, SGD;
    ``amp``: mmengine's AmpOptimWrapper, which needs a GPU)."""
    extra = {}
    if val:
        extra = dict(
            val_dataloader=dict(dataset=ToyDataset(), batch_size=4,
                                num_workers=0,
                                sampler=dict(type='DefaultSampler',
                                             shuffle=False)),
            val_cfg=dict(), val_evaluator=[ToyMetric()])
    return Runner(
        model=model or ToyModel(),
        work_dir=work_dir,
        train_dataloader=dict(dataset=dataset or ToyDataset(), batch_size=2,
                              num_workers=0,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False)),
        optim_wrapper=dict(type='AmpOptimWrapper' if amp else 'OptimWrapper',
                           optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        param_scheduler=param_scheduler,
        train_cfg=dict(by_epoch=False, max_iters=max_iters,
                       val_interval=1 if val else 10**6),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=interval,
                            by_epoch=False, max_keep_ckpts=max_keep_ckpts,
                            save_best='acc' if val else None, rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        experiment_name=f'guard_test_{next(_names)}',
        **extra)


def checkpoints(work_dir: str) -> List[str]:
    return sorted(osp.basename(p)
                  for p in glob.glob(osp.join(work_dir, '*.pth')))


def nonfinite_checkpoints(work_dir: str) -> List[str]:
    """The ``.pth`` files under ``work_dir`` holding a NaN/Inf weight."""
    bad = []
    for path in glob.glob(osp.join(work_dir, '**', '*.pth'), recursive=True):
        state = torch.load(path, map_location='cpu')
        state = state.get('state_dict', state)
        if any(t.is_floating_point() and not torch.isfinite(t).all()
               for t in state.values() if torch.is_tensor(t)):
            bad.append(path)
    return bad


# -------------------------------------------------------- subprocess journeys
def demo_options(data_root: str, iters: int, **extra) -> List[str]:
    """``--cfg-options`` for a few-iteration demo run on a small data set."""
    opts = {'train_cfg.max_iters': iters, 'train_cfg.val_interval': 1000,
            'param_scheduler.0.end': iters,
            'default_hooks.logger.interval': 1,
            'default_hooks.visualization.draw': False,
            'train_dataloader.batch_size': 2,
            'model.decode_head.num_points': 256,
            'model.decode_head.matcher.num_points': 256}
    for split in ('train', 'val', 'test'):
        opts.update({f'{split}_dataloader.dataset.data_root': data_root,
                     f'{split}_dataloader.dataset.num_train': 8,
                     f'{split}_dataloader.dataset.num_val': 2,
                     f'{split}_dataloader.dataset.size': 64,
                     f'{split}_dataloader.num_workers': 0,
                     f'{split}_dataloader.persistent_workers': False})
    opts.update(extra)
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def run(cmd: List[str], env_extra: Optional[dict] = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository root with one thread per process.

    On timeout the whole process group (a launcher and its ranks) is killed
    and the test fails with the output so far: a rank left waiting in a
    collective shows up as this failure, not as a stuck test run.
    """
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    env.update(env_extra or {})
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f'{cmd[:4]}... still running after {timeout} s '
                             f'(a rank left waiting?):\n{stdout[-3000:]}'
                             f'{stderr[-3000:]}') from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def train_cmd(config: str, work_dir: str, *args: str) -> List[str]:
    return [sys.executable, TRAIN, config, '--work-dir', work_dir, *args]


@HOOKS.register_module(force=True)
class InjectNonFiniteLossHook(Hook):
    """Log a NaN loss term on one rank at one iteration (1-based), without
    touching the gradients: only an agreement between the ranks makes the
    other ranks stop too."""

    priority = 'HIGHEST'  # before RuntimeInfoHook logs the outputs

    def __init__(self, rank: int, at: int) -> None:
        self.rank, self.at = rank, at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        from mmengine.dist import get_rank
        if get_rank() == self.rank and runner.iter + 1 == self.at:
            outputs['decode.loss_injected'] = torch.tensor(float('nan'))
