"""What a segmenter returns, one class per task, each able to draw itself and
write the task's standard result files.

``save(out_dir, name)`` writes (``{name}`` as given):

- semantic: ``{name}_labels.png`` (class index per pixel; uint8 for up to 255
  classes, else uint16);
- panoptic: ``{name}_panoptic.png`` (COCO panoptic PNG) and
  ``{name}_segments.json`` (its ``segments_info``);
- instance: ``{name}_instances.json`` (COCO results, masks as compressed RLE);

and, unless ``overlay=False``, ``{name}_overlay.png``. Class ids in the files
are the model's class indices (``category_id``), with the names beside them.
All files are prepared first, and none is written if any already exists
(unless ``overwrite=True``); each is written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import overlay as draw
from .formats import (
    check_targets,
    encode_rle,
    ids_to_rgb,
    json_bytes,
    png_bytes,
    write_bytes,
)

__all__ = ['SemanticResult', 'PanopticResult', 'InstanceResult']

Palette = Sequence[Sequence[int]]


class _ResultFiles:
    """Shared saving and drawing; subclasses provide ``_files`` and
    ``_draw``."""

    image: Optional[np.ndarray]
    _suffixes: ClassVar[Tuple[str, ...]] = ()  # the files ``_files`` encodes

    def _draw(self, image: np.ndarray, alpha: float) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        shapes = ', '.join(
            f'{k}={tuple(v.shape)}' for k, v in vars(self).items()
            if isinstance(v, np.ndarray) and k != 'image')
        return f'{type(self).__name__}({shapes}, {len(self.classes)} classes)'

    def _files(self, name: str) -> List[bytes]:
        raise NotImplementedError

    def overlay(self, image: Optional[np.ndarray] = None,
                alpha: float = 0.5) -> np.ndarray:
        """The result drawn over an image.

        Args:
            image: ``(H, W, 3)`` BGR uint8; by default the image the result
                was computed from.
            alpha: Opacity of the coloured masks.

        Returns:
            A new BGR uint8 image.
        """
        image = self.image if image is None else image
        if image is None:
            raise ValueError('this result holds no image: pass one, '
                             'result.overlay(image)')
        return self._draw(image, alpha)

    def save(self, out_dir: str, name: str, overwrite: bool = False,
             overlay: bool = True) -> List[str]:
        """Write the result files (see the module docstring).

        Args:
            out_dir: Folder, created if missing.
            name: File name prefix, e.g. the image's name without suffix.
            overwrite: Replace existing files of the same names; otherwise
                an existing one raises FileExistsError and nothing is
                written.
            overlay: Also write ``{name}_overlay.png``.

        Returns:
            The paths written.
        """
        suffixes = self._suffixes + (('overlay.png',) if overlay else ())
        paths = [os.path.join(out_dir, f'{name}_{s}') for s in suffixes]
        check_targets(paths, overwrite)
        data = self._files(name)  # all encoded before anything is written
        if overlay:
            data.append(png_bytes(self.overlay()))
        os.makedirs(out_dir, exist_ok=True)
        return [write_bytes(p, d) for p, d in zip(paths, data)]


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


# NumPy fields: no generated __eq__; a short repr (see _ResultFiles)
@dataclass(eq=False, repr=False)
class SemanticResult(_ResultFiles):
    """Semantic segmentation of one image.

    Attributes:
        labels: ``(H, W)`` int64 class index per pixel.
        classes: The K class names.
        palette: RGB colour per class.
        image: The BGR input image (for overlays), or None.
        scores: ``(K, H, W)`` float32 per-class scores, if the model was
            exported with them.
    """

    labels: np.ndarray
    classes: List[str]
    palette: Palette
    image: Optional[np.ndarray] = field(default=None, repr=False)
    scores: Optional[np.ndarray] = field(default=None, repr=False)
    _suffixes: ClassVar[Tuple[str, ...]] = ('labels.png',)

    def _draw(self, image: np.ndarray, alpha: float) -> np.ndarray:
        return draw.semantic_overlay(image, self.labels, self.classes,
                                     self.palette, alpha)

    def _files(self, name: str) -> List[bytes]:
        dtype = np.uint8 if len(self.classes) <= 255 else np.uint16
        info = np.iinfo(dtype)
        if self.labels.size and (self.labels.min() < info.min
                                 or self.labels.max() > info.max):
            raise ValueError(f'labels outside {info.min}..{info.max} do not '
                             f'fit a {np.dtype(dtype).name} PNG')
        return [png_bytes(self.labels.astype(dtype))]


# NumPy fields: no generated __eq__; a short repr (see _ResultFiles)
@dataclass(eq=False, repr=False)
class PanopticResult(_ResultFiles):
    """Panoptic segmentation of one image.

    Attributes:
        panoptic: ``(H, W)`` int32 segment id per pixel in mmdet's encoding
            (stuff: class index; thing: class + instance * offset; void: K).
        segments: One dict per segment, by id: ``id`` (its value in
            ``panoptic``), ``category_id`` (class index), ``category_name``,
            ``isthing``, ``score``, ``area`` (pixels).
        classes: The K class names.
        palette: RGB colour per class.
        image: The BGR input image (for overlays), or None.
    """

    panoptic: np.ndarray
    segments: List[Dict[str, Any]]
    classes: List[str]
    palette: Palette
    image: Optional[np.ndarray] = field(default=None, repr=False)
    _suffixes: ClassVar[Tuple[str, ...]] = ('panoptic.png', 'segments.json')

    def _draw(self, image: np.ndarray, alpha: float) -> np.ndarray:
        return draw.panoptic_overlay(image, self.panoptic, self.segments,
                                     self.palette, alpha)

    def to_coco(self, name: str) -> Tuple[np.ndarray, Dict[str, Any]]:
        """COCO panoptic form.

        Segments get new ids 1..N in order (a model's ids can be 0, which
        COCO reads as void); pixels of no segment are 0.

        Args:
            name: Image name, for ``image_id`` and ``file_name``.

        Returns:
            ``(ids, annotation)``: the ``(H, W)`` int64 COCO id map and
            ``{'image_id', 'file_name', 'segments_info'}``.
        """
        ids = np.zeros(self.panoptic.shape, np.int64)
        infos = []
        for coco_id, seg in enumerate(self.segments, start=1):
            mask = self.panoptic == seg['id']
            ids[mask] = coco_id
            ys, xs = np.nonzero(mask)
            bbox = ([int(xs.min()), int(ys.min()),
                     int(xs.max() - xs.min() + 1),
                     int(ys.max() - ys.min() + 1)] if len(xs) else [0] * 4)
            infos.append({
                'id': coco_id, 'category_id': int(seg['category_id']),
                'category_name': seg['category_name'], 'iscrowd': 0,
                'isthing': int(bool(seg['isthing'])), 'area': int(len(xs)),
                'bbox': bbox, 'score': float(seg['score'])})
        return ids, {'image_id': name, 'file_name': f'{name}_panoptic.png',
                     'segments_info': infos}

    def _files(self, name: str) -> List[bytes]:
        ids, annotation = self.to_coco(name)
        rgb = ids_to_rgb(ids)
        return [png_bytes(rgb[..., ::-1]), json_bytes(annotation)]  # BGR


# NumPy fields: no generated __eq__; a short repr (see _ResultFiles)
@dataclass(eq=False, repr=False)
class InstanceResult(_ResultFiles):
    """Instance segmentation of one image (N detections, N may be 0).

    Attributes:
        labels: ``(N,)`` int64 class indices.
        scores: ``(N,)`` float32 scores.
        boxes: ``(N, 4)`` float32 x1, y1, x2, y2 (x2, y2 exclusive).
        masks: ``(N, H, W)`` bool.
        classes: The K class names.
        palette: RGB colour per class.
        image: The BGR input image (for overlays), or None.
        draw_score_thr: Overlays draw only instances scoring at least this.
    """

    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    classes: List[str]
    palette: Palette
    image: Optional[np.ndarray] = field(default=None, repr=False)
    # overlays leave out the low-scoring tail (the JSON keeps everything:
    # COCO AP needs it); instance models return up to max_per_image results
    draw_score_thr: float = 0.3
    _suffixes: ClassVar[Tuple[str, ...]] = ('instances.json',)

    def _draw(self, image: np.ndarray, alpha: float) -> np.ndarray:
        return draw.instance_overlay(image, self.masks, self.boxes,
                                     self.labels, self.scores, self.classes,
                                     self.palette, alpha, self.draw_score_thr)

    def to_coco(self, name: str) -> List[Dict[str, Any]]:
        """COCO detection results (``bbox`` as x, y, w, h; masks as
        compressed RLE with string ``counts``); ``image_id`` is ``name``."""
        out = []
        for i in range(len(self.labels)):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            label = int(self.labels[i])
            out.append({
                'image_id': name, 'category_id': label,
                'category_name': _name(self.classes, label),
                'bbox': [x1, y1, x2 - x1, y2 - y1],
                'score': float(self.scores[i]),
                'segmentation': encode_rle(self.masks[i])})
        return out

    def _files(self, name: str) -> List[bytes]:
        return [json_bytes(self.to_coco(name))]
