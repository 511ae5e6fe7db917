"""Test a model with m2f_plugin registered (``mim test m2f_plugin CFG``)."""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

import m2f_plugin  # noqa: F401  (registers modules, fixes checkpoint loading)
from m2f_plugin.accel.compile_hook import M2FCompileHook, compile_options
from m2f_plugin.engine import M2FFiniteCheckpointHook, M2FNumClassesCheckHook
from m2f_plugin.utils.panopticapi_check import require_panopticapi


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the metrics')
    parser.add_argument('--out', help='directory to save the output results')
    parser.add_argument('--show-dir', help='directory to save painted images')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (config needs tta_model '
                        'and tta_pipeline)')
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
    require_panopticapi(cfg, keys=('test_evaluator',))
    runner = Runner.from_cfg(cfg)
    # a head/data-set class-count mismatch fails before the first step
    runner.register_hook(M2FNumClassesCheckHook())
    # a checkpoint with NaN/Inf weights is refused, not evaluated
    if not any(isinstance(h, M2FFiniteCheckpointHook) for h in runner.hooks):
        runner.register_hook(M2FFiniteCheckpointHook())
    # compile=True in the config: test_step is compiled as mmengine compiles
    # train_step
    if compile_options(cfg) is not None and not any(
            isinstance(h, M2FCompileHook) for h in runner.hooks):
        runner.register_hook(M2FCompileHook())
    metrics = runner.test()
    # machine-readable metrics next to the logs (the demo reads them)
    if runner.rank == 0:
        out = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(out, 'w') as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2)
        print(f'metrics written to {out}')


if __name__ == '__main__':
    main()
