"""The generated COCO instance and panoptic files: deterministic, the label
maps unchanged, and all three annotations describing the same pixels."""
from __future__ import annotations

import hashlib
import os.path as osp

import cv2
import numpy as np
import pytest

from m2f_plugin.datasets import generate_synthetic_shapes
from m2f_plugin.datasets.synthetic_shapes import (
    BACKGROUND_CATEGORY_ID,
    IGNORE_INDEX,
    MIN_INSTANCE_AREA,
    PANOPTIC_CLASSES,
    THING_CLASSES,
    ShapeSample,
    draw_sample,
    id2rgb,
    mask_to_rle,
    sample_annotations,
)
from tests.datasets import read_split, rgb2id, tree_bytes
from tests.datasets.conftest import SMALL

mask_util = pytest.importorskip('pycocotools.mask')

# sha256[:16] of the images and label maps that the generator wrote for
# seed 0, 4 train + 3 val images of 64 px before it wrote COCO files: the
# decoded pixels (any OpenCV) and the PNG files (OpenCV 4.10's encoder)
_PIXELS = {
    'ann_dir/train/0000.png': '35340b2984780809',
    'ann_dir/train/0001.png': '6df6a9007d9da967',
    'ann_dir/train/0002.png': 'd4ddd3eef2e9897c',
    'ann_dir/train/0003.png': '3fbe7249f88aacc3',
    'ann_dir/val/0000.png': 'c58cd3ff28ffc96c',
    'ann_dir/val/0001.png': 'eb95399c87fc72f9',
    'ann_dir/val/0002.png': 'e0210da29352d826',
    'img_dir/train/0000.png': 'bec82094e0c4855c',
    'img_dir/train/0001.png': '8727abda81df3173',
    'img_dir/train/0002.png': 'f2836e65ae0b6db3',
    'img_dir/train/0003.png': 'f8529b5c4f046a54',
    'img_dir/val/0000.png': '95009270877b7a11',
    'img_dir/val/0001.png': '5d3e08c3df3643e3',
    'img_dir/val/0002.png': 'bbdf57b07f30879a',
}
_FILES = {
    'ann_dir/train/0000.png': '78c35dcddb546ffa',
    'ann_dir/train/0001.png': 'd83637d933d3ff8d',
    'ann_dir/train/0002.png': 'fb320b3d2c10d137',
    'ann_dir/train/0003.png': '1dcc300bbecc865c',
    'ann_dir/val/0000.png': '58cc0c6aab879a05',
    'ann_dir/val/0001.png': 'a94a4a5a44ca5409',
    'ann_dir/val/0002.png': 'd232f3fc1f396657',
    'img_dir/train/0000.png': 'cd8f8e9007700260',
    'img_dir/train/0001.png': '608378a3c01e8717',
    'img_dir/train/0002.png': '6283cc167e1c9bda',
    'img_dir/train/0003.png': 'e0f08c86b0012bf1',
    'img_dir/val/0000.png': 'be7d163b2673286e',
    'img_dir/val/0001.png': '3b9e82431bf0ba45',
    'img_dir/val/0002.png': 'ec4f884b5045cb17',
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def test_images_and_label_maps_unchanged(tmp_path):
    """The digests were taken before the generator learnt the COCO formats,
    on the OpenMMLab stack (OpenCV 4.10, NumPy 1.26). OpenCV 4.12 rasterises
    some shapes differently (the OneDL stack's data is its own, and
    deterministic: see the next test)."""
    if not (cv2.__version__.startswith('4.10.')
            and np.__version__.startswith('1.')):
        pytest.skip(f'digests recorded with OpenCV 4.10 / NumPy 1.x, not '
                    f'{cv2.__version__} / {np.__version__}')
    root = generate_synthetic_shapes(str(tmp_path), 4, 3, 64, seed=0)
    for rel, digest in _PIXELS.items():
        pixels = cv2.imread(osp.join(root, rel), cv2.IMREAD_UNCHANGED)
        assert _sha(pixels.tobytes()) == digest, rel
    for rel, digest in _FILES.items():
        with open(osp.join(root, rel), 'rb') as f:
            assert _sha(f.read()) == digest, rel


def test_every_file_deterministic_other_seed_differs(tmp_path, shapes_root):
    subdirs = ['img_dir', 'ann_dir', 'annotations']
    again = generate_synthetic_shapes(str(tmp_path / 'again'), **SMALL)
    other = generate_synthetic_shapes(str(tmp_path / 'other'),
                                      **dict(SMALL, seed=1))
    ref = tree_bytes(shapes_root, subdirs)
    assert len(ref) == 3 * (SMALL['num_train'] + SMALL['num_val']) + 4
    assert tree_bytes(again, subdirs) == ref
    differ = tree_bytes(other, subdirs)
    assert differ.keys() == ref.keys()
    assert all(differ[k] != ref[k] for k in ref if k.endswith('.json'))


def test_rle_matches_pycocotools():
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((7, 5), bool),
             rng.random((64, 48)) < 0.5, rng.random((33, 17)) < 0.05]
    edge = np.zeros((40, 40), bool)
    edge[0, 0] = edge[10:30, 5:35] = True  # first pixel set, long runs
    masks.append(edge)
    for mask in masks:
        ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = mask_to_rle(mask)
        assert ours == {'size': ref['size'],
                        'counts': ref['counts'].decode()}
        assert (mask_util.decode(dict(ours, counts=ours['counts'].encode()))
                == mask).all()


