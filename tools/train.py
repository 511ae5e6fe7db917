"""Train a model with m2f_plugin registered (``mim train m2f_plugin CFG``).

The guards (non-finite loss and checkpoints, resume schedule, class counts)
are the config's ``custom_hooks`` (``configs/_base_/m2f_runtime.py``), so a
plain ``Runner.from_cfg(cfg).train()`` runs them too. This script applies its
options to the config and adds the guards that a config leaves out.
"""
import argparse
import logging

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

import m2f_plugin  # noqa: F401  (registers modules, fixes checkpoint loading)
from m2f_plugin.engine.train_command import (
    add_common_arguments,
    add_missing_hooks,
    guard_hooks,
    set_hook_options,
)
from m2f_plugin.engine.train_command import load_config as load_common
from m2f_plugin.utils.panopticapi_check import require_panopticapi


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', action='store_true', default=False,
                        help='resume from the latest checkpoint in work_dir')
    parser.add_argument('--resume-schedule',
                        choices=['error', 'config', 'checkpoint'],
                        help='when the resumed checkpoint was trained on '
                        'another schedule (max_iters, param_scheduler, '
                        'learning rate) than the config: stop and say so '
                        "(error), apply the config's, or keep the "
                        "checkpoint's; sets on_change of the config's "
                        'M2FResumeScheduleHook (default: as the config says, '
                        'error in ours)')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic mixed precision (fp16)')
    add_common_arguments(parser)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the command line's options applied
    (what ``Runner.from_cfg`` then runs)."""
    cfg = load_common(args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = args.resume
    # a config that replaced (or never inherited) the guards keeps them here
    add_missing_hooks(cfg, guard_hooks(), 'tools/train.py')
    if args.resume_schedule:
        set_hook_options(cfg, 'M2FResumeScheduleHook',
                         on_change=args.resume_schedule)
    if cfg.get('compile', None) not in (None, False):
        # mmengine compiles train_step; validation gets the same option
        # (imported here: m2f_plugin.accel only when compiling)
        from m2f_plugin.accel.compile_hook import compile_options
        compile_options(cfg)  # a bad value fails before the run starts
        add_missing_hooks(cfg, [dict(type='M2FCompileHook')], 'tools/train.py')
    return cfg


def main():
    args = parse_args()
    cfg = load_config(args)
    require_panopticapi(cfg)  # before minutes of training, not at validation
    if args.launcher != 'none':
        # on a CPU-only machine: gloo + a DDP wrapper that accepts CPU modules
        from m2f_plugin.engine import enable_cpu_distributed
        enable_cpu_distributed(cfg)
    Runner.from_cfg(cfg).train()


if __name__ == '__main__':
    main()
