"""A small, deterministic segmentation set of textured shapes.

Nothing is downloaded: the images and label maps are drawn from a seed and
written in the layouts mmseg's ``BaseSegDataset`` and mmdet's COCO data sets
read::

    <root>/img_dir/{train,val}/NNNN.png   RGB images
    <root>/ann_dir/{train,val}/NNNN.png   label maps (0 = background, 255 = ignore)
    <root>/annotations/instances_{train,val}.json   COCO instances (RLE masks)
    <root>/annotations/panoptic_{train,val}.json    COCO panoptic segments
    <root>/annotations/panoptic_{train,val}/NNNN.png  segment ids, RGB-encoded

Classes differ the way real classes do: by colour family, texture and shape.
Shapes overlap and vary in size; backgrounds are noisy gradients; a thin band
around every shape is ``ignore_index`` (ambiguous edge pixels).

The three annotations describe the same pixels. Every drawn shape is an
instance ("thing") of its class; later shapes occlude earlier ones, so an
instance's mask is its visible pixels. An instance is kept when at least
``MIN_INSTANCE_AREA`` of its visible pixels lie outside the ignore band
(fully occluded shapes and slivers that are nearly all edge are dropped from
the instance and panoptic files; the few pixels of such a sliver keep their
class in the label map and are VOID in the panoptic map). Panoptic segments
are the kept instances minus the band, plus one ``background`` stuff segment
(label 0); the band is VOID (segment id 0).
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import List, NamedTuple, Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from m2f_deploy.formats import encode_rle, ids_to_rgb

from ..utils.owned_folder import claim_folder, owns_folder, write_owned_file

__all__ = ['CLASSES', 'PALETTE', 'THING_CLASSES', 'STUFF_CLASSES',
           'PANOPTIC_CLASSES', 'THING_PALETTE', 'PANOPTIC_PALETTE',
           'BACKGROUND_CATEGORY_ID', 'MIN_INSTANCE_AREA', 'ShapeSample',
           'M2FSyntheticShapesDataset', 'draw_sample', 'make_sample',
           'sample_annotations', 'mask_to_rle', 'id2rgb',
           'generate_synthetic_shapes']

CLASSES = ('background', 'disc', 'square', 'triangle', 'ring', 'cross')
PALETTE = [[40, 40, 40], [220, 60, 60], [60, 200, 80], [70, 90, 230],
           [230, 210, 60], [200, 70, 210]]
# colour family (RGB centre) per foreground class; each shape jitters it
_COLOURS = np.array([[210, 50, 50], [50, 190, 70], [60, 80, 220],
                     [220, 200, 50], [190, 60, 200]], dtype=np.float32)
IGNORE_INDEX = 255
# COCO view: every shape class is a thing with category id = its label
# (1..5); ``background`` is the one stuff category, listed after the things
# (the order mmdet's panoptic heads expect: things first, then stuff)
THING_CLASSES = CLASSES[1:]
STUFF_CLASSES = CLASSES[:1]
PANOPTIC_CLASSES = THING_CLASSES + STUFF_CLASSES
# tuples: mmdet's visualizer takes a list as several colours
THING_PALETTE = [tuple(c) for c in PALETTE[1:]]
PANOPTIC_PALETTE = THING_PALETTE + [tuple(PALETTE[0])]
BACKGROUND_CATEGORY_ID = len(CLASSES)
# an instance needs this many visible pixels outside the ignore band; a
# smaller remnant is nearly all edge and no useful object
MIN_INSTANCE_AREA = 8
_DONE = '.complete'
# part of the completion tag: roots written before the COCO files existed
# are regenerated (their images and label maps come out the same)
_FORMAT = 'coco-1'


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


class ShapeSample(NamedTuple):
    """One drawn image with what is needed to annotate it.

    Attributes:
        image: RGB image, (H, W, 3) uint8.
        label: Label map, (H, W) uint8 (0 = background, 1..5 = classes,
            255 = ignore band).
        instance_map: Top-most shape per pixel, (H, W) uint8: 0 = none,
            ``k + 1`` = the ``k``-th drawn shape (its visible pixels).
        classes: Class (1..5) of each drawn shape, in draw order.
        shape_masks: Each drawn shape's full mask before occlusion, (H, W)
            bool, in draw order.
    """

    image: np.ndarray
    label: np.ndarray
    instance_map: np.ndarray
    classes: Tuple[int, ...]
    shape_masks: Tuple[np.ndarray, ...]


def draw_sample(rng: np.random.Generator, size: int = 128) -> ShapeSample:
    """Draw one image, its label map and its shapes (see ``ShapeSample``).

    Draws from ``rng`` in exactly the order ``make_sample`` always has, so a
    seed gives the same images and label maps as before.
    """
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    instance_map = np.zeros((size, size), np.uint8)
    edges = np.zeros((size, size), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    classes, shape_masks = [], []
    for k in range(int(rng.integers(2, 6))):  # later shapes occlude earlier
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(rng, cls, size).astype(bool)
        img[mask] = _texture(rng, cls, size)[mask]
        label[mask] = cls
        instance_map[mask] = k + 1
        classes.append(cls)
        shape_masks.append(mask)
        band = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT,
                                kernel)
        edges = np.maximum(edges, band)
    label[edges.astype(bool)] = IGNORE_INDEX
    return ShapeSample(np.clip(img, 0, 255).astype(np.uint8), label,
                       instance_map, tuple(classes), tuple(shape_masks))


def make_sample(rng: np.random.Generator,
                size: int = 128) -> Tuple[np.ndarray, np.ndarray]:
    """One (image RGB uint8 (H, W, 3), label uint8 (H, W)) pair."""
    sample = draw_sample(rng, size)
    return sample.image, sample.label


# COCO's RLE and panoptic colours, written once for the product (the
# runtime writes the same formats)
mask_to_rle = encode_rle
id2rgb = ids_to_rgb


def _bbox_xywh(mask: np.ndarray) -> List[int]:
    """COCO box ``[x, y, w, h]`` of a non-empty (H, W) mask (pixel counts,
    as pycocotools' ``toBbox``)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1),
            int(ys[-1] - ys[0] + 1)]