def test_id2rgb_round_trip():
    ids = np.array([[0, 1, 255], [256, 65_536 + 2, 256 ** 3 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert (rgb2id(rgb) == ids).all()
    assert rgb[1, 1].tolist() == [2, 0, 1]  # R + 256 G + 256^2 B


def test_categories_and_ids(shapes_root):
    for split, count in (('train', SMALL['num_train']),
                         ('val', SMALL['num_val'])):
        files = read_split(shapes_root, split)
        cats = files.instances['categories']
        assert [(c['id'], c['name']) for c in cats] == list(
            zip(range(1, 6), THING_CLASSES))
        pcats = files.panoptic['categories']
        assert [(c['id'], c['name'], c['isthing']) for c in pcats] == [
            (i + 1, n, int(i < 5)) for i, n in enumerate(PANOPTIC_CLASSES)]
        assert pcats[-1]['id'] == BACKGROUND_CATEGORY_ID
        images = files.instances['images']
        assert images == files.panoptic['images']
        assert [(im['id'], im['file_name'], im['width'], im['height'])
                for im in images] == [
            (i + 1, f'{i:04d}.png', SMALL['size'], SMALL['size'])
            for i in range(count)]
        assert [a['image_id'] for a in files.panoptic['annotations']] == [
            im['id'] for im in images]
        ann_ids = [a['id'] for a in files.instances['annotations']]
        seg_ids = [s['id'] for a in files.panoptic['annotations']
                   for s in a['segments_info']]
        assert min(seg_ids) >= 1 and len(set(seg_ids)) == len(seg_ids)
        assert set(ann_ids) <= set(seg_ids)


def _class_of(category_id: int) -> int:
    """Panoptic category id -> label in the semantic map."""
    return 0 if category_id == BACKGROUND_CATEGORY_ID else category_id


def test_semantic_instances_and_panoptic_agree(shapes_root):
    remnant_pixels = 0
    for split in ('train', 'val'):
        files = read_split(shapes_root, split)
        for pan_ann, label, seg in zip(files.panoptic['annotations'],
                                       files.labels, files.segment_ids):
            band = label == IGNORE_INDEX
            segments = {s['id']: s for s in pan_ann['segments_info']}
            assert set(np.unique(seg).tolist()) - {0} == set(segments)
            assert (seg[band] == 0).all()  # the ignore band is VOID
            painted = np.full_like(label, IGNORE_INDEX)
            for sid, s in segments.items():
                m = seg == sid
                painted[m] = _class_of(s['category_id'])
                assert s['area'] == int(m.sum()) and s['iscrowd'] == 0
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                assert s['bbox'] == mask_util.toBbox(rle).tolist()
            # the label map is the painted panoptic map wherever a segment
            # is; VOID is the band, or a dropped remnant (few pixels)
            assert (painted[seg > 0] == label[seg > 0]).all()
            remnant = (seg == 0) & ~band
            for cls in np.unique(label[remnant]).tolist():
                assert 1 <= cls <= 5
                n, comp = cv2.connectedComponents(
                    (remnant & (label == cls)).astype(np.uint8))
                sizes = np.bincount(comp.ravel())[1:]
                assert sizes.max() < MIN_INSTANCE_AREA
            remnant_pixels += int(remnant.sum())
            # each instance is a thing segment plus its band pixels
            anns = files.anns_of(pan_ann['image_id'])
            things = {sid for sid, s in segments.items()
                      if s['category_id'] != BACKGROUND_CATEGORY_ID}
            assert {a['id'] for a in anns} == things
            covered = np.zeros(label.shape, np.int64)
            for a in anns:
                rle = dict(a['segmentation'],
                           counts=a['segmentation']['counts'].encode())
                m = mask_util.decode(rle).astype(bool)
                covered += m
                assert a['category_id'] == segments[a['id']]['category_id']
                assert ((m & ~band) == (seg == a['id'])).all()
                assert a['area'] == int(m.sum()) and a['iscrowd'] == 0
                assert a['bbox'] == mask_util.toBbox(rle).tolist()
                assert set(np.unique(label[m]).tolist()) <= {
                    a['category_id'], IGNORE_INDEX}
            assert covered.max() <= 1  # visible pixels: no overlap
    assert remnant_pixels < 50  # dropped slivers are rare and tiny


def test_several_instances_of_a_class_and_occlusion(shapes_root):
    repeated = 0
    for split in ('train', 'val'):
        files = read_split(shapes_root, split)
        for image in files.instances['images']:
            cats = [a['category_id'] for a in files.anns_of(image['id'])]
            repeated += len(cats) != len(set(cats))
    assert repeated >= 3
    # occlusion: the files' instances are the drawn shapes' visible parts
    rng = np.random.default_rng(SMALL['seed'])
    occluded = 0
    for _ in range(SMALL['num_train']):
        sample = draw_sample(rng, SMALL['size'])
        for k, full in enumerate(sample.shape_masks):
            visible = int((sample.instance_map == k + 1).sum())
            occluded += 0 < visible < int(full.sum())
    assert occluded >= 5


def _toy_sample(size: int, shapes) -> ShapeSample:
    """A ``ShapeSample`` from (class, mask) pairs painted in order, with the
    generator's ignore band."""
    label = np.zeros((size, size), np.uint8)
    inst = np.zeros((size, size), np.uint8)
    edges = np.zeros((size, size), bool)
    for k, (cls, mask) in enumerate(shapes):
        label[mask], inst[mask] = cls, k + 1
        edges |= cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_GRADIENT,
                                  np.ones((3, 3), np.uint8)).astype(bool)
    label[edges] = IGNORE_INDEX
    return ShapeSample(np.zeros((size, size, 3), np.uint8), label, inst,
                       tuple(c for c, _ in shapes),
                       tuple(m for _, m in shapes))


def test_hidden_and_sliver_instances_dropped():
    size = 32
    hidden = np.zeros((size, size), bool)
    hidden[10:14, 10:14] = True
    cover = np.zeros((size, size), bool)
    cover[4:28, 4:24] = True
    sliver = np.zeros((size, size), bool)
    sliver[4:28, 4:28] = True  # under cover, 4 px wide strip visible
    sample = _toy_sample(size, [(1, hidden), (3, sliver), (2, cover)])
    instances, segments, seg = sample_annotations(sample, 7, first_id=5)
    # hidden: dropped; sliver: its strip x = 24..27 keeps 2 columns
    # outside the band (2 x 22 px)
    assert [(a['id'], a['category_id']) for a in instances] == [(5, 3),
                                                               (6, 2)]
    assert [(s['id'], s['category_id']) for s in segments] == [
        (5, 3), (6, 2), (7, BACKGROUND_CATEGORY_ID)]
    assert segments[0]['area'] == 44 == int((seg == 5).sum())
    strip = np.zeros((size, size), bool)
    strip[4:7, 24:28] = True  # 3 x 4 visible block: 2 core px, dropped
    cover2 = np.zeros((size, size), bool)
    cover2[4:28, 4:24] = True
    cover2[7:28, 24:28] = True
    sample = _toy_sample(size, [(4, strip), (2, cover2)])
    instances, segments, seg = sample_annotations(sample, 1, first_id=1)
    assert [a['category_id'] for a in instances] == [2]
    core = (sample.instance_map == 1) & (sample.label != IGNORE_INDEX)
    assert 0 < core.sum() < MIN_INSTANCE_AREA and (seg[core] == 0).all()
    assert (sample.label[core] == 4).all()  # label map keeps its class
