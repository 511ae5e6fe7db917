"""The main job: a user's journey end to end on the embedded default.

1. generate the synthetic shapes set (seeded, no downloads),
2. ``mim train m2f_plugin <demo config>`` (mim's entry point, our tools),
3. ``mim test`` on the best checkpoint (mmseg's ``IoUMetric``),
4. ``MMSegInferencer(model=<config>, weights=<checkpoint>)`` on a val image,
   saving a coloured overlay PNG,

then print the mIoU and where every file is.

    python -m m2f_plugin.tools.demo [--work-dir work_dirs/demo] [--iters N]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from typing import List, Optional

# realpath: setup_env.sh links site-packages/m2f_plugin to the checkout
REPO = osp.dirname(osp.dirname(osp.dirname(osp.realpath(__file__))))
DEMO_CONFIG = 'configs/demo/mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py'


def _mim() -> str:
    """The ``mim`` executable next to this interpreter (or on PATH)."""
    local = osp.join(osp.dirname(sys.executable), 'mim')
    found = local if osp.exists(local) else shutil.which('mim')
    if found is None:
        raise SystemExit('mim not found: run `bash scripts/setup_env.sh` (it '
                         'installs openmim into .venv)')
    return found


def _run(cmd: List[str]) -> None:
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=osp.join(REPO, DEMO_CONFIG))
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_shapes')
    parser.add_argument('--iters', type=int, default=None,
                        help='override the number of training iterations')
    args = parser.parse_args(argv)

    from m2f_plugin.datasets import generate_synthetic_shapes
    t0 = time.time()
    generate_synthetic_shapes(args.data_root)
    print(f'[demo] data ready in {args.data_root} ({time.time() - t0:.1f} s)')

    work_dir = osp.abspath(args.work_dir)
    if osp.isdir(work_dir):
        shutil.rmtree(work_dir)  # a fresh run each time: no stale "best"
    options = [f'train_dataloader.dataset.data_root={args.data_root}',
               f'val_dataloader.dataset.data_root={args.data_root}',
               f'test_dataloader.dataset.data_root={args.data_root}']
    if args.iters:
        options += [f'train_cfg.max_iters={args.iters}',
                    f'train_cfg.val_interval={max(1, args.iters // 3)}',
                    f'param_scheduler.0.end={args.iters}']
    t0 = time.time()
    _run([_mim(), 'train', 'm2f_plugin', args.config, '--gpus', '0',
          '--work-dir', work_dir, '--cfg-options', *options])
    train_s = time.time() - t0
    best = sorted(glob.glob(osp.join(work_dir, 'best_mIoU_iter_*.pth')))
    if not best:
        raise SystemExit(f'no best_mIoU checkpoint in {work_dir}')
    ckpt = best[-1]

    test_dir = osp.join(work_dir, 'test')
    _run([_mim(), 'test', 'm2f_plugin', args.config, '--checkpoint', ckpt,
          '--gpus', '0', '--work-dir', test_dir, '--cfg-options', *options])
    with open(osp.join(test_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)

    from mmseg.apis import MMSegInferencer

    import m2f_plugin  # noqa: F401
    image = osp.join(args.data_root, 'img_dir', 'val', '0000.png')
    out_dir = osp.join(work_dir, 'inference')
    inferencer = MMSegInferencer(model=args.config, weights=ckpt,
                                 device='cpu')
    inferencer(image, out_dir=out_dir, img_out_dir='vis', pred_out_dir='pred')
    overlays = sorted(glob.glob(osp.join(out_dir, 'vis', '*.png')))
    vis = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'vis_image')))

    print('\n[demo] ==================== summary ====================')
    print(f'[demo] training: {train_s:.0f} s on CPU')
    print(f'[demo] best checkpoint: {ckpt}')
    print(f"[demo] mim test mIoU: {metrics['mIoU']:.2f}  mDice: "
          f"{metrics.get('mDice', float('nan')):.2f}  aAcc: "
          f"{metrics['aAcc']:.2f}")
    print(f'[demo] metrics: {osp.join(test_dir, "test_metrics.json")}')
    print(f'[demo] inferencer overlay: {overlays[0] if overlays else "none"}')
    print(f'[demo] training visualisations: {vis[-1] if vis else "none"}')
    print(f'[demo] logs: {work_dir}')
    return 0


if __name__ == '__main__':
    os.chdir(os.getcwd())
    sys.exit(main())
