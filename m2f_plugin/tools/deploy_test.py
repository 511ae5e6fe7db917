"""Evaluate an exported model as deployed, beside the PyTorch model.

    python -m m2f_plugin.tools.deploy_test CONFIG --checkpoint CKPT \\
        --onnx model.onnx [more.onnx ...] [--tol 0.1] [--max-images N]

Runs the config's own test dataloader and evaluator twice: once with the
PyTorch model (``test_step``, as ``tools/test.py``), once with onnxruntime on
each original image file (read as the test pipeline's loader reads it), and
prints the metrics side by side. The exit status is 1 when a metric differs
by more than ``--tol`` points (percentage points; COCO's 0..1 mask AP is
shown x100). A panoptic and an instance file of the same detector can be
given together; a metric whose predictions no given file makes (e.g. an
mmdet config's semantic metric) is left out and named.
"""
from __future__ import annotations

import argparse
import json
import numbers
import sys
import time
from typing import Dict, List, Optional

__all__ = ['main', 'deploy_test']

# which exported task feeds which metric (by the metric's type name)
_TASK_OF_METRIC = {
    'IoUMetric': 'semantic', 'CityscapesMetric': 'semantic',
    'CocoPanopticMetric': 'panoptic', 'CocoMetric': 'instance'}


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Evaluate exported ONNX models beside PyTorch.')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--onnx', nargs='+', required=True,
                        help='exported file(s) of this config')
    parser.add_argument('--tol', type=float, default=0.1,
                        help='largest metric difference accepted (points)')
    parser.add_argument('--max-images', type=int, default=None,
                        help='evaluate the first N test images only')
    parser.add_argument('--json', default=None,
                        help='also write the results to this JSON file')
    return parser.parse_args(argv)


def _onnx_models(paths: List[str], family: str) -> Dict[str, object]:
    """task -> (onnx_model, output names, channel order, class count), one
    per file."""
    import onnxruntime as ort

    from m2f_plugin.export.metadata import read_metadata
    found = {}
    for path in paths:
        meta = read_metadata(path)
        task = meta.get('m2f_task')
        if task is None:
            raise ValueError(f'{path} has no m2f_task metadata: it was not '
                             'exported by python -m m2f_plugin.tools.export')
        if (task == 'semantic') != (family == 'mmseg'):
            raise ValueError(f'{path} is a {task} model but the config is an '
                             f'{family} one: give the file exported from '
                             'this config')
        if task in found:
            raise ValueError(f'two {task} files given: {paths}')
        onnx_model = ort.InferenceSession(path,
                                       providers=['CPUExecutionProvider'])
        found[task] = (onnx_model, [o.name for o in onnx_model.get_outputs()],
                       meta.get('m2f_channel_order', 'bgr'),
                       len(json.loads(meta.get('m2f_classes', '[]'))))
    return found


def _as_predictions(task: str, out: Dict[str, object], sample) -> None:
    """Put one exported result on a data sample as the toolbox would."""
    import torch
    from mmengine.structures import InstanceData, PixelData
    if task == 'semantic':
        sample.pred_sem_seg = PixelData(
            data=torch.from_numpy(out['labels'])[None])
    elif task == 'panoptic':
        sample.pred_panoptic_seg = PixelData(
            sem_seg=torch.from_numpy(out['panoptic'])[None])
    else:
        sample.pred_instances = InstanceData(
            labels=torch.from_numpy(out['labels']),
            scores=torch.from_numpy(out['scores']),
            bboxes=torch.from_numpy(out['boxes']),
            masks=torch.from_numpy(out['masks']))


def _points(key: str, value: float) -> float:
    return 100.0 * value if key.startswith('coco/') else value


