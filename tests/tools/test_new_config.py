"""``python -m m2f_plugin.tools.new_config``: a data set unlike the demo's
(96x64 JPEGs, non-contiguous unsorted category ids, stuff listed first,
24-bit segment ids) becomes one config per task whose class counts agree
everywhere, whose data sets label the pixels right, and which trains."""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
from typing import List, Tuple

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from m2f_plugin.engine.train_command import guard_hooks
from m2f_plugin.tools.new_config import (
    BASES,
    MAX_EVALS,
    MIN_ITERS,
    main,
    make_palette,
    train_commands,
)
from tests.helpers import REPO
from tests.helpers.own_data import (
    INSTANCE_CATEGORIES,
    PANOPTIC_CATEGORIES,
    rgb2id,
    tree_hashes,
    write_coco,
    write_semantic,
)

pytest.importorskip('mmdet')
pytest.importorskip('pycocotools')

SYNTHETIC_KEYS = {'generate', 'num_train', 'num_val', 'size', 'seed', 'split'}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
PANOPTIC_ARGS = ['--task', 'panoptic',
                 '--train-ann', 'annotations/panoptic_train.json',
                 '--val-ann', 'annotations/panoptic_val.json',
                 '--train-img-dir', 'images/train', '--val-img-dir', 'images/val']
INSTANCE_ARGS = ['--task', 'instance',
                 '--train-ann', 'annotations/instances_train.json',
                 '--val-ann', 'annotations/instances_val.json',
                 '--train-img-dir', 'images/train', '--val-img-dir', 'images/val']


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> str:
    return write_coco(str(tmp_path_factory.mktemp('own') / 'coco'))


@pytest.fixture(scope='module')
def semantic_root(tmp_path_factory) -> str:
    return write_semantic(str(tmp_path_factory.mktemp('own') / 'semantic'))


def _generate(tmp_path, capsys, root: str, *args: str) -> Tuple[Config, str]:
    """Run the tool; the data root's bytes stay the same. Returns the loaded
    config and what the tool printed."""
    before = tree_hashes(root)
    out = str(tmp_path / 'configs' / 'own.py')
    code = main(['--data-root', root, '--out', out, *args])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert tree_hashes(root) == before
    for command in train_commands(out):
        assert command in printed.out
    assert f'mim train m2f_plugin {out}' in printed.out  # out is not below cwd
    return Config.fromfile(out), printed.out


def _check_datasets(cfg: Config, kind: str, classes: tuple) -> None:
    for loader in LOADERS:
        dataset = cfg[loader].dataset
        assert dataset.type == kind
        assert not SYNTHETIC_KEYS & set(dataset)
        assert tuple(dataset.metainfo.classes) == classes
        palette = dataset.metainfo.palette
        assert len(palette) == len(classes) == len(set(map(tuple, palette)))
        assert all(len(c) == 3 and all(isinstance(v, int) for v in c)
                   for c in palette)
    assert cfg.val_dataloader.dataset.test_mode


def _check_det_head(cfg: Config, things: int, stuff: int) -> None:
    for head in (cfg.model.panoptic_head, cfg.model.panoptic_fusion_head):
        assert (head.num_things_classes, head.num_stuff_classes) == (things, stuff)
    weight = cfg.model.panoptic_head.loss_cls.class_weight
    assert weight == [1.0] * (things + stuff) + [0.1]


def _metrics(cfg: Config) -> List[dict]:
    ev = cfg.val_evaluator
    assert cfg.test_evaluator == ev
    return ev if isinstance(ev, list) else [ev]


def _build(cfg: Config, loader: str):
    """The loader's data set, built in its toolbox's scope."""
    from mmengine.registry import DefaultScope
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import DATASETS
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
    else:
        from mmseg.registry import DATASETS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return DATASETS.build(copy.deepcopy(cfg[loader].dataset))


# ------------------------------------------------------------- panoptic ---

