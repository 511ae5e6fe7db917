"""Test helpers imported into training subprocesses via ``custom_imports``.

``DumpLossesHook`` writes each rank's raw losses of every iteration to JSON.
With ``fixed_points=True`` the matcher and the losses get the same sampled
points for each image and mask whatever the batch split (single process vs DDP
ranks): comparisons are then free of sampling noise.
"""
import json
import os.path as osp

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class DumpLossesHook(Hook):
    """Dump losses; with ``fixed_points`` also make the model's matcher and
    criterion draw ``tests.helpers.fixed_points``."""

    def __init__(self, fixed_points: bool = False) -> None:
        self.fixed_points = fixed_points

    def before_train(self, runner) -> None:
        if self.fixed_points:
            from tests.helpers import use_fixed_points
            use_fixed_points(runner.model)

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
