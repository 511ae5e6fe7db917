"""The main job for panoptic and instance segmentation (``demo --task``).

The same journey as the semantic demo, through mmdet's side: the embedded
shapes in COCO panoptic or instance form, ``mim train`` / ``mim test`` with
mmdet's ``Mask2Former`` detector driving our head, mmdet's
``CocoPanopticMetric`` (PQ) and ``CocoMetric`` (mask AP) plus mmseg's
``IoUMetric`` on the same model's semantic map, and ``DetInferencer``
overlays of the first validation images.

    python -m m2f_plugin.tools.demo --task panoptic|instance
"""
from __future__ import annotations

import glob
import json
import os.path as osp
import time
from typing import Dict, List, Optional

# the demo empties its work folder before each run: only a folder it made
_WORK_DIR_FIX = ('Pass --work-dir a new folder; the demo empties its work '
                 'folder before each run.')
__all__ = ['DETECTION_CONFIGS', 'headline', 'run_detection_demo']

DETECTION_CONFIGS = {
    'panoptic': 'configs/demo/'
    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py',
    'instance': 'configs/demo/'
    'mask2former_r18-tiny_1xb8-600it_synthetic-instance-128x128.py',
}
# the metric that picks the best checkpoint, as the configs save it
BEST_KEY = {'panoptic': 'coco_panoptic_PQ', 'instance': 'coco_segm_mAP'}


def headline(metrics: Dict[str, float]) -> List[str]:
    """The numbers to print, as percentages: PQ (things/stuff), mask AP,
    mIoU, whichever ``metrics`` (``mim test``'s JSON) holds."""
    lines = []
    if 'coco_panoptic/PQ' in metrics:
        lines.append(
            f"PQ {metrics['coco_panoptic/PQ']:.2f} (things "
            f"{metrics.get('coco_panoptic/PQ_th', float('nan')):.2f}, stuff "
            f"{metrics.get('coco_panoptic/PQ_st', float('nan')):.2f})  SQ "
            f"{metrics.get('coco_panoptic/SQ', float('nan')):.2f}  RQ "
            f"{metrics.get('coco_panoptic/RQ', float('nan')):.2f}")
    if 'coco/segm_mAP' in metrics:
        lines.append(f"mask AP {100 * metrics['coco/segm_mAP']:.2f}  AP50 "
                     f"{100 * metrics.get('coco/segm_mAP_50', float('nan')):.2f}")
    if 'sem_seg/mIoU' in metrics:
        lines.append(f"mIoU {metrics['sem_seg/mIoU']:.2f} (the semantic map "
                     'of the same model)')
    return lines


def run_detection_demo(task: str, work_dir: str, data_root: str,
                       iters: Optional[int], mim: str, run,
                       repo: str) -> Dict[str, float]:
    """Train, test and draw one task; returns ``mim test``'s metrics.

    Args:
        task: ``'panoptic'`` or ``'instance'``.
        work_dir: Output folder (emptied first).
        data_root: The embedded data set (generated if missing).
        iters: Training iterations (default: the config's).
        mim: The ``mim`` executable.
        run: Runs a command list, raising on failure.
        repo: The checkout (configs are relative to it).
    """
    from m2f_plugin.datasets import generate_synthetic_shapes
    config = osp.join(repo, DETECTION_CONFIGS[task])
    t0 = time.time()
    generate_synthetic_shapes(data_root)
    print(f'[demo] data ready in {data_root} ({time.time() - t0:.1f} s)')
    root = data_root.rstrip('/') + '/'
    options = [f'train_dataloader.dataset.data_root={root}',
               f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}']
    evaluators = _evaluator_options(config, root)
    options += evaluators
    if iters:
        options += [f'train_cfg.max_iters={iters}',
                    f'train_cfg.val_interval={max(1, iters // 3)}',
                    f'param_scheduler.0.end={iters}',
                    'default_hooks.logger.interval='
                    f'{max(1, min(20, iters // 10))}']
    work_dir = osp.abspath(work_dir)
    # a fresh run each time (no stale "best"), never in someone else's folder
    from m2f_plugin.utils.owned_folder import fresh_owned_folder
    fresh_owned_folder(work_dir, 'm2f_demo', 'demo run', _WORK_DIR_FIX,
                       legacy_marker='inference')
    t0 = time.time()
    run([mim, 'train', 'm2f_plugin', config, '--gpus', '0', '--work-dir',
         work_dir, '--cfg-options', *options])
    train_s = time.time() - t0
    best = sorted(glob.glob(osp.join(work_dir, f'best_{BEST_KEY[task]}_*.pth')))
    if not best:
        raise SystemExit(f'no best_{BEST_KEY[task]} checkpoint in {work_dir}')
    ckpt = best[-1]
    test_dir = osp.join(work_dir, 'test')
    run([mim, 'test', 'm2f_plugin', config, '--checkpoint', ckpt, '--gpus',
         '0', '--work-dir', test_dir, '--cfg-options', *options])
    with open(osp.join(test_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)

    overlays = _draw(config, ckpt, root, osp.join(work_dir, 'inference'))
    print(f'\n[demo] ==================== {task} summary ====================')
    print(f'[demo] training: {train_s:.0f} s on CPU')
    print(f'[demo] best checkpoint: {ckpt}')
    for line in headline(metrics):
        print(f'[demo] mim test {line}')
    print(f'[demo] metrics: {osp.join(test_dir, "test_metrics.json")}')
    print(f'[demo] DetInferencer overlays: {osp.dirname(overlays[0])} '
          f'({len(overlays)} images)' if overlays else
          '[demo] DetInferencer overlays: none')
    print(f'[demo] logs: {work_dir}')
    return metrics


def _evaluator_options(config: str, root: str) -> List[str]:
    """Point the evaluators' annotation files at ``root``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config, import_custom_modules=False)
    evaluators = cfg.val_evaluator
    listed = isinstance(evaluators, (list, tuple))
    options = []
    for i, ev in enumerate(evaluators if listed else [evaluators]):
        for key in ('ann_file', 'seg_prefix'):
            if key in ev:
                tail = ev[key].split('annotations/', 1)[-1]
                for split in ('val', 'test'):
                    where = (f'{split}_evaluator.{i}.{key}' if listed
                             else f'{split}_evaluator.{key}')
                    options.append(f'{where}={root}annotations/{tail}')
    return options


def _draw(config: str, ckpt: str, root: str, out_dir: str,
          num_images: int = 4) -> List[str]:
    """``DetInferencer`` overlays (segments, labels, scores) of the first
    validation images; returns the PNG paths."""
    from mmdet.apis import DetInferencer

    import m2f_plugin  # noqa: F401
    images = sorted(glob.glob(osp.join(root, 'img_dir', 'val', '*.png')))
    inferencer = DetInferencer(model=config, weights=ckpt, device='cpu',
                               show_progress=False)
    # exactly a user's call: the config's M2FDetLocalVisualizer draws the
    # panoptic map alone (else the instances), see-through
    inferencer(images[:num_images], out_dir=out_dir, pred_score_thr=0.3,
               no_save_pred=True)
    return [osp.join(out_dir, 'vis', osp.basename(p))
            for p in images[:num_images]]