def test_panoptic_config(coco_root, tmp_path, capsys):
    cfg, printed = _generate(tmp_path, capsys, coco_root, *PANOPTIC_ARGS)
    classes = ('car', 'person', 'sky', 'grass')  # things first, JSON order kept
    _check_datasets(cfg, 'CocoPanopticDataset', classes)
    for loader in LOADERS:
        meta = cfg[loader].dataset.metainfo
        assert tuple(meta.thing_classes) == classes[:2]
        assert tuple(meta.stuff_classes) == classes[2:]
    _check_det_head(cfg, 2, 2)
    # the re-ordered copies: next to the config, outside the data root
    ann_dir = tmp_path / 'configs' / 'own_annotations'
    for split in ('train', 'val'):
        copy_path = str(ann_dir / f'panoptic_{split}.json')
        assert not copy_path.startswith(coco_root)
        loaded = cfg[f'{split}_dataloader'].dataset
        assert loaded.ann_file == copy_path
        assert loaded.data_prefix.seg == f'annotations/panoptic_{split}/'
        with open(copy_path) as f:
            written = json.load(f)
        with open(osp.join(coco_root, f'annotations/panoptic_{split}.json')) as f:
            original = json.load(f)
        assert [c['name'] for c in written['categories']] == list(classes)
        assert dict(written, categories=None) == dict(original, categories=None)
    metrics = {m['type']: m for m in _metrics(cfg)}
    assert set(metrics) == {'CocoPanopticMetric', 'M2FSemSegMetric'}
    assert metrics['CocoPanopticMetric']['ann_file'] == str(ann_dir / 'panoptic_val.json')
    assert metrics['CocoPanopticMetric']['seg_prefix'] == osp.join(
        coco_root, 'annotations', 'panoptic_val') + '/'
    assert 'CocoMetric' in printed and '--val-instances' in printed


def test_panoptic_with_instances_reorders_both(coco_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, coco_root, *PANOPTIC_ARGS,
                       '--val-instances', 'annotations/instances_val.json')
    coco = [m for m in _metrics(cfg) if m['type'] == 'CocoMetric']
    assert len(coco) == 1 and coco[0]['metric'] == ['segm']
    with open(coco[0]['ann_file']) as f:  # things in the panoptic order
        assert [c['name'] for c in json.load(f)['categories']] == ['car', 'person']
    assert not coco[0]['ann_file'].startswith(coco_root)


def test_panoptic_labels_map_to_categories(coco_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, coco_root, *PANOPTIC_ARGS)
    dataset = _build(cfg, 'val_dataloader')
    classes = dataset.metainfo['classes']
    with open(osp.join(coco_root, 'annotations/panoptic_val.json')) as f:
        original = json.load(f)
    name_of = {c['id']: c['name'] for c in PANOPTIC_CATEGORIES}
    for index in range(2):
        sample = dataset[index]['data_samples']
        ann = original['annotations'][index]
        png = cv2.imread(osp.join(coco_root, 'annotations/panoptic_val',
                                  ann['file_name']))[..., ::-1]
        ids = rgb2id(png)
        expected = np.full(ids.shape, 255)
        for seg in ann['segments_info']:
            expected[ids == seg['id']] = classes.index(name_of[seg['category_id']])
        assert sample.gt_sem_seg.sem_seg.shape[1:] == (64, 96)
        np.testing.assert_array_equal(sample.gt_sem_seg.sem_seg[0].numpy(), expected)
        things = sorted(name_of[s['category_id']] for s in ann['segments_info']
                        if name_of[s['category_id']] in ('car', 'person'))
        assert sorted(classes[i] for i in sample.gt_instances.labels) == things


# ------------------------------------------------------------- instance ---

