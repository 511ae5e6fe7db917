"""A small, deterministic semantic-segmentation set of textured shapes.

Nothing is downloaded: the images and label maps are drawn from a seed and
written in the layout mmseg's ``BaseSegDataset`` reads::

    <root>/img_dir/{train,val}/NNNN.png   RGB images
    <root>/ann_dir/{train,val}/NNNN.png   label maps (0 = background, 255 = ignore)

Classes differ the way real classes do: by colour family, texture and shape.
Shapes overlap and vary in size; backgrounds are noisy gradients; a thin band
around every shape is ``ignore_index`` (ambiguous edge pixels).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

__all__ = ['CLASSES', 'PALETTE', 'M2FSyntheticShapesDataset',
           'generate_synthetic_shapes']

CLASSES = ('background', 'disc', 'square', 'triangle', 'ring', 'cross')
PALETTE = [[40, 40, 40], [220, 60, 60], [60, 200, 80], [70, 90, 230],
           [230, 210, 60], [200, 70, 210]]
# colour family (RGB centre) per foreground class; each shape jitters it
_COLOURS = np.array([[210, 50, 50], [50, 190, 70], [60, 80, 220],
                     [220, 200, 50], [190, 60, 200]], dtype=np.float32)
IGNORE_INDEX = 255
_DONE = '.complete'


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Noisy two-tone gradient, greyish with a tint, (H, W, 3) float32."""
    grey = rng.uniform(50, 160, (2, 1))
    c0, c1 = (grey + rng.uniform(-30, 30, (2, 3))).astype(np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)
    if rng.random() < 0.5:
        t = t[:, None] * np.ones((1, size), np.float32)
    else:
        t = np.ones((size, 1), np.float32) * t[None, :]
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return img + rng.normal(0, 12, (size, size, 3)).astype(np.float32)


def _shape_mask(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """Binary mask (H, W) uint8 of one shape of class ``cls`` (1..5)."""
    mask = np.zeros((size, size), np.uint8)
    r = int(rng.uniform(0.10, 0.28) * size)
    cx, cy = (int(v) for v in rng.uniform(r * 0.6, size - r * 0.6, 2))
    if cls == 1:  # disc
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif cls == 2:  # square, rotated
        box = cv2.boxPoints(((cx, cy), (2 * r, 2 * r), rng.uniform(0, 90)))
        cv2.fillPoly(mask, [box.astype(np.int32)], 1)
    elif cls == 3:  # triangle
        a0 = rng.uniform(0, 2 * np.pi)
        pts = [(cx + r * np.cos(a0 + k * 2 * np.pi / 3),
                cy + r * np.sin(a0 + k * 2 * np.pi / 3)) for k in range(3)]
        cv2.fillPoly(mask, [np.array(pts, np.int32)], 1)
    elif cls == 4:  # ring
        cv2.circle(mask, (cx, cy), r, 1, max(3, r // 3))
    else:  # cross
        w = max(3, r // 3)
        cv2.rectangle(mask, (cx - r, cy - w), (cx + r, cy + w), 1, -1)
        cv2.rectangle(mask, (cx - w, cy - r), (cx + w, cy + r), 1, -1)
    return mask


def _texture(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """Class colour with a per-shape jitter and a stripe/noise texture."""
    colour = _COLOURS[cls - 1] + rng.uniform(-35, 35, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(4, 9)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi /
                     period)
    tex = colour[None, None, :] * (1 + 0.15 * stripes[..., None])
    return tex + rng.normal(0, 10, (size, size, 3)).astype(np.float32)


def make_sample(rng: np.random.Generator,
                size: int = 128) -> Tuple[np.ndarray, np.ndarray]:
    """One (image RGB uint8 (H, W, 3), label uint8 (H, W)) pair."""
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    edges = np.zeros((size, size), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(int(rng.integers(2, 6))):  # later shapes occlude earlier
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(rng, cls, size).astype(bool)
        img[mask] = _texture(rng, cls, size)[mask]
        label[mask] = cls
        band = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT,
                                kernel)
        edges = np.maximum(edges, band)
    label[edges.astype(bool)] = IGNORE_INDEX
    return np.clip(img, 0, 255).astype(np.uint8), label


def generate_synthetic_shapes(root: str, num_train: int = 400,
                              num_val: int = 50, size: int = 128,
                              seed: int = 0, force: bool = False) -> str:
    """Write the data set under ``root`` (skipped if already complete).

    Args:
        root: Output folder.
        num_train: Training images.
        num_val: Validation images.
        size: Image side in pixels.
        seed: Seed; the same seed gives byte-identical files.
        force: Regenerate even if ``root`` is complete.

    Returns:
        ``root``.
    """
    marker = osp.join(root, _DONE)
    tag = f'{num_train} {num_val} {size} {seed}'
    if not force and osp.exists(marker) and open(marker).read() == tag:
        return root
    for split, count, split_seed in (('train', num_train, seed),
                                     ('val', num_val, seed + 10_000)):
        rng = np.random.default_rng(split_seed)
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            img, label = make_sample(rng, size)
            cv2.imwrite(osp.join(img_dir, f'{i:04d}.png'),
                        cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(osp.join(ann_dir, f'{i:04d}.png'), label)
    with open(marker, 'w') as f:
        f.write(tag)
    return root


@DATASETS.register_module()
class M2FSyntheticShapesDataset(BaseSegDataset):
    """The synthetic shapes set; generated into ``data_root`` on first use.

    Args:
        generate: Generate the data if ``data_root`` is not complete.
        num_train, num_val, size, seed: Passed to the generator.
        **kwargs: ``BaseSegDataset`` arguments (``data_root``,
            ``data_prefix``, ``pipeline``, ...).
    """

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, generate: bool = True, num_train: int = 400,
                 num_val: int = 50, size: int = 128, seed: int = 0,
                 **kwargs) -> None:
        if generate and kwargs.get('data_root'):
            generate_synthetic_shapes(kwargs['data_root'], num_train, num_val,
                                      size, seed)
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        kwargs.setdefault('reduce_zero_label', False)
        super().__init__(**kwargs)
