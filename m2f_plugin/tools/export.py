"""Export a Mask2Former model to ONNX: raw image in, final result out.

    python -m m2f_plugin.tools.export CONFIG --checkpoint CKPT --out model.onnx
        [--task semantic|panoptic|instance] [--with-scores] [--whole]
        [--opset 17] [--check IMG ...]

Semantic models (mmseg ``EncoderDecoder`` + ``M2FHead``) export their label
map; mmdet ``Mask2Former`` models their panoptic map and segments (default
when ``panoptic_on``) or their instances (``--task instance``). The graph
takes a uint8 (H, W, 3) image of any size in the order the config's test
pipeline loads it and does the resize, normalisation, padding, model,
post-processing and the way back to (H, W). ``--check`` compares
onnxruntime with the PyTorch model's own prediction on each image and exits
1 when they disagree (see ``m2f_plugin.export.check``). docs/export.md has
the details.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import List, Optional

__all__ = ['main']


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a Mask2Former model to ONNX (image to result).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--checkpoint', default=None,
                        help='trained weights (none: random, for testing)')
    parser.add_argument('--out', required=True, help='the .onnx file')
    parser.add_argument('--task', choices=('semantic', 'panoptic', 'instance'),
                        default=None, help="default: the config's")
    parser.add_argument('--with-scores', action='store_true',
                        help='semantic: also output per-class scores')
    parser.add_argument('--whole', action='store_true',
                        help="export a mode='slide' config as whole-image "
                        'inference')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--check', nargs='+', default=None, metavar='IMG',
                        help='images to compare onnxruntime with PyTorch on')
    return parser.parse_args(argv)


def _check(path: str, loaded, images: List[str]) -> bool:
    import cv2
    import onnxruntime as ort

    from m2f_plugin.export.check import compare, torch_predict
    onnx_model = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    names = [o.name for o in onnx_model.get_outputs()]
    head = (loaded.model.decode_head if loaded.task == 'semantic'
            else loaded.model.panoptic_head)
    ok = True
    for file in images:
        image = cv2.imread(file, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'--check: cannot read image {file}')
        ours = dict(zip(names, onnx_model.run(None, {'image': image})))
        result = compare(loaded.task, ours, torch_predict(loaded, image),
                         head.num_classes)
        ok &= result['ok']
        shown = ', '.join(f'{k} {v:.6g}' if isinstance(v, float) else
                          f'{k} {v}' for k, v in result.items() if k != 'ok')
        print(f'[check] {file} {image.shape[0]}x{image.shape[1]}: {shown}'
              f'{"" if result["ok"] else "  <-- FAIL"}')
    print(f'[check] {len(images)} images -> {"OK" if ok else "FAIL"}')
    return bool(ok)


def _error(err: Exception) -> int:
    message = str(err)
    message = message[len('export: '):] if message.startswith('export: ') \
        else message
    print(f'[export] error: {message}', file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0 done, 1 the
    check found a disagreement, 2 bad input)."""
    args = _parse_args(argv)
    from m2f_plugin.export.exporter import export_model, load_model
    problems = [f'--check image not found: {p}' for p in args.check or ()
                if not osp.isfile(p)]
    if osp.isdir(args.out):
        problems.append(f'--out {args.out} is a folder; give the .onnx file '
                        'to write')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        problems.append(f'--checkpoint not found: {args.checkpoint}')
    if problems:  # before minutes of building and exporting
        return _error(ValueError('; '.join(problems)))
    try:
        loaded = load_model(args.config, args.checkpoint, args.task,
                            args.whole)
        if not args.checkpoint:
            print('[export] no --checkpoint: exporting random weights')
        info = export_model(loaded, args.out, args.with_scores, args.opset)
    except (ValueError, OSError, RuntimeError) as err:
        # RuntimeError: a checkpoint that does not fit the config's model
        return _error(err)
    print(f"[export] wrote {info['path']} ({info['bytes'] / 2**20:.1f} MiB, "
          f"{info['task']}, outputs {info['outputs']}, opset "
          f"{info['opset']}, {info['exporter']} exporter) in "
          f"{info['seconds']:.1f} s")
    if args.check:
        try:
            return 0 if _check(args.out, loaded, args.check) else 1
        except (ValueError, OSError) as err:
            return _error(err)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
