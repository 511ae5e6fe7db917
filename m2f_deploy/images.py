"""Images for a segmenter: read from a file, or checked when given as an
array, with one clear message for each way an image can be unusable.

A path is read with OpenCV as BGR (grey and RGBA files become BGR).
"""
from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from .formats import import_cv2

__all__ = ['MIN_SIDE', 'VIDEO_SUFFIXES', 'check_image', 'read_image']

MIN_SIDE = 8  # smaller images break the model's downsampling
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v')


def read_image(path: Union[str, 'os.PathLike[str]']) -> np.ndarray:
    """Read an image file as BGR uint8 ``(H, W, 3)`` (grey and RGBA files
    included).

    Raises:
        FileNotFoundError: No such file.
        ValueError: A folder, or a file OpenCV cannot read as an image.
    """
    cv2 = import_cv2()
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f'{path} is a folder, not an image file (the command '
                         'line takes folders: python -m m2f_deploy)')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image file not found: {path}')
    # np.fromfile + imdecode also reads paths cv2.imread cannot (non-ASCII)
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        video = os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES
        raise ValueError(f'could not read {path} as an image: ' + (
            'a video? the command line reads videos with --video' if video
            else 'not an image file, or a format OpenCV cannot decode'))
    return image


def check_image(image: Any, max_side: int = 8192) -> np.ndarray:
    """Check an image array; return it C-contiguous.

    Raises:
        TypeError: Not a NumPy array.
        ValueError: Not ``(H, W, 3)`` uint8, or a side outside
            ``8..max_side``; the message says how to fix it.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f'expected an image path or a NumPy array, got '
                        f'{type(image).__name__}')
    shape = image.shape
    if image.ndim == 2 or (image.ndim == 3 and shape[2] == 1):
        raise ValueError(
            f'got a grey image {shape}; the model needs 3 channels: '
            'cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)')
    if image.ndim == 3 and shape[2] == 4:
        raise ValueError(
            f'got a 4-channel (BGRA) image {shape}; drop the alpha channel: '
            'cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)')
    if image.ndim != 3 or shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) image, got shape {shape}')
    if image.dtype != np.uint8:
        how = 'np.clip(image, 0, 255).astype(np.uint8)'
        if image.dtype.kind == 'f':
            how = ('(np.clip(image, 0, 1) * 255).round().astype(np.uint8) '
                   f'for values in 0..1, {how} for values in 0..255')
        elif image.dtype == np.uint16:
            how = '(image // 257).astype(np.uint8) for 16-bit images'
        raise ValueError(f'got a {image.dtype} image; the model expects uint8 '
                         f'values 0..255: convert it, {how}')
    height, width = shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f'the image is {width}x{height} pixels; both sides '
                         f'must be at least {MIN_SIDE}')
    if max(height, width) > max_side:
        raise ValueError(
            f'the image is {width}x{height} pixels, larger than '
            f'max_side={max_side}: resize it (cv2.resize) or raise the '
            'limit, Segmenter(..., max_side=N)')
    return np.ascontiguousarray(image)
