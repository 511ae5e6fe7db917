"""The embedded data set: deterministic, mmseg layout, real loaders.

The COCO instance / panoptic files are tested in ``tests/datasets``."""
from __future__ import annotations

import hashlib
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from mmseg.registry import DATASETS

from m2f_plugin.datasets import (
    CLASSES,
    M2FSyntheticShapesDataset,
    generate_synthetic_shapes,
)
from m2f_plugin.utils import FolderNotOursError


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


def _tree_bytes(root: str) -> dict:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def _users_coco_folder(root: str) -> dict:
    """A user's own COCO panoptic layout: a JSON and one image."""
    os.makedirs(osp.join(root, 'annotations'))
    os.makedirs(osp.join(root, 'img_dir', 'train'))
    with open(osp.join(root, 'annotations', 'panoptic_train.json'), 'w') as f:
        f.write('{"images": [], "annotations": [], "categories": '
                '[{"id": 7, "name": "mine", "isthing": 1}]}')
    with open(osp.join(root, 'img_dir', 'train', '0000.png'), 'wb') as f:
        f.write(b'not really a png, but the user\'s bytes')
    return _tree_bytes(root)


@pytest.mark.parametrize('dataset_type', [
    'M2FSyntheticShapesDataset', 'M2FSyntheticShapesPanopticDataset',
    'M2FSyntheticShapesCocoDataset'])
def test_users_folder_is_never_written(tmp_path, dataset_type):
    """The demo's data-set type pointed at a user's folder writes nothing
    there and says which data-set type to use instead."""
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmengine.registry import DefaultScope
    root = str(tmp_path / 'my_data')
    before = _users_coco_folder(root)
    semantic = dataset_type == 'M2FSyntheticShapesDataset'
    cfg = dict(type=dataset_type, data_root=root, num_train=2, num_val=1,
               size=32, pipeline=[])
    if not semantic:
        cfg['split'] = 'train'
    with pytest.raises(FolderNotOursError) as err, \
            DefaultScope.overwrite_default_scope(
                'mmseg' if semantic else 'mmdet'):
        (DATASETS if semantic else MMDET_DATASETS).build(cfg)
    assert _tree_bytes(root) == before  # not a byte changed or added
    msg = str(err.value)
    assert repr(root) in msg
    for fix in ('CocoPanopticDataset', 'CocoDataset', 'BaseSegDataset',
                'm2f_plugin.tools.new_config', 'new or empty folder'):
        assert fix in msg


def test_annotation_file_not_written_by_the_generator_is_kept(tmp_path):
    """In a folder the generator made, a JSON the user put there (or edited)
    is not replaced on regeneration."""
    root = str(tmp_path / 's')
    generate_synthetic_shapes(root, 2, 1, 32)
    ann = osp.join(root, 'annotations', 'panoptic_train.json')
    with open(ann, 'w') as f:
        f.write('{"my": "own annotations"}')
    with pytest.raises(FolderNotOursError, match='panoptic_train.json'):
        generate_synthetic_shapes(root, 3, 1, 32)  # another size: regenerates
    with open(ann) as f:
        assert f.read() == '{"my": "own annotations"}'


def test_own_folder_regenerates_and_empty_folder_is_claimed(tmp_path):
    """The generator's own folder is regenerated for another size; an empty
    existing folder is claimed; a legacy folder (``.complete`` only) is
    still the generator's."""
    root = str(tmp_path / 's')
    generate_synthetic_shapes(root, 2, 1, 32)
    generate_synthetic_shapes(root, 3, 1, 32)
    assert osp.exists(osp.join(root, 'img_dir', 'train', '0002.png'))
    empty = tmp_path / 'empty'
    empty.mkdir()
    generate_synthetic_shapes(str(empty), 1, 1, 32)
    assert (empty / 'annotations' / 'instances_val.json').exists()
    legacy = str(tmp_path / 'legacy')
    generate_synthetic_shapes(legacy, 1, 1, 32)
    os.remove(osp.join(legacy, '.m2f_synthetic_shapes'))
    generate_synthetic_shapes(legacy, 2, 1, 32)
    assert osp.exists(osp.join(legacy, 'img_dir', 'train', '0001.png'))


def test_refusal_through_the_tool(tmp_path, capsys):
    from m2f_plugin.tools.make_synthetic_data import main
    root = str(tmp_path / 'mine')
    before = _users_coco_folder(root)
    with pytest.raises(FolderNotOursError):
        main(['--out', root, '--num-train', '1', '--num-val', '1',
              '--size', '32', '--force'])
    assert _tree_bytes(root) == before
