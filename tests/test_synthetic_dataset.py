"""The embedded data set: deterministic, mmseg layout, real loaders.

The COCO instance / panoptic files are tested in ``tests/datasets``."""
from __future__ import annotations

import hashlib
import os.path as osp
import shutil

import numpy as np
from mmseg.registry import DATASETS

from m2f_plugin.datasets import (
    CLASSES,
    M2FSyntheticShapesDataset,
    generate_synthetic_shapes,
)


def _digest(root: str) -> str:
    h = hashlib.sha256()
    for sub in ('img_dir/train', 'ann_dir/train', 'img_dir/val', 'ann_dir/val'):
        for i in range(3):
            with open(osp.join(root, sub, f'{i:04d}.png'), 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def _digest_files(root: str, num: int = 2) -> str:
    h = hashlib.sha256()
    for sub in ('img_dir/train', 'ann_dir/train'):
        for i in range(num):
            with open(osp.join(root, sub, f'{i:04d}.png'), 'rb') as f:
                h.update(f.read())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_synthetic_shapes(str(tmp_path / 'a'), 3, 3, 64, seed=1)
    b = generate_synthetic_shapes(str(tmp_path / 'b'), 3, 3, 64, seed=1)
    c = generate_synthetic_shapes(str(tmp_path / 'c'), 3, 3, 64, seed=2)
    assert _digest(a) == _digest(b) != _digest(c)


def test_dataset_through_mmseg_pipeline(tmp_path):
    root = str(tmp_path / 'shapes')
    ds = DATASETS.build(dict(
        type='M2FSyntheticShapesDataset', data_root=root, num_train=30,
        num_val=4, size=64,
        data_prefix=dict(img_path='img_dir/train',
                         seg_map_path='ann_dir/train'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')]))
    assert len(ds) == 30
    assert ds.metainfo['classes'] == CLASSES and len(CLASSES) == 6
    assert len(ds.metainfo['palette']) == 6
    labels = np.concatenate([
        ds[i]['data_samples'].gt_sem_seg.data.numpy().ravel()
        for i in range(len(ds))])
    present = set(np.unique(labels).tolist())
    assert set(range(6)) <= present  # background + 5 foreground classes
    assert 255 in present  # ignore band around shapes
    assert present <= set(range(6)) | {255}
    img = ds[0]['inputs']
    assert img.shape == (3, 64, 64) and img.float().std() > 10


def test_generation_is_skipped_when_complete(tmp_path):
    root = str(tmp_path / 's')
    generate_synthetic_shapes(root, 2, 1, 32)
    marker = osp.join(root, '.complete')
    mtime = osp.getmtime(marker)
    M2FSyntheticShapesDataset(
        data_root=root, num_train=2, num_val=1, size=32,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'))
    assert osp.getmtime(marker) == mtime


def test_root_written_before_coco_files_is_completed(tmp_path):
    """A root whose marker predates the COCO files is regenerated: the
    annotations appear, the images and label maps come out the same."""
    root = str(tmp_path / 's')
    generate_synthetic_shapes(root, 2, 1, 32)
    before = _digest_files(root)
    shutil.rmtree(osp.join(root, 'annotations'))
    with open(osp.join(root, '.complete'), 'w') as f:
        f.write('2 1 32 0')  # the tag such roots carry
    generate_synthetic_shapes(root, 2, 1, 32)
    for split in ('train', 'val'):
        for kind in ('instances', 'panoptic'):
            assert osp.exists(osp.join(root, 'annotations',
                                       f'{kind}_{split}.json'))
    assert _digest_files(root) == before
