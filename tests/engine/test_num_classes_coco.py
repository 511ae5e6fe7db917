"""The class-count check on real mmdet data sets, heads and COCO metrics.

Every mistake below used to train for a whole validation interval and then
fail inside mmdet's metric (or score the wrong classes); each is now refused
before step 1 with the config key to fix.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
import re

import pytest
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope

from m2f_plugin.datasets import generate_synthetic_shapes
from m2f_plugin.engine import check_num_classes
from tests.helpers import CONFIGS

PANOPTIC = osp.join(CONFIGS, 'demo',
                    'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')
THINGS = ('disc', 'square', 'triangle', 'ring', 'cross')


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> str:
    return generate_synthetic_shapes(
        str(tmp_path_factory.mktemp('coco') / 'shapes'), 2, 2, 32)


@pytest.fixture(scope='module')
def detector():
    from mmdet.registry import MODELS
    cfg = Config.fromfile(PANOPTIC)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model)


def _dataset(root: str, ann_file: str, **metainfo):
    from mmdet.registry import DATASETS
    cfg = dict(type='CocoPanopticDataset', data_root=root, ann_file=ann_file,
               data_prefix=dict(img='img_dir/val/',
                                seg='annotations/panoptic_val/'),
               test_mode=True, pipeline=[])
    cfg['metainfo'] = metainfo or dict(
        classes=THINGS + ('background',), thing_classes=THINGS,
        stuff_classes=('background',))
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(cfg)


def _reordered_json(root: str, tmp_path, move_first: str = 'background',
                    thing_flip: str = '') -> str:
    """A copy of the panoptic val JSON with ``move_first`` listed first and
    ``thing_flip``'s ``isthing`` inverted."""
    with open(osp.join(root, 'annotations', 'panoptic_val.json')) as f:
        data = json.load(f)
    cats = data['categories']
    cats.sort(key=lambda c: c['name'] != move_first)
    for cat in cats:
        if cat['name'] == thing_flip:
            cat['isthing'] = 1 - cat['isthing']
    out = tmp_path / 'panoptic_val_reordered.json'
    out.write_text(json.dumps(data))
    return str(out)


def _evaluator(dataset, ann_file: str, seg_prefix: str):
    with DefaultScope.overwrite_default_scope('mmdet'):
        ev = Evaluator([dict(type='CocoPanopticMetric', ann_file=ann_file,
                             seg_prefix=seg_prefix)])
    ev.dataset_meta = dataset.metainfo
    return ev


def test_consistent_demo_passes(root, detector):
    ds = _dataset(root, 'annotations/panoptic_val.json')
    ev = _evaluator(ds, osp.join(root, 'annotations', 'panoptic_val.json'),
                    osp.join(root, 'annotations', 'panoptic_val'))
    check_num_classes(detector, ds, 'val_dataloader', ev, 'val_evaluator')


def test_fusion_head_left_at_mmdet_defaults_is_refused(root, detector):
    """The forgotten fusion-head counts: was ``KeyError: 6`` at the first
    validation, inside mmdet's panoptic metric."""
    broken = copy.deepcopy(detector)
    broken.panoptic_fusion_head.num_things_classes = 80
    broken.panoptic_fusion_head.num_stuff_classes = 53
    with pytest.raises(ValueError) as err:
        check_num_classes(broken, _dataset(root, 'annotations/panoptic_val.json'))
    msg = str(err.value)
    assert 'model.panoptic_fusion_head has num_things_classes=80' in msg
    assert 'Set model.panoptic_fusion_head num_things_classes=5, ' \
           'num_stuff_classes=1' in msg


