"""CPU speed of an exported model against the PyTorch model, side by side.

    python -m m2f_plugin.tools.benchmark_export --preset cpu \\
        [--checkpoint TASK=CKPT ...] [--out results.json]

For each case: the file is exported (random weights unless a checkpoint is
given for its task), then onnxruntime's ``run`` on the raw image and the
PyTorch model's whole prediction (test pipeline, ``test_step`` with its
data preprocessor and post-processing, as ``torch_predict``) are timed in
alternation on the same image, after one warm-up each; the ratio is of the
medians. A second part times the panoptic post-processing alone on the same
logits: mmdet's ``MaskFormerFusionHead`` (its mask upsampling included),
ours eagerly (``M2FFusionHead``) and ours inside an ONNX graph.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import statistics
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

__all__ = ['PRESETS', 'main']

_DEMO = 'configs/demo/mask2former_r18-tiny_1xb8-{}-128x128.py'
# (name, config, task, image (H, W))
PRESETS = dict(
    cpu=[
        ('demo semantic', _DEMO.format('300it_synthetic'), 'semantic',
         (128, 128)),
        ('demo panoptic', _DEMO.format('600it_synthetic-panoptic'),
         'panoptic', (128, 128)),
        ('demo instance', _DEMO.format('600it_synthetic-instance'),
         'instance', (128, 128)),
        ('R-50 ADE20K semantic',
         'configs/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
         'semantic', (512, 512)),
        ('R-50 COCO panoptic',
         'configs/mask2former_coco/mask2former_r50_8xb2-lsj-50e_coco-'
         'panoptic.py', 'panoptic', (800, 1333)),
    ],
    smoke=[('demo semantic', _DEMO.format('300it_synthetic'), 'semantic',
            (128, 128))])


def _alternate(first: Callable[[], object], second: Callable[[], object],
               repeats: int) -> Dict[str, float]:
    """Median seconds of each, timed in alternation after a warm-up."""
    first(), second()
    times: Dict[str, List[float]] = dict(first=[], second=[])
    for _ in range(repeats):
        for name, fn in (('first', first), ('second', second)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _image(h: int, w: int) -> np.ndarray:
    """Smooth random blobs: a stand-in photo (uint8 BGR)."""
    import cv2
    rng = np.random.RandomState(0)
    small = rng.randint(0, 256, (max(h // 16, 2), max(w // 16, 2), 3))
    return cv2.resize(small.astype(np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)


def _model_case(name: str, config: str, task: str, size, checkpoint,
                repeats: int, folder: str) -> Dict[str, object]:
    import onnxruntime as ort

    from m2f_plugin.export.check import torch_predict
    from m2f_plugin.export.exporter import export_model, load_model
    torch.manual_seed(0)
    loaded = load_model(config, checkpoint, task)
    path = osp.join(folder, f'{task}.onnx')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        info = export_model(loaded, path)
    onnx_model = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    image = _image(*size)
    with torch.no_grad():
        t = _alternate(lambda: onnx_model.run(None, {'image': image}),
                       lambda: torch_predict(loaded, image), repeats)
    os.remove(path)
    return dict(case=name, task=task, image=list(size),
                weights='checkpoint' if checkpoint else 'random',
                export_seconds=round(info['seconds'], 2),
                file_mib=round(info['bytes'] / 2**20, 1),
                onnxruntime_s=t['first'], pytorch_s=t['second'],
                speedup=t['second'] / t['first'])


class _PanopticOnly(torch.nn.Module):
    """The in-graph panoptic post-processing on its own; ``sizes`` (6,)
    int64: padded H, W, image h, w, output H, W."""

    def __init__(self, num_things: int) -> None:
        super().__init__()
        self.num_things = num_things

    def forward(self, cls_logits, mask_logits, sizes):
        from m2f_plugin.postprocess import MaskGeometry, panoptic_fusion
        s = sizes
        geometry = MaskGeometry((s[0], s[1]), (s[2], s[3]), (s[4], s[5]))
        return panoptic_fusion(cls_logits, mask_logits, geometry,
                               self.num_things, masks_per_step=0)


def _postprocess_case(repeats: int, folder: str) -> Dict[str, object]:
    """COCO-sized logits: 100 queries, 133 classes, 30 confident, masks at
    stride 4 of an 800x1088 padded input, results at 800x1067."""
    import onnxruntime as ort
    from mmdet.models.seg_heads.panoptic_fusion_heads import MaskFormerFusionHead
    from mmdet.structures import DetDataSample
    from mmengine.config import ConfigDict

    from m2f_plugin.models.heads.fusion_head import M2FFusionHead
    g = torch.Generator().manual_seed(0)
    things, stuff, queries = 80, 53, 100
    cls = torch.randn(queries, things + stuff + 1, generator=g)
    cls[:30, :things] += torch.eye(30, things) * 12  # 30 confident things
    masks = torch.randn(queries, 200, 272, generator=g) * 3
    meta = dict(batch_input_shape=(800, 1088), img_shape=(800, 1067),
                ori_shape=(800, 1067))
    sample = DetDataSample(metainfo=meta)
    test_cfg = ConfigDict(panoptic_on=True, instance_on=False,
                          object_mask_thr=0.8, iou_thr=0.8)
    kw = dict(num_things_classes=things, num_stuff_classes=stuff,
              test_cfg=test_cfg)
    mmdet_head, ours = MaskFormerFusionHead(**kw), M2FFusionHead(**kw)

    def mmdet_path():  # mmdet's head upsamples every mask to the input
        up = torch.nn.functional.interpolate(
            masks[None], size=(800, 1088), mode='bilinear',
            align_corners=False)
        return mmdet_head.predict(cls[None], up, [sample], rescale=True)

    path = osp.join(folder, 'panoptic_post.onnx')
    sizes = torch.tensor([800, 1088, 800, 1067, 800, 1067])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(_PanopticOnly(things), (cls, masks, sizes), path,
                          input_names=['cls', 'masks', 'sizes'],
                          opset_version=17, dynamo=False)
    onnx_model = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    feed = dict(cls=cls.numpy(), masks=masks.numpy(), sizes=sizes.numpy())
    with torch.no_grad():
        a = _alternate(mmdet_path, lambda: onnx_model.run(None, feed), repeats)
        b = _alternate(lambda: ours.predict(cls[None], masks[None], [sample],
                                            rescale=True),
                       lambda: onnx_model.run(None, feed), repeats)
    return dict(case='panoptic post-processing, 100 queries, 800x1067',
                mmdet_fusion_head_s=a['first'], ours_eager_s=b['first'],
                ours_onnxruntime_s=statistics.median([a['second'],
                                                      b['second']]),
                onnxruntime_vs_mmdet=a['first'] / a['second'])


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='cpu')
    parser.add_argument('--checkpoint', nargs='*', default=[],
                        metavar='TASK=CKPT',
                        help='trained weights for the demo case of a task')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default=None, help='results JSON')
    args = parser.parse_args(argv)
    checkpoints = dict(c.split('=', 1) for c in args.checkpoint)
    results = dict(torch=torch.__version__, threads=torch.get_num_threads(),
                   cases=[])
    with tempfile.TemporaryDirectory() as folder:
        for name, config, task, size in PRESETS[args.preset]:
            ckpt = checkpoints.get(task) if name.startswith('demo') else None
            r = _model_case(name, config, task, size, ckpt, args.repeats,
                            folder)
            print(f"[benchmark_export] {name} {size[0]}x{size[1]}: "
                  f"onnxruntime {r['onnxruntime_s'] * 1e3:.0f} ms, PyTorch "
                  f"{r['pytorch_s'] * 1e3:.0f} ms -> {r['speedup']:.2f}x "
                  f"(export {r['export_seconds']} s, {r['file_mib']} MiB)",
                  flush=True)
            results['cases'].append(r)
        if args.preset != 'smoke':
            r = _postprocess_case(args.repeats, folder)
            print(f"[benchmark_export] {r['case']}: mmdet "
                  f"{r['mmdet_fusion_head_s'] * 1e3:.0f} ms, ours eager "
                  f"{r['ours_eager_s'] * 1e3:.0f} ms, ours onnxruntime "
                  f"{r['ours_onnxruntime_s'] * 1e3:.0f} ms", flush=True)
            results['postprocess'] = r
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
