"""Standard result formats, written safely.

- COCO's compressed RLE for binary masks (what ``pycocotools.mask.encode``
  returns), in NumPy, with its decoder.
- COCO panoptic PNGs: segment id ``= R + 256 * G + 256 ** 2 * B``.
- File writing that never leaves a half-written file and never replaces a file
  unless asked: each file is written under a temporary name in its folder and
  renamed over the target.

Only NumPy is needed at import; OpenCV is imported when a PNG is encoded.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Iterable, List

import numpy as np

__all__ = [
    'import_cv2', 'encode_rle', 'decode_rle', 'rle_area', 'ids_to_rgb',
    'rgb_to_ids', 'png_bytes', 'json_bytes', 'check_targets', 'write_bytes',
    'write_json', 'write_png', 'temporary_path'
]


def import_cv2():
    """Import OpenCV, or raise an ImportError that says how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            'm2f_deploy needs OpenCV to read images and write results: '
            '`pip install opencv-python` (or opencv-python-headless on a '
            f'server). ({exc})') from exc
    return cv2


# ---------------------------------------------------------------- COCO RLE
def _run_lengths(mask: np.ndarray) -> List[int]:
    """Run lengths of a mask read column by column, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order='F')
    if flat.size == 0:
        return []
    # positions where the value changes, plus both ends
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(edges).tolist()
    if flat[0]:
        counts.insert(0, 0)  # the first run counts zeros, here none
    return counts


def _counts_to_string(counts: List[int]) -> str:
    """COCO's text form of run lengths.

    From the fourth run on, each count is stored as the difference to the
    count two runs before (runs of the same value tend to be alike). Each
    number is then written in groups of 5 bits, least significant first; a
    character holds one group plus a 'more follows' bit (0x20) and is offset
    by 48 into printable ASCII. The last group of a number carries its sign
    in bit 0x10.
    """
    chars = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        while True:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative values end at -1
            done = value == -1 if group & 0x10 else value == 0
            chars.append(chr(48 + (group if done else group | 0x20)))
            if done:
                break
    return ''.join(chars)


def _string_to_counts(text: str) -> List[int]:
    """Inverse of :func:`_counts_to_string`."""
    counts: List[int] = []
    pos = 0
    while pos < len(text):
        value, shift = 0, 0
        while True:
            group = ord(text[pos]) - 48
            pos += 1
            value |= (group & 0x1F) << shift
            shift += 5
            if not group & 0x20:
                if group & 0x10:
                    value -= 1 << shift  # sign-extend
                break
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def encode_rle(mask: np.ndarray) -> Dict[str, Any]:
    """Encode a binary mask as COCO compressed RLE.

    Args:
        mask: ``(H, W)`` array; non-zero is foreground.

    Returns:
        ``{'size': [H, W], 'counts': str}``, the JSON-ready form of
        ``pycocotools.mask.encode`` (whose ``counts`` are bytes).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'expected a (H, W) mask, got shape {mask.shape}')
    return {'size': [int(mask.shape[0]), int(mask.shape[1])],
            'counts': _counts_to_string(_run_lengths(mask))}


def decode_rle(rle: Dict[str, Any]) -> np.ndarray:
    """Decode COCO RLE (compressed string/bytes or uncompressed list).

    Args:
        rle: ``{'size': [H, W], 'counts': ...}``.

    Returns:
        The ``(H, W)`` uint8 mask (0/1).
    """
    height, width = (int(v) for v in rle['size'])
    counts = rle['counts']
    if isinstance(counts, bytes):
        counts = counts.decode('ascii')
    if isinstance(counts, str):
        counts = _string_to_counts(counts)
    if sum(counts) != height * width:
        raise ValueError(f'RLE runs cover {sum(counts)} pixels, the size '
                         f'{height}x{width} has {height * width}')
    values = np.arange(len(counts)) % 2  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape((height, width), order='F')


def rle_area(rle: Dict[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE."""
    counts = rle['counts']
    if isinstance(counts, bytes):
        counts = counts.decode('ascii')
    if isinstance(counts, str):
        counts = _string_to_counts(counts)
    return int(sum(counts[1::2]))


# ----------------------------------------------------------- panoptic PNG
def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic colours of segment ids: ``id = R + 256 G + 256^2 B``.

    Args:
        ids: ``(H, W)`` non-negative integers below ``256 ** 3``.

    Returns:
        ``(H, W, 3)`` uint8, RGB order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256 ** 3):
        raise ValueError('panoptic ids must lie in 0 .. 256**3 - 1')
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2],
                    axis=-1).astype(np.uint8)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of a COCO panoptic image (``(H, W, 3)`` RGB) as int64."""
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


# ---------------------------------------------------------------- writing
def png_bytes(image: np.ndarray) -> bytes:
    """PNG file content of a uint8/uint16 ``(H, W)`` or BGR ``(H, W, 3)``."""
    cv2 = import_cv2()
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f'could not encode a {image.dtype} array of shape '
                         f'{image.shape} as PNG')
    return buf.tobytes()


def check_targets(paths: Iterable[str], overwrite: bool) -> None:
    """Raise FileExistsError for the first existing path unless ``overwrite``.

    Called for all files of a result before any is written, so a refusal
    leaves nothing half done.
    """
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise FileExistsError(
                f'{path} already exists; pass overwrite=True (command line: '
                '--overwrite) to replace it, or choose another output folder')


def temporary_path(path: str, suffix: str = '.tmp') -> str:
    """A new, empty file next to ``path`` (same folder, hidden name), for
    writing before renaming over ``path``."""
    folder, base = os.path.split(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=f'.{base}.', suffix=suffix,
                                   dir=folder)
    os.close(handle)
    # mkstemp makes the file private (0600); the result gets the mode any
    # new file would (0666 minus the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    Returns:
        ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _plain(obj: Any) -> Any:
    """NumPy scalars and arrays as plain Python values, for ``json``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f'{type(obj).__name__} is not JSON serializable')


def json_bytes(obj: Any) -> bytes:
    """``obj`` as UTF-8 JSON; NumPy scalars and arrays are allowed."""
    return json.dumps(obj, default=_plain, ensure_ascii=False).encode('utf-8')


def write_json(path: str, obj: Any) -> str:
    """Write ``obj`` as JSON (see :func:`json_bytes`), atomically."""
    return write_bytes(path, json_bytes(obj))


def write_png(path: str, image: np.ndarray) -> str:
    """Write an image (see :func:`png_bytes`) as PNG, atomically."""
    return write_bytes(path, png_bytes(image))
