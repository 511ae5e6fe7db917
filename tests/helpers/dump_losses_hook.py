"""Test helpers imported into training subprocesses via ``custom_imports``.

``DumpLossesHook`` writes each rank's raw losses of every iteration to JSON.
With ``M2F_FIXED_POINTS=1`` in the environment, ``torch.rand(N, P, 2)`` (the
point draws of the matcher and the losses) returns the same P points for every
N, so each image and mask sees the same points whatever the batch split
(single process vs DDP ranks): comparisons are then free of sampling noise.
"""
import json
import os
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class DumpLossesHook(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        path = osp.join(runner.work_dir,
                        f'losses_rank{get_rank()}_iter{runner.iter}.json')
        with open(path, 'w') as f:
            json.dump({k: float(v) for k, v in outputs.items()}, f)


@HOOKS.register_module()
class StopTrainingHook(Hook):
    """Stop the train loop after ``stop_iter`` iterations (a simulated crash
    right after a checkpoint, with the run's own ``max_iters``)."""

    def __init__(self, stop_iter: int) -> None:
        self.stop_iter = stop_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 >= self.stop_iter:
            runner.train_loop.stop_training = True


if os.environ.get('M2F_FIXED_POINTS') == '1':
    _real_rand = torch.rand

    def _fixed_rand(*size, device=None, dtype=None, **kwargs):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        if len(size) != 3 or size[-1] != 2:
            return _real_rand(*size, device=device, dtype=dtype, **kwargs)
        n, p, d = size
        g = torch.Generator().manual_seed(1000 * p + d)
        base = _real_rand(p, d, generator=g, dtype=dtype or torch.float32)
        return base.expand(n, p, d).clone().to(device)

    torch.rand = _fixed_rand