def sample_annotations(sample: ShapeSample, image_id: int, first_id: int
                       ) -> Tuple[List[dict], List[dict], np.ndarray]:
    """COCO instance and panoptic annotations of one sample.

    Args:
        sample: A drawn sample.
        image_id: COCO image id.
        first_id: First id to hand out; instance annotation ids and
            panoptic segment ids come from one counter, so a kept instance
            has the same id in both files (the background segment takes the
            next id). Must be > 0 (0 is VOID).

    Returns:
        ``(instances, segments_info, segment_ids)``: COCO instance
        annotations (visible pixels, RLE), panoptic ``segments_info`` and
        the (H, W) int32 segment id map (0 = VOID).
    """
    band = sample.label == IGNORE_INDEX
    segment_ids = np.zeros(sample.label.shape, np.int32)
    instances, segments = [], []
    next_id = first_id
    for k, cls in enumerate(sample.classes):
        visible = sample.instance_map == k + 1
        core = visible & ~band
        area = int(core.sum())
        if area < MIN_INSTANCE_AREA:
            continue
        instances.append({
            'id': next_id, 'image_id': image_id, 'category_id': cls,
            'segmentation': mask_to_rle(visible),
            'area': int(visible.sum()), 'bbox': _bbox_xywh(visible),
            'iscrowd': 0})
        segments.append({'id': next_id, 'category_id': cls, 'area': area,
                         'bbox': _bbox_xywh(core), 'iscrowd': 0})
        segment_ids[core] = next_id
        next_id += 1
    stuff = sample.label == 0
    if stuff.any():
        segments.append({'id': next_id,
                         'category_id': BACKGROUND_CATEGORY_ID,
                         'area': int(stuff.sum()), 'bbox': _bbox_xywh(stuff),
                         'iscrowd': 0})
        segment_ids[stuff] = next_id
    return instances, segments, segment_ids


def _categories(panoptic: bool) -> List[dict]:
    """COCO categories: the things (ids 1..5), then for panoptic the
    ``background`` stuff category."""
    names = PANOPTIC_CLASSES if panoptic else THING_CLASSES
    palette = PANOPTIC_PALETTE if panoptic else THING_PALETTE
    cats = []
    for name, colour in zip(names, palette):
        cat_id = (CLASSES.index(name) if name in THING_CLASSES else
                  BACKGROUND_CATEGORY_ID)
        cat = {'id': cat_id, 'name': name, 'supercategory': 'shape'}
        if panoptic:
            cat.update(isthing=int(name in THING_CLASSES), color=colour)
        cats.append(cat)
    return cats


