"""Test a model with m2f_plugin registered (``mim test m2f_plugin CFG``).

The guards that act at test time are the config's ``custom_hooks``
(``configs/_base_/m2f_runtime.py``); this script adds those a config leaves
out.
"""
import argparse
import json
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner

import m2f_plugin  # noqa: F401  (registers modules, fixes checkpoint loading)
from m2f_plugin.engine.train_command import (
    add_common_arguments,
    add_missing_hooks,
    guard_hooks,
)
from m2f_plugin.engine.train_command import load_config as load_common
from m2f_plugin.utils.panopticapi_check import require_panopticapi

# the guards that act at test time (configs/_base_/m2f_runtime.py): a
# head/data-set class-count mismatch fails before the first image, and a
# checkpoint with NaN/Inf weights is refused, not evaluated
TEST_GUARDS = ('M2FNumClassesCheckHook', 'M2FFiniteCheckpointHook')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='directory to save the output results')
    parser.add_argument('--show-dir', help='directory to save painted images')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (config needs tta_model '
                        'and tta_pipeline)')
    add_common_arguments(parser)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the command line's options applied
    (what ``Runner.from_cfg`` then runs)."""
    cfg = load_common(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is not None:
            vis.draw = True
            vis.interval = 1
            cfg.visualizer.save_dir = args.show_dir
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    add_missing_hooks(cfg, [h for h in guard_hooks() if h['type'] in TEST_GUARDS],
                      'tools/test.py')
    if cfg.get('compile', None) not in (None, False):
        # test_step is compiled as mmengine compiles train_step (imported
        # here: m2f_plugin.accel only when compiling)
        from m2f_plugin.accel.compile_hook import compile_options
        compile_options(cfg)  # a bad value fails before loading anything
        add_missing_hooks(cfg, [dict(type='M2FCompileHook')], 'tools/test.py')
    return cfg


def main():
    args = parse_args()
    cfg = load_config(args)
    require_panopticapi(cfg, keys=('test_evaluator',))
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    # machine-readable metrics next to the logs (the demo reads them)
    if runner.rank == 0:
        out = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
        print(f'metrics written to {out}')


if __name__ == '__main__':
    main()
