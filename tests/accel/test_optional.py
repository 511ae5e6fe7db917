"""``m2f_plugin.accel`` is optional: without it the package imports, and the
demo model trains and predicts; with it present, its errors surface.

Each case runs in a fresh interpreter whose ``sys.meta_path`` starts with a
finder that hides (or breaks) ``m2f_plugin.accel``.
"""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import DEMO_CONFIG, REPO

# a finder, first on sys.meta_path, that refuses m2f_plugin.accel and its
# submodules as if the package were not installed, and counts the refusals
HIDE_ACCEL = '''
import importlib.abc
import sys


class NoAccel(importlib.abc.MetaPathFinder):
    refused = []

    def find_spec(self, name, path=None, target=None):
        if name == 'm2f_plugin.accel' or name.startswith('m2f_plugin.accel.'):
            self.refused.append(name)
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return None


sys.meta_path.insert(0, NoAccel())
'''

TRAIN_AND_TEST = '''
import math
import os.path as osp

import m2f_plugin
from m2f_plugin.datasets import generate_synthetic_shapes
from mmengine.config import Config
from mmengine.runner import Runner

assert NoAccel.refused, 'the package never looked for accel'
root = generate_synthetic_shapes(osp.join(work, 'data'), num_train=4,
                                 num_val=2, size=64, seed=0)
cfg = Config.fromfile(DEMO_CONFIG)
cfg.work_dir = osp.join(work, 'run')
model = cfg.model
model.data_preprocessor.size = (64, 64)
model.backbone.update(base_channels=8, stem_channels=8)
model.decode_head.update(
    in_channels=[8, 16, 32, 64], feat_channels=32, out_channels=32,
    num_queries=8, num_points=64)
model.decode_head.matcher.num_points = 64
model.decode_head.pixel_decoder.update(num_heads=4, ffn_dims=64,
                                       num_groups=8)
model.decode_head.transformer_decoder.update(num_heads=4, ffn_dims=64)
pipeline = cfg.train_dataloader.dataset.pipeline
pipeline[2].scale = (64, 64)  # RandomResize
pipeline[3].crop_size = (64, 64)  # RandomCrop
for loader, batch in ((cfg.train_dataloader, 2), (cfg.val_dataloader, 1),
                      (cfg.test_dataloader, 1)):
    loader.update(batch_size=batch, num_workers=0, persistent_workers=False)
    loader.dataset.update(generate=False, data_root=root)
cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
cfg.default_hooks.pop('visualization')
cfg.default_hooks.checkpoint.update(save_best=None, save_last=False)
cfg.default_hooks.logger.interval = 1

runner = Runner.from_cfg(cfg)
runner.train()
losses = {k: v.data[0] for k, v in runner.message_hub.log_scalars.items()
          if k.startswith('train/') and 'loss' in k}
assert losses and all(len(h) == 2 for h in losses.values()), losses
assert all(math.isfinite(x) for h in losses.values() for x in h), losses
metrics = runner.test()
assert math.isfinite(metrics['mIoU']), metrics
assert 'm2f_plugin.accel' not in sys.modules
assert not [m for m in sys.modules if m.startswith('m2f_plugin.accel')]
print('trained and tested without accel:', sorted(losses))
'''


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_demo_model_trains_and_tests_without_accel(tmp_path):
    code = (HIDE_ACCEL + f'DEMO_CONFIG = {DEMO_CONFIG!r}\n'
            f'work = {str(tmp_path)!r}\n' + TRAIN_AND_TEST)
    out = _run(code)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    assert 'trained and tested without accel' in out.stdout


# accel present, but one of its modules needs a package that is missing:
# importing m2f_plugin must fail with that error, not skip accel
BREAK_ACCEL = '''
import importlib.abc
import importlib.machinery
import sys


class Broken(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ModuleNotFoundError("No module named 'not_installed_dep'",
                                  name='not_installed_dep')


class BreakGraphedHead(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'm2f_plugin.accel.graphed_head':
            return importlib.machinery.ModuleSpec(name, Broken())
        return None


sys.meta_path.insert(0, BreakGraphedHead())
try:
    import m2f_plugin  # noqa: F401
except ModuleNotFoundError as e:
    print('surfaced:', e.name)
else:
    print('swallowed')
'''


def test_an_error_inside_accel_surfaces():
    out = _run(BREAK_ACCEL)
    assert out.returncode == 0, out.stderr[-6000:]
    assert 'surfaced: not_installed_dep' in out.stdout, out.stdout