def test_json_listing_stuff_first_is_refused(root, detector, tmp_path):
    """mmdet numbers labels in the JSON's order: stuff listed first makes
    label 0 the stuff class while metainfo says 'disc'."""
    ann = _reordered_json(root, tmp_path)
    with pytest.raises(ValueError) as err:
        check_num_classes(detector, _dataset(root, ann), 'train_dataloader')
    msg = str(err.value)
    assert msg.startswith('train_dataloader.dataset: ')
    # background (id 6) listed first: every label moves up by one, so the
    # first segment read is already wrong, whichever it is
    assert re.search(r"a segment of category id \d has isthing=[01], but it "
                     r"gets label \d \('\w+' in metainfo\.classes\), which "
                     r'the head treats as (a thing|stuff)', msg), msg
    assert 'numbers labels in the order the JSON lists its categories' in msg
    assert 'm2f_plugin.tools.new_config' in msg


def test_metric_json_in_another_order_is_refused(root, detector, tmp_path):
    ds = _dataset(root, 'annotations/panoptic_val.json')
    ann = _reordered_json(root, tmp_path)
    ev = _evaluator(ds, ann, osp.join(root, 'annotations', 'panoptic_val'))
    with pytest.raises(ValueError,
                       match=r"^val_evaluator\.0 \(CocoPanopticMetric\): "
                             r"val_evaluator\.0\.ann_file lists the categories "
                             r"in the order \['background', 'disc'"):
        check_num_classes(detector, ds, 'val_dataloader', ev, 'val_evaluator')


def test_thing_listed_as_stuff_is_refused(root, detector):
    """'cross' is a thing in the JSON (isthing=1) but metainfo lists it as
    stuff: with a head of 4 things and 2 stuff it would train cross as
    stuff without a word."""
    broken = copy.deepcopy(detector)
    for head in (broken.panoptic_head, broken.panoptic_fusion_head):
        head.num_things_classes, head.num_stuff_classes = 4, 2
    ds = _dataset(root, 'annotations/panoptic_val.json',
                  classes=THINGS + ('background',),
                  thing_classes=THINGS[:4],
                  stuff_classes=('cross', 'background'))
    with pytest.raises(ValueError) as err:
        check_num_classes(broken, ds)
    assert 'a segment of category id 5 has isthing=1, but it gets label 4 ' \
           "('cross' in metainfo.classes), which the head treats as stuff " \
           '(num_things_classes=4)' in str(err.value)



def test_panoptic_pngs_of_another_json_are_refused(root, detector, tmp_path):
    """Segment ids in the JSON that the PNGs do not hold: mmdet would load
    empty masks for them without a word."""
    with open(osp.join(root, 'annotations', 'panoptic_val.json')) as f:
        data = json.load(f)
    for ann in data['annotations']:
        for seg in ann['segments_info']:
            seg['id'] += 1000  # ids of another annotation run
    ann_file = tmp_path / 'panoptic_val_other_ids.json'
    ann_file.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        check_num_classes(detector, _dataset(root, str(ann_file)))
    msg = str(err.value)
    assert 'holds no pixel of segment id(s) [1001' in msg
    assert 'R + 256 G + 256^2 B' in msg and 'data_prefix.seg' in msg


def test_panoptic_pipeline_without_seg_is_refused(root, detector):
    """Stuff classes with ``with_seg=False``: the model would learn the
    things only."""
    from mmdet.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = DATASETS.build(dict(
            type='CocoPanopticDataset', data_root=root,
            ann_file='annotations/panoptic_val.json',
            data_prefix=dict(img='img_dir/val/',
                             seg='annotations/panoptic_val/'),
            metainfo=dict(classes=THINGS + ('background',),
                          thing_classes=THINGS,
                          stuff_classes=('background',)),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadPanopticAnnotations', with_seg=False)]))
    check_num_classes(detector, ds, 'val_dataloader')  # val needs no seg
    with pytest.raises(ValueError) as err:
        check_num_classes(detector, ds, 'train_dataloader')
    assert ('train_dataloader.dataset.pipeline.1 (LoadPanopticAnnotations) '
            'has with_seg=False') in str(err.value)