def test_instance_config_and_labels(coco_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, coco_root, *INSTANCE_ARGS)
    classes = tuple(c['name'] for c in INSTANCE_CATEGORIES)  # JSON order
    _check_datasets(cfg, 'CocoDataset', classes)
    _check_det_head(cfg, 2, 0)
    assert _metrics(cfg) == [dict(type='CocoMetric', metric=['segm'], ann_file=osp.join(
        coco_root, 'annotations', 'instances_val.json'))]
    assert not (tmp_path / 'configs' / 'own_annotations').exists()
    dataset = _build(cfg, 'val_dataloader')
    with open(osp.join(coco_root, 'annotations/instances_val.json')) as f:
        original = json.load(f)
    name_of = {c['id']: c['name'] for c in INSTANCE_CATEGORIES}
    for index, image in enumerate(original['images'][:2]):
        sample = dataset[index]['data_samples']
        anns = [a for a in original['annotations'] if a['image_id'] == image['id']]
        got = sorted((classes[label], int(mask.sum())) for label, mask in zip(
            sample.gt_instances.labels, sample.gt_instances.masks.masks))
        assert got == sorted((name_of[a['category_id']], a['area']) for a in anns)


# ------------------------------------------------------------- semantic ---

def test_semantic_config_and_labels(semantic_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, semantic_root, '--task', 'semantic')
    classes = tuple(f'class_{i}' for i in range(5))  # label 4 is the largest
    _check_datasets(cfg, 'BaseSegDataset', classes)
    head = cfg.model.decode_head
    assert head.num_classes == 5
    assert head.loss_cls.class_weight == [1.0] * 5 + [0.1]
    assert [m['type'] for m in _metrics(cfg)] == ['IoUMetric']
    val = cfg.val_dataloader.dataset
    assert (val.img_suffix, val.seg_map_suffix) == ('.jpg', '.png')
    dataset = _build(cfg, 'val_dataloader')
    for index in range(2):
        item = dataset[index]
        label = cv2.imread(item['data_samples'].seg_map_path, cv2.IMREAD_UNCHANGED)
        assert label.shape == (64, 96)
        np.testing.assert_array_equal(
            item['data_samples'].gt_sem_seg.data[0].numpy(), label)


def test_semantic_named_classes(semantic_root, tmp_path, capsys):
    names = 'sky,grass,unused,car,person,boat'
    cfg, _ = _generate(tmp_path, capsys, semantic_root, '--task', 'semantic',
                       '--classes', names)
    _check_datasets(cfg, 'BaseSegDataset', tuple(names.split(',')))
    assert cfg.model.decode_head.num_classes == 6


def test_written_config_declares_the_guards(semantic_root, tmp_path, capsys):
    """The training guards (configs/_base_/m2f_runtime.py) are in the written
    config, so a plain Runner.from_cfg runs them too; a --base without them
    gets them, with a note."""
    cfg, printed = _generate(tmp_path, capsys, semantic_root, '--task', 'semantic')
    assert [dict(h) for h in cfg.custom_hooks] == [
        dict(type='M2FRandomStateHook')] + guard_hooks()
    assert 'custom_hooks' not in printed
    bare = tmp_path / 'bare.py'
    bare.write_text(f"_base_ = [{osp.join(REPO, BASES['semantic'])!r}]\n"
                    'custom_hooks = []\n')
    cfg, printed = _generate(tmp_path / 'b', capsys, semantic_root, '--task',
                             'semantic', '--base', str(bare))
    assert [dict(h) for h in cfg.custom_hooks] == guard_hooks()
    names = ', '.join(h['type'] for h in guard_hooks())
    assert f'note: added {names} to custom_hooks' in printed


# ------------------------------------------------------------- schedule ---

def test_schedule_scales_with_data_and_iters(semantic_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, semantic_root, '--task', 'semantic')
    # 6 images, batch 8, 12 epochs = 12 iterations: raised to the minimum
    assert cfg.train_cfg.max_iters == MIN_ITERS
    assert cfg.param_scheduler[0].end == MIN_ITERS
    assert cfg.train_cfg.val_interval == cfg.default_hooks.checkpoint.interval == 100
    cfg, _ = _generate(tmp_path / 'b', capsys, semantic_root, '--task', 'semantic',
                       '--iters', '50', '--batch-size', '2')
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (50, 17)
    assert cfg.param_scheduler[0].end == 50 and cfg.train_dataloader.batch_size == 2


