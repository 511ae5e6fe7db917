"""Train a model with m2f_plugin registered (``mim train m2f_plugin CFG``)."""
import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

import m2f_plugin  # noqa: F401  (registers modules, fixes checkpoint loading)
from m2f_plugin.accel.compile_hook import M2FCompileHook, compile_options
from m2f_plugin.engine import (
    M2FFiniteCheckpointHook,
    M2FNonFiniteLossHook,
    M2FNumClassesCheckHook,
    M2FResumeScheduleHook,
)
from m2f_plugin.utils.panopticapi_check import require_panopticapi


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', action='store_true', default=False,
                        help='resume from the latest checkpoint in work_dir')
    parser.add_argument('--resume-schedule',
                        choices=['error', 'config', 'checkpoint'],
                        help='when the resumed checkpoint was trained on '
                        'another schedule (max_iters, param_scheduler, '
                        'learning rate) than the config: stop and say so '
                        "(error, the default), apply the config's, or keep "
                        "the checkpoint's")
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic mixed precision (fp16)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. key=value')
    parser.add_argument('--launcher',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def ensure_hook(runner: Runner, hook_type: type, **options) -> None:
    """Register ``hook_type(**options)`` unless the config has one; set
    ``options`` on the config's."""
    for hook in runner.hooks:
        if isinstance(hook, hook_type):
            for name, value in options.items():
                setattr(hook, name, value)
            return
    runner.register_hook(hook_type(**options))


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
        if cfg.get('custom_imports'):  # imports added on the command line
            import_modules_from_strings(**cfg.custom_imports)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
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
    require_panopticapi(cfg)  # before minutes of training, not at validation
    if args.launcher != 'none':
        # on a CPU-only machine: gloo + a DDP wrapper that accepts CPU modules
        from m2f_plugin.engine import enable_cpu_distributed
        enable_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    # a head/data-set class-count mismatch fails before the first step
    runner.register_hook(M2FNumClassesCheckHook())
    # a diverged run stops with a clear error and keeps its last finite
    # checkpoint; a resume never silently changes the schedule
    ensure_hook(runner, M2FNonFiniteLossHook)
    ensure_hook(runner, M2FFiniteCheckpointHook)
    ensure_hook(runner, M2FResumeScheduleHook, **(
        {'on_change': args.resume_schedule} if args.resume_schedule else {}))
    if compile_options(cfg) is not None:
        # mmengine compiles train_step; validation gets the same option
        ensure_hook(runner, M2FCompileHook)
    runner.train()


if __name__ == '__main__':
    main()
