"""Command line: segment images, folders of images, or videos.

    python -m m2f_deploy MODEL.onnx INPUT [INPUT ...] --out DIR
        [--video] [--no-overlay] [--overwrite] [--task TASK] [--max-side N]

An INPUT is an image file or a folder (its images, sorted by name; not its
subfolders). Each image's result files are named after it (see
``m2f_deploy.results``). With ``--video`` each INPUT is a video file: every
frame is segmented and ``{stem}_overlay.mp4`` is written.

One line is printed per input. A bad input is reported (no traceback) and
the others are still processed; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import List, Optional, Sequence, Tuple

from .formats import check_targets, import_cv2, temporary_path
from .model import TASKS, Segmenter

__all__ = ['IMAGE_SUFFIXES', 'collect_images', 'segment_video', 'main']

IMAGE_SUFFIXES = ('.bmp', '.jpeg', '.jpg', '.jp2', '.pbm', '.pgm', '.png',
                  '.ppm', '.tif', '.tiff', '.webp')


def collect_images(inputs: Sequence[str]) -> List[str]:
    """Image files of the inputs, folders expanded (sorted, one level).

    Raises:
        FileNotFoundError: An input does not exist.
        ValueError: A folder holds no image.
    """
    files = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(path, n) for n in os.listdir(path)
                if n.lower().endswith(IMAGE_SUFFIXES)
                and os.path.isfile(os.path.join(path, n)))
            if not found:
                raise ValueError(f'{path}: no images in this folder (looked '
                                 f'for {", ".join(IMAGE_SUFFIXES)})')
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f'{path}: no such file or folder')
    return files


def segment_video(seg: Segmenter, path: str, out_dir: str,
                  overwrite: bool = False, score_thr: float = 0.3
                  ) -> Tuple[str, int, float]:
    """Segment every frame of a video and write the overlays as a video.

    Args:
        seg: The segmenter.
        path: Video file (anything ``cv2.VideoCapture`` reads).
        out_dir: Output folder; the video is ``{stem}_overlay.mp4`` there.
        overwrite: Replace an existing output video.
        score_thr: Instance models: draw instances scoring at least this.

    Returns:
        ``(written path, frames, frames per second)``, the speed counting
        reading, segmenting, drawing and encoding.
    """
    cv2 = import_cv2()
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such video file')
    stem = os.path.splitext(os.path.basename(path))[0]
    target = os.path.join(out_dir, f'{stem}_overlay.mp4')
    check_targets([target], overwrite)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f'{path}: OpenCV cannot open this as a video')
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and math.isfinite(fps) and fps > 0 else 25.0
    os.makedirs(out_dir, exist_ok=True)
    # mp4 suffix: OpenCV picks the container from the file name
    tmp = temporary_path(target, suffix='.tmp.mp4')
    writer, frames, start = None, 0, time.perf_counter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            drawn = _with_threshold(seg(frame), score_thr).overlay()
            if writer is None:
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*'mp4v'),
                                         fps, (drawn.shape[1], drawn.shape[0]))
                if not writer.isOpened():
                    raise RuntimeError(f'OpenCV cannot write {target} (mp4v)')
            writer.write(drawn)
            frames += 1
        if frames == 0:
            raise ValueError(f'{path}: no frame could be read')
        writer.release()
        writer = None
        os.replace(tmp, target)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if os.path.exists(tmp):
            os.remove(tmp)
    return target, frames, frames / max(time.perf_counter() - start, 1e-9)


def _with_threshold(result, score_thr: float):
    """The result, its overlay drawing instances from ``score_thr`` up."""
    if hasattr(result, 'draw_score_thr'):
        result.draw_score_thr = score_thr
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m m2f_deploy',
        description='Segment images, folders of images or videos with an '
        'exported Mask2Former ONNX model.')
    parser.add_argument('model', metavar='MODEL',
                        help='the .onnx model file')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='image files or folders; video files with '
                        '--video')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--video', action='store_true',
                        help='inputs are videos: write {stem}_overlay.mp4')
    parser.add_argument('--no-overlay', action='store_true',
                        help='write the result files only, no overlay image')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing output files')
    parser.add_argument('--task', choices=TASKS,
                        help='refuse a model of another task')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='instance overlays: draw instances scoring at '
                        'least this (the JSON keeps all; default 0.3)')
    parser.add_argument('--max-side', type=int, default=8192,
                        help='largest image side accepted (default 8192)')
    return parser


def _fail(message: str) -> int:
    print(f'error: {message}', file=sys.stderr)
    return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.video and args.no_overlay:
        return _fail('--video writes an overlay video; drop --no-overlay')
    try:
        files = list(args.inputs) if args.video else collect_images(args.inputs)
        names = [os.path.splitext(os.path.basename(f))[0] for f in files]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f'several inputs are named {", ".join(twice)}; '
                             'their results would share file names: run them '
                             'with different --out folders')
        seg = Segmenter(args.model, task=args.task, max_side=args.max_side)
    except (ImportError, OSError, ValueError) as exc:
        return _fail(str(exc))

    failed = 0
    for path, name in zip(files, names):
        try:
            if args.video:
                target, frames, speed = segment_video(
                    seg, path, args.out, args.overwrite, args.score_thr)
                print(f'{path}: {frames} frames at {speed:.1f} frames/s -> '
                      f'{target}')
            else:
                written = _with_threshold(seg(path), args.score_thr).save(
                    args.out, name, args.overwrite,
                    overlay=not args.no_overlay)
                print(f'{path} -> {", ".join(written)}')
        except (OSError, ValueError, RuntimeError) as exc:
            failed += 1
            message = str(exc)
            _fail(message if path in message else f'{path}: {message}')
    if failed:
        return _fail(f'{failed} of {len(files)} inputs failed')
    return 0