# the generator writes only into folders it created (marker ``.<_OWNER>``)
_OWNER = 'm2f_synthetic_shapes'
_ANNOTATION_FILES = tuple(f'annotations/{kind}_{split}.json'
                          for kind in ('instances', 'panoptic')
                          for split in ('train', 'val'))
_OWN_DATA_FIX = (
    "To train on your own data, use the toolboxes' data set types instead of "
    "the synthetic ones: 'CocoPanopticDataset' (panoptic) or 'CocoDataset' "
    "(instance) from mmdet, 'BaseSegDataset' (semantic) from mmseg; "
    "`python -m m2f_plugin.tools.new_config` writes such a config "
    '(docs/own_data.md). To generate the synthetic set, point data_root at a '
    'new or empty folder, or set generate=False to read one that exists.')


def _write_json(root: str, relpath: str, obj: dict) -> None:
    # one ``dumps``: the fast C encoder; never over a file we did not write
    write_owned_file(root, _OWNER, relpath,
                     json.dumps(obj, separators=(',', ':')).encode())


def generate_synthetic_shapes(root: str, num_train: int = 400,
                              num_val: int = 50, size: int = 128,
                              seed: int = 0, force: bool = False) -> str:
    """Write the data set under ``root`` (skipped if already complete).

    Writes the images, the label maps and the COCO instance and panoptic
    annotations (layout in the module docstring). Image ids are the file
    index + 1; instance annotation ids and panoptic segment ids are unique
    within a split, and a kept instance has the same id in both.

    Args:
        root: Output folder.
        num_train: Training images.
        num_val: Validation images.
        size: Image side in pixels.
        seed: Seed; the same seed gives byte-identical files.
        force: Regenerate even if ``root`` is complete.

    Returns:
        ``root``.

    Raises:
        FolderNotOursError: ``root`` is a non-empty folder the generator did
            not create, or one of its annotation files is not the
            generator's own. Nothing is written then.
    """
    marker = osp.join(root, _DONE)
    tag = f'{num_train} {num_val} {size} {seed} {_FORMAT}'
    if (not force and owns_folder(root, _OWNER) and osp.exists(marker)
            and open(marker).read() == tag):
        return root
    claim_folder(root, _OWNER, 'synthetic shapes', _OWN_DATA_FIX,
                 legacy_marker=_DONE, legacy_files=_ANNOTATION_FILES)
    ann_root = osp.join(root, 'annotations')
    for split, count, split_seed in (('train', num_train, seed),
                                     ('val', num_val, seed + 10_000)):
        rng = np.random.default_rng(split_seed)
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        pan_dir = osp.join(ann_root, f'panoptic_{split}')
        for d in (img_dir, ann_dir, pan_dir):
            os.makedirs(d, exist_ok=True)
        images, instances, panoptic = [], [], []
        next_id = 1  # annotation / segment ids unique within the split
        for i in range(count):
            sample = draw_sample(rng, size)
            name = f'{i:04d}.png'
            cv2.imwrite(osp.join(img_dir, name),
                        cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(osp.join(ann_dir, name), sample.label)
            image_id = i + 1  # COCO ids start at 1
            anns, segments, segment_ids = sample_annotations(
                sample, image_id, next_id)
            next_id += len(segments)
            cv2.imwrite(osp.join(pan_dir, name), id2rgb(segment_ids)[..., ::-1])
            images.append({'id': image_id, 'file_name': name, 'width': size,
                           'height': size})
            instances.extend(anns)
            panoptic.append({'image_id': image_id, 'file_name': name,
                             'segments_info': segments})
        _write_json(root, f'annotations/instances_{split}.json',
                    {'images': images, 'annotations': instances,
                     'categories': _categories(panoptic=False)})
        _write_json(root, f'annotations/panoptic_{split}.json',
                    {'images': images, 'annotations': panoptic,
                     'categories': _categories(panoptic=True)})
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