def test_coco_base(coco_root, tmp_path, capsys):
    base = 'configs/mask2former_coco/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py'
    cfg, _ = _generate(tmp_path, capsys, coco_root, *PANOPTIC_ARGS,
                       '--base', base, '--epochs', '2000')
    _check_det_head(cfg, 2, 2)
    _check_datasets(cfg, 'CocoPanopticDataset', ('car', 'person', 'sky', 'grass'))
    iters = cfg.train_cfg.max_iters  # 6 images / batch 2 x 2000 epochs
    assert iters == 6000 and 'dynamic_intervals' not in cfg.train_cfg
    assert cfg.train_cfg.val_interval == 6000 // MAX_EVALS
    assert cfg.param_scheduler.end == iters
    assert cfg.param_scheduler.milestones == [int(m * iters / 368750)
                                              for m in (327778, 355092)]


def test_ade20k_base_keeps_labels(semantic_root, tmp_path, capsys):
    """ADE20K's pipeline reduces the zero label; own labels stay as they are."""
    base = 'configs/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
    cfg, _ = _generate(tmp_path, capsys, semantic_root, '--task', 'semantic',
                       '--base', base)
    _check_datasets(cfg, 'BaseSegDataset', tuple(f'class_{i}' for i in range(5)))
    assert cfg.model.decode_head.num_classes == 5
    for loader in LOADERS:
        assert cfg[loader].dataset.reduce_zero_label is False
        for step in cfg[loader].dataset.pipeline:
            assert 'reduce_zero_label' not in step


def _colour_labels(tmp_path, semantic_root) -> str:
    root = str(tmp_path / 'colour')
    shutil.copytree(semantic_root, root)
    path = osp.join(root, 'ann_dir', 'val', 'img_0001.png')
    cv2.imwrite(path, cv2.cvtColor(cv2.imread(path, 0), cv2.COLOR_GRAY2BGR))
    return root


