"""A small "own" data set unlike the demo's: 96x64 JPEG images, COCO
category ids that are neither contiguous nor sorted, a panoptic JSON that
lists stuff first, random 24-bit segment ids; and a semantic set of label
maps with one label value never used.

Layouts::

    <coco>/images/{train,val}/img_NNNN.jpg
    <coco>/annotations/panoptic_{train,val}.json   (+ PNG folders of the same name)
    <coco>/annotations/instances_{train,val}.json
    <semantic>/img_dir/{train,val}/img_NNNN.jpg
    <semantic>/ann_dir/{train,val}/img_NNNN.png    (0 sky, 1 grass, 3 car, 4 person, 255 ignore)
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

from m2f_plugin.datasets.synthetic_shapes import id2rgb, mask_to_rle

__all__ = ['H', 'W', 'PANOPTIC_CATEGORIES', 'INSTANCE_CATEGORIES',
           'SEMANTIC_LABELS', 'write_coco', 'write_semantic', 'tree_hashes',
           'rgb2id']

H, W = 64, 96
# stuff listed first, ids neither contiguous nor sorted
PANOPTIC_CATEGORIES = [
    dict(id=130, name='sky', supercategory='s', isthing=0),
    dict(id=42, name='car', supercategory='t', isthing=1),
    dict(id=3, name='grass', supercategory='s', isthing=0),
    dict(id=7, name='person', supercategory='t', isthing=1),
]
# the instance JSON lists the things in another order than the panoptic one
INSTANCE_CATEGORIES = [dict(id=7, name='person', supercategory='t'),
                       dict(id=42, name='car', supercategory='t')]
SEMANTIC_LABELS = {'sky': 0, 'grass': 1, 'car': 3, 'person': 4}  # 2 unused


def _draw(rng: np.random.Generator) -> Tuple[np.ndarray, List[Tuple[str, np.ndarray]]]:
    """One BGR image and its (category name, visible mask) segments; the
    first two are the stuff, then the things (later ones occlude)."""
    yy, xx = np.mgrid[0:H, 0:W]
    horizon = int(rng.integers(24, 40))
    image = np.zeros((H, W, 3), np.float32)
    image[:horizon] = (230, 170, 90)  # BGR: sky blue
    image[horizon:] = (60, 170, 70)   # grass green
    owner = np.where(yy < horizon, 0, 1)
    names = ['sky', 'grass']
    for k in range(int(rng.integers(1, 4))):
        name = ('car', 'person')[int(rng.integers(0, 2))]
        cy, cx = int(rng.integers(12, H - 12)), int(rng.integers(14, W - 14))
        if name == 'car':
            mask = (abs(yy - cy) < 7) & (abs(xx - cx) < 13)
            image[mask] = (40, 40, 210)
        else:
            mask = ((yy - cy) / 11.0) ** 2 + ((xx - cx) / 5.0) ** 2 < 1
            image[mask] = (200, 60, 200)
        owner[mask] = len(names)
        names.append(name)
    image += rng.normal(0, 8, image.shape)
    segments = [(n, owner == i) for i, n in enumerate(names)]
    return np.clip(image, 0, 255).astype(np.uint8), [
        (n, m) for n, m in segments if m.any()]


def _bbox(mask: np.ndarray) -> List[int]:
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def write_coco(root: str, num_train: int = 6, num_val: int = 3,
               seed: int = 0) -> str:
    """Write the COCO instance + panoptic set under ``root``; returns it."""
    ids = {c['name']: c['id'] for c in PANOPTIC_CATEGORIES}
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(root, 'images', split)
        pan_dir = osp.join(root, 'annotations', f'panoptic_{split}')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(pan_dir, exist_ok=True)
        images, panoptic, instances = [], [], []
        for i in range(count):
            image, segments = _draw(rng)
            name = f'img_{i:04d}.jpg'
            cv2.imwrite(osp.join(img_dir, name), image)
            image_id = 1000 + 7 * i
            images.append(dict(id=image_id, file_name=name, height=H, width=W))
            seg_ids = np.zeros((H, W), np.int64)
            infos = []
            for cat, mask in segments:
                seg_id = int(rng.integers(1, 2 ** 24))
                seg_ids[mask] = seg_id
                infos.append(dict(id=seg_id, category_id=ids[cat],
                                  area=int(mask.sum()), bbox=_bbox(mask),
                                  iscrowd=0))
                if cat in ('car', 'person'):
                    instances.append(dict(
                        id=len(instances) + 1, image_id=image_id,
                        category_id=ids[cat], segmentation=mask_to_rle(mask),
                        area=int(mask.sum()), bbox=_bbox(mask), iscrowd=0))
            seg_ids[:, :2] = 0  # a VOID strip
            cv2.imwrite(osp.join(pan_dir, name.replace('.jpg', '.png')),
                        id2rgb(seg_ids)[..., ::-1])
            panoptic.append(dict(image_id=image_id, segments_info=infos,
                                 file_name=name.replace('.jpg', '.png')))
        with open(osp.join(root, 'annotations', f'panoptic_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=panoptic,
                           categories=PANOPTIC_CATEGORIES), f)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=instances,
                           categories=INSTANCE_CATEGORIES), f)
    return root


def write_semantic(root: str, num_train: int = 6, num_val: int = 3,
                   seed: int = 1) -> str:
    """Write the semantic set (mmseg's img_dir/ann_dir layout); returns it."""
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(count):
            image, segments = _draw(rng)
            label = np.full((H, W), 255, np.uint8)
            for cat, mask in segments:
                label[mask] = SEMANTIC_LABELS[cat]
            label[:, :2] = 255
            cv2.imwrite(osp.join(img_dir, f'img_{i:04d}.jpg'), image)
            cv2.imwrite(osp.join(ann_dir, f'img_{i:04d}.png'), label)
    return root


def tree_hashes(root: str) -> Dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> segment ids (H, W), ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
