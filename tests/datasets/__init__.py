"""Helpers for the data set tests: read a generated split back from disk."""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, List, NamedTuple

import cv2
import numpy as np


class SplitFiles(NamedTuple):
    """A generated split as written: per image (by file index) the label
    map (H, W) uint8, the panoptic segment ids (H, W) int64 and the
    annotations, plus both JSON files."""

    labels: List[np.ndarray]
    segment_ids: List[np.ndarray]
    instances: dict
    panoptic: dict

    def anns_of(self, image_id: int) -> List[dict]:
        """Instance annotations of one image."""
        return [a for a in self.instances['annotations']
                if a['image_id'] == image_id]


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> segment ids (H, W), ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


def read_split(root: str, split: str) -> SplitFiles:
    """Read one split's label maps, panoptic PNGs and JSON files."""
    ann = osp.join(root, 'annotations')
    with open(osp.join(ann, f'instances_{split}.json')) as f:
        instances = json.load(f)
    with open(osp.join(ann, f'panoptic_{split}.json')) as f:
        panoptic = json.load(f)
    labels, segment_ids = [], []
    for img in instances['images']:
        name = img['file_name']
        labels.append(cv2.imread(osp.join(root, 'ann_dir', split, name),
                                 cv2.IMREAD_UNCHANGED))
        bgr = cv2.imread(osp.join(ann, f'panoptic_{split}', name),
                         cv2.IMREAD_COLOR)
        segment_ids.append(rgb2id(bgr[..., ::-1]))
    return SplitFiles(labels, segment_ids, instances, panoptic)


def tree_bytes(root: str, subdirs: List[str]) -> Dict[str, bytes]:
    """Relative path -> file bytes for every file under ``subdirs``."""
    out = {}
    for sub in subdirs:
        for dirpath, _, files in os.walk(osp.join(root, sub)):
            for name in files:
                path = osp.join(dirpath, name)
                with open(path, 'rb') as f:
                    out[osp.relpath(path, root)] = f.read()
    return out