def test_command_line(coco_root, tmp_path):
    """The module runs as ``python -m`` and the config it writes loads."""
    out = str(tmp_path / 'cli.py')
    result = subprocess.run(
        [sys.executable, '-m', 'm2f_plugin.tools.new_config', '--data-root',
         coco_root, '--out', out, *INSTANCE_ARGS], cwd=REPO, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f'mim train m2f_plugin {out}' in result.stdout
    assert 'python tools/train.py' in result.stdout  # run in the checkout
    assert Config.fromfile(out).model.panoptic_head.num_things_classes == 2


# --------------------------------------------------------------- errors ---

def _bad_json(tmp_path, coco_root) -> str:
    path = tmp_path / 'no_categories.json'
    with open(osp.join(coco_root, 'annotations/panoptic_train.json')) as f:
        data = json.load(f)
    path.write_text(json.dumps(dict(data, categories=[])))
    return str(path)


def _renamed_pngs(tmp_path, coco_root) -> str:
    """A copy whose panoptic PNGs are named after .jpeg images."""
    root = str(tmp_path / 'jpeg')
    shutil.copytree(coco_root, root)
    path = osp.join(root, 'annotations', 'panoptic_val')
    for name in os.listdir(path):
        os.rename(osp.join(path, name), osp.join(path, name[:-4] + '_seg.png'))
    return root


def _empty_root(tmp_path) -> str:
    root = tmp_path / 'empty'
    (root / 'e').mkdir(parents=True)
    return str(root)


ERRORS = {
    'panoptic JSON as instance': (
        lambda t, r: (r, ['--task', 'instance', '--train-ann',
                          'annotations/panoptic_train.json', '--val-ann',
                          'annotations/panoptic_val.json']),
        'is a COCO panoptic JSON'),
    'instance JSON as panoptic': (
        lambda t, r: (r, ['--task', 'panoptic', '--train-ann',
                          'annotations/instances_train.json', '--val-ann',
                          'annotations/instances_val.json']),
        'is a COCO instance JSON'),
    'no categories': (
        lambda t, r: (r, PANOPTIC_ARGS[:3] + [_bad_json(t, r)] + PANOPTIC_ARGS[4:]),
        'has no "categories" list'),
    'missing JSON': (
        lambda t, r: (r, PANOPTIC_ARGS[:3] + ['annotations/nope.json']
                      + PANOPTIC_ARGS[4:]),
        'nope.json does not exist'),
    'PNG names': (
        lambda t, r: (_renamed_pngs(t, r), PANOPTIC_ARGS),
        'replacing ".jpg" with ".png"'),
    'no images': (
        lambda t, r: (_empty_root(t), ['--task', 'semantic', '--train-img-dir', 'e',
                               '--train-seg-dir', 'e', '--val-img-dir', 'e',
                               '--val-seg-dir', 'e']),
        'no images'),
    'colour label maps': (
        lambda t, r: (_colour_labels(t, write_semantic(str(t / 'sem'))),
                      ['--task', 'semantic']),
        'has 3 channels'),
    'out inside the data root': (
        lambda t, r: (r, INSTANCE_ARGS + ['--out', osp.join(r, 'cfg.py')]),
        'is inside the data root'),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_bad_input_one_clear_message(case, coco_root, tmp_path, capsys):
    make, expected = ERRORS[case]
    root, args = make(tmp_path, coco_root)
    before = tree_hashes(root)
    out = str(tmp_path / 'out' / 'own.py')
    code = main(['--data-root', root, '--out', out, *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert err.startswith('error: ') and err.count('\n') == 1
    assert tree_hashes(root) == before and not osp.exists(out)


def test_existing_out_needs_force(coco_root, tmp_path, capsys):
    out = tmp_path / 'own.py'
    out.write_text('# mine\n')
    args = ['--data-root', coco_root, '--out', str(out), *INSTANCE_ARGS]
    assert main(args) == 2
    assert 'pass --force' in capsys.readouterr().err
    assert out.read_text() == '# mine\n'
    assert main(args + ['--force']) == 0
    assert Config.fromfile(str(out)).model.panoptic_head.num_things_classes == 2


def test_palette_distinct_and_deterministic():
    palette = make_palette(200)
    assert palette == make_palette(200) and len(set(palette)) == 200
    assert all(isinstance(c, tuple) and len(c) == 3 for c in palette)


# ------------------------------------------------------ train end to end --

def _tiny_run(cfg: Config, work_dir: str) -> dict:
    """Two training steps, then validation; returns the metrics."""
    from mmengine.runner import Runner
    cfg.work_dir = work_dir
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.param_scheduler[0].end = 2
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.pop('visualization', None)
    cfg.visualizer.name = work_dir  # one visualizer per run in this process
    for loader in LOADERS:
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.batch_size = 2
    head = cfg.model.get('decode_head') or cfg.model.panoptic_head
    head.num_points = head.matcher.num_points = 256
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    return runner.val()


@pytest.mark.slow
def test_panoptic_trains(coco_root, tmp_path, capsys):
    pytest.importorskip('panopticapi')
    cfg, _ = _generate(tmp_path, capsys, coco_root, *PANOPTIC_ARGS,
                       '--val-instances', 'annotations/instances_val.json')
    metrics = _tiny_run(cfg, str(tmp_path / 'work'))
    print(metrics)
    for key in ('coco_panoptic/PQ', 'coco/segm_mAP', 'sem_seg/mIoU'):
        assert key in metrics, sorted(metrics)


@pytest.mark.slow
def test_instance_trains(coco_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, coco_root, *INSTANCE_ARGS)
    metrics = _tiny_run(cfg, str(tmp_path / 'work'))
    print(metrics)
    assert 'coco/segm_mAP' in metrics


@pytest.mark.slow
def test_semantic_trains(semantic_root, tmp_path, capsys):
    cfg, _ = _generate(tmp_path, capsys, semantic_root, '--task', 'semantic')
    metrics = _tiny_run(cfg, str(tmp_path / 'work'))
    print(metrics)
    assert 0 <= metrics['mIoU'] <= 100
