"""A test hook: write each rank's raw losses of every iteration to JSON."""
import json
import os.path as osp

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
