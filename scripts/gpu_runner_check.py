"""mmengine's Runner trains the demo model with and without training graphs
(run on the GPU machine): same seed, same data; prints loss, mIoU and time.

    python3 scripts/gpu_runner_check.py [ITERS [MODE ...]]

MODE: ``eager``, ``graph`` (the decoders as graphs) or ``full`` (the
backbone too, under ``M2FEncoderDecoder``); default ``eager graph``.
"""
import os.path as osp
import sys
import time

from mmengine.config import Config
from mmengine.runner import Runner

import m2f_plugin  # noqa: F401
from m2f_plugin.datasets import generate_synthetic_shapes
from m2f_plugin.tools.demo import DEMO_CONFIG

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run(iters: int, mode: str, root: str) -> None:
    cfg = Config.fromfile(osp.join(REPO, DEMO_CONFIG))
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = root
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters // 2  # a train -> eval -> train switch
    cfg.param_scheduler[0].end = iters
    cfg.model.decode_head.cuda_graph_train = mode != 'eager'
    if mode == 'full':
        cfg.model.type = 'M2FEncoderDecoder'
    cfg.work_dir = f'/tmp/runner_check_{mode}'
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    runner = Runner.from_cfg(cfg)
    t0 = time.time()
    runner.train()
    took = time.time() - t0
    metrics = runner.val_loop.run()
    head = runner.model.decode_head
    print(f'RUNNER mode={mode} iters={iters} train_s={took:.1f} '
          f"mIoU={metrics['mIoU']:.2f} "
          f'disabled={head._graphed_train.disabled}', flush=True)


if __name__ == '__main__':
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    modes = sys.argv[2:] or ['eager', 'graph']
    root = '/tmp/synthetic_shapes'
    generate_synthetic_shapes(root)
    for mode in modes:
        run(iters, mode, root)