def deploy_test(config: str, checkpoint: str, onnx_files: List[str],
                max_images: Optional[int] = None) -> Dict[str, object]:
    """Metrics of the PyTorch model and of the exported files on the
    config's test set.

    Returns:
        ``torch`` and ``onnx`` (metric -> value in points), ``left_out``
        (metric types no file feeds), ``images``, ``torch_seconds`` and
        ``onnx_seconds`` (inference only).
    """
    import copy

    import cv2
    import torch
    from mmengine.config import Config
    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from m2f_plugin.export.exporter import load_model
    cfg = Config.fromfile(config)
    family = 'mmseg' if 'decode_head' in cfg.model else 'mmdet'
    onnx_models = _onnx_models(onnx_files, family)
    tasks = list(onnx_models)
    if family == 'mmdet':
        for task in tasks:
            cfg.model.test_cfg[f'{task}_on'] = True
    loaded = load_model(cfg, checkpoint, tasks[0])
    head = (loaded.model.decode_head if family == 'mmseg' else
            loaded.model.panoptic_head)
    for task, (*_, num_classes) in onnx_models.items():
        if num_classes != head.num_classes:
            raise ValueError(
                f'the {task} file predicts {num_classes} classes but this '
                f"config's model {head.num_classes}: give the file exported "
                'from this config')
    init_default_scope(family)
    metrics = cfg.test_evaluator
    metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
    used = [m for m in metrics
            if _TASK_OF_METRIC.get(m['type'].split('.')[-1]) in tasks]
    left_out = [m['type'] for m in metrics if m not in used]
    if not used:
        raise ValueError(f'no metric of {[m["type"] for m in metrics]} is fed '
                         f'by the given {tasks} file(s)')
    loader = Runner.build_dataloader(cfg.test_dataloader)
    evaluators = {name: Evaluator(copy.deepcopy(used))
                  for name in ('torch', 'onnx')}
    for ev in evaluators.values():
        ev.dataset_meta = loader.dataset.metainfo
    seconds = dict(torch=0.0, onnx=0.0)
    images = 0
    for batch in loader:
        samples = [s.clone() for s in batch['data_samples']]
        start = time.perf_counter()
        with torch.no_grad():
            outputs = loaded.model.test_step(batch)
        seconds['torch'] += time.perf_counter() - start
        evaluators['torch'].process(outputs, batch)
        for sample in samples:
            image = cv2.imread(sample.img_path, cv2.IMREAD_COLOR)
            for task, (onnx_model, names, order, _) in onnx_models.items():
                feed = image[..., ::-1].copy() if order == 'rgb' else image
                start = time.perf_counter()
                out = dict(zip(names, onnx_model.run(None, {'image': feed})))
                seconds['onnx'] += time.perf_counter() - start
                _as_predictions(task, out, sample)
        evaluators['onnx'].process(samples, batch)
        images += len(samples)
        if max_images and images >= max_images:
            break
    results = {name: {k: _points(k, float(v)) for k, v in
                      ev.evaluate(images).items()
                      if isinstance(v, numbers.Real)}
               for name, ev in evaluators.items()}
    return dict(results, left_out=left_out, images=images,
                torch_seconds=seconds['torch'], onnx_seconds=seconds['onnx'])


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse_args(argv)
    try:
        r = deploy_test(args.config, args.checkpoint, args.onnx,
                        args.max_images)
    except (ValueError, FileNotFoundError) as err:
        print(f'[deploy_test] error: {err}', file=sys.stderr)
        return 2
    worst = 0.0
    print(f"{'metric':<32} {'pytorch':>9} {'onnx':>9} {'diff':>8}")
    for key, ref in r['torch'].items():
        ours = r['onnx'].get(key, float('nan'))
        diff = ours - ref
        worst = max(worst, abs(diff)) if diff == diff else float('inf')
        print(f'{key:<32} {ref:9.3f} {ours:9.3f} {diff:+8.3f}')
    if r['left_out']:
        print(f"[deploy_test] left out (no exported file feeds them): "
              f"{r['left_out']}")
    print(f"[deploy_test] {r['images']} images; inference PyTorch "
          f"{r['torch_seconds']:.1f} s, onnxruntime {r['onnx_seconds']:.1f} s;"
          f' largest difference {worst:.3f} points (tol {args.tol})'
          f" -> {'OK' if worst <= args.tol else 'FAIL'}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(r, f, indent=1)
    return 0 if worst <= args.tol else 1


if __name__ == '__main__':
    raise SystemExit(main())
