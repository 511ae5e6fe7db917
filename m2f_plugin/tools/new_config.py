"""Turn your own data set into one self-contained training config.

    python -m m2f_plugin.tools.new_config --task panoptic --data-root D \\
        --train-ann annotations/panoptic_train.json \\
        --val-ann annotations/panoptic_val.json --out my_panoptic.py

The config starts from one of our configs (``--base``; by default the small
demo model of the task), loaded with ``Config.fromfile``: the data sets become
the toolboxes' own (mmseg ``BaseSegDataset``, mmdet ``CocoDataset`` /
``CocoPanopticDataset``) with your classes in their metainfo, every class count
(heads, class weights, metrics) follows the data, and the schedule is scaled
to the number of training images. It is written with ``Config.dump``; the
command that trains it is printed.

Layouts (paths relative to ``--data-root`` unless absolute):

- semantic: images in ``--train-img-dir`` (``img_dir/train``), label maps
  (single channel, class index per pixel, 255 = ignore) of the same name in
  ``--train-seg-dir`` / ``--train-ann`` (``ann_dir/train``); val the same.
- instance: COCO instance JSONs (``--train-ann``, ``--val-ann``), images in
  ``--train-img-dir`` (default: the JSON name after its first ``_``, e.g.
  ``instances_train2017.json`` -> ``train2017``).
- panoptic: COCO panoptic JSONs, PNG folders ``--train-seg-dir`` (default:
  the JSON path without ``.json``) holding ``<image name>.png`` (mmdet
  replaces ``.jpg`` by ``.png``). mmdet numbers the classes in the JSON's
  category order and its panoptic heads need things before stuff: a JSON
  listing stuff first is copied, re-ordered, next to the output config
  (``<out dir>/<config name>_annotations/``); the data root is never written.

Exit status: 0 written, 2 bad input (one message: what is wrong, how to fix).
"""
from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import os.path as osp
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.config import Config, ConfigDict

from ..engine.train_command import add_missing_hooks, guard_hooks
from ..utils.owned_folder import FolderNotOursError, claim_folder, write_owned_file

__all__ = ['BASES', 'DataError', 'NewConfig', 'make_palette', 'make_config',
           'train_commands', 'main']

BASES = {
    'semantic': 'configs/demo/mask2former_r18-tiny_1xb8-300it_synthetic-128x128.py',
    'instance': 'configs/demo/mask2former_r18-tiny_1xb8-600it_synthetic-instance-128x128.py',
    'panoptic': 'configs/demo/mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py',
}
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
IGNORE_INDEX = 255
MIN_ITERS, MAX_ITERS = 300, 90_000
MAX_EVALS = 5  # validations (and checkpoints) per run, at most
_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class DataError(ValueError):
    """Bad input; the message says what is wrong and how to fix it."""


@dataclass
class NewConfig:
    """What ``make_config`` wrote.

    Attributes:
        path: The config file.
        classes: All classes in label order (things before stuff).
        num_things: Thing classes (panoptic/instance; 0 for semantic).
        max_iters: Training iterations.
        val_interval: Validation and checkpoint interval.
        written: Other files written (re-ordered annotation copies).
        notes: Things the user should know (printed).
    """

    path: str
    classes: Tuple[str, ...]
    num_things: int
    max_iters: int
    val_interval: int
    written: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def make_palette(num: int) -> List[Tuple[int, int, int]]:
    """``num`` distinct, deterministic RGB colours (golden-ratio hues,
    alternating saturation and value)."""
    colours: List[Tuple[int, int, int]] = []
    i = 0
    while len(colours) < num:
        hue = (i * 0.6180339887) % 1.0
        sat = (0.85, 0.55, 0.95)[(i // 2) % 3]
        val = (0.95, 0.7, 0.5)[(i // 6) % 3]
        rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        if rgb not in colours:
            colours.append(rgb)
        i += 1
    return colours


# ---------------------------------------------------------------- inputs --

def _path(root: str, path: str) -> str:
    return osp.abspath(path if osp.isabs(path) else osp.join(root, path))


def _inside(path: str, root: str) -> bool:
    path, root = osp.realpath(path), osp.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _require_dir(path: str, what: str, flag: str) -> str:
    if not osp.isdir(path):
        raise DataError(f'{what} {path} does not exist or is not a folder; '
                        f'pass the right folder with {flag}.')
    return path


def _load_json(path: str, flag: str) -> dict:
    if not osp.isfile(path):
        raise DataError(f'{flag}: {path} does not exist; pass the JSON file '
                        'path (relative to --data-root or absolute).')
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as err:
        raise DataError(f'{flag}: {path} is not valid JSON ({err}).') from None
    cats = data.get('categories') if isinstance(data, dict) else None
    if not cats:
        raise DataError(f'{flag}: {path} has no "categories" list; a COCO JSON '
                        'lists its classes as [{"id": .., "name": ..}, ..].')
    names = [c.get('name') for c in cats]
    dup = [n for n, k in Counter(names).items() if k > 1]
    if dup:
        raise DataError(f'{flag}: {path} names categories more than once '
                        f'({dup}); mmdet finds classes by name: make them unique.')
    if not data.get('images'):
        raise DataError(f'{flag}: {path} lists no images ("images" is empty); '
                        'a split needs at least one annotated image.')
    return data


def _coco_kind(data: dict) -> str:
    """'panoptic' or 'instance', from the annotations (else the categories)."""
    anns = data.get('annotations') or []
    if any('segments_info' in a for a in anns):
        return 'panoptic'
    if anns:
        return 'instance'
    return 'panoptic' if all('isthing' in c for c in data['categories']) else 'instance'


def _check_kind(data: dict, task: str, path: str, flag: str) -> None:
    kind = _coco_kind(data)
    if kind == task == 'instance' and not any(
            'segmentation' in a for a in data.get('annotations') or []):
        raise DataError(f'{flag}: {path} has no "segmentation" in its '
                        'annotations; Mask2Former learns masks: add polygon '
                        'or RLE masks to the instance annotations.')
    if kind == task:
        return
    if task == 'panoptic':
        raise DataError(
            f'{flag}: {path} is a COCO instance JSON (annotations with '
            '"segmentation", no "segments_info"); --task panoptic needs a COCO '
            'panoptic JSON with its PNG folder. Pass the panoptic JSON, or use '
            '--task instance.')
    raise DataError(
        f'{flag}: {path} is a COCO panoptic JSON (annotations with '
        '"segments_info"); --task instance needs a COCO instance JSON '
        '(annotations with "segmentation" masks). Pass the instance JSON, or '
        'use --task panoptic.')


def _image_dir(root: str, ann_path: str, given: Optional[str], flag: str) -> str:
    if given:
        return _require_dir(_path(root, given), 'image folder', flag)
    stem = osp.splitext(osp.basename(ann_path))[0]
    guess = _path(root, stem.split('_', 1)[-1])
    if not osp.isdir(guess):
        raise DataError(f'no image folder given and {guess} (the COCO layout '
                        f'guess from {osp.basename(ann_path)}) does not exist; '
                        f'pass it with {flag}.')
    return guess


def _check_images(data: dict, img_dir: str, flag: str) -> None:
    sizeless = [im.get('file_name') for im in data['images']
                if 'height' not in im or 'width' not in im]
    if sizeless:
        raise DataError(f'{len(sizeless)} images of the JSON lack "height" / '
                        f'"width" (e.g. {sizeless[:3]}); mmdet reads them from '
                        'the JSON: add each image\'s size.')
    missing = [im['file_name'] for im in data['images']
               if not osp.isfile(osp.join(img_dir, im['file_name']))]
    if missing:
        raise DataError(f'{len(missing)} of {len(data["images"])} images of the '
                        f'JSON are not in {img_dir} (e.g. {missing[:3]}); pass '
                        f'the folder holding them with {flag}.')


def _check_panoptic_pngs(data: dict, seg_dir: str, flag: str) -> None:
    """mmdet reads ``<seg_dir>/<image file_name with .jpg -> .png>``."""
    missing = []
    for im in data['images']:
        name = im['file_name'].replace('.jpg', '.png')
        if not osp.isfile(osp.join(seg_dir, name)):
            missing.append(name)
    if missing:
        raise DataError(
            f'{len(missing)} panoptic PNGs are missing from {seg_dir} (e.g. '
            f'{missing[:3]}). mmdet finds the PNG of an image by replacing '
            '".jpg" with ".png" in its file_name; name the PNGs that way, or '
            f'pass the PNG folder with {flag}.')


def _categories(data: dict, path: str, flag: str, panoptic: bool) -> List[dict]:
    cats = data['categories']
    if panoptic and not all('isthing' in c for c in cats):
        raise DataError(f'{flag}: categories of {path} lack "isthing"; a COCO '
                        'panoptic JSON marks each category isthing 1 (thing) '
                        'or 0 (stuff).')
    if panoptic:  # mmdet labels follow this order: things first, then stuff
        cats = ([c for c in cats if c['isthing']] +
                [c for c in cats if not c['isthing']])
        known = {c['id'] for c in cats}
        for ann in data.get('annotations') or []:
            bad = {s['category_id'] for s in ann['segments_info']} - known
            if bad:
                raise DataError(f'{flag}: {path} has segments of category ids '
                                f'{sorted(bad)} that "categories" does not list.')
    return cats


def _same_categories(train: List[dict], val: List[dict]) -> None:
    def key(c: dict) -> tuple:
        return c['id'], c['name'], bool(c.get('isthing', 1))
    if [key(c) for c in train] != [key(c) for c in val]:
        raise DataError('the train and val JSONs list different categories; '
                        'both splits need the same "categories" (ids, names, '
                        'isthing) in the same order.')


def _scan_semantic(img_dir: str, seg_dir: str) -> Tuple[str, str, int, int]:
    """(image suffix, label-map suffix, images, max label) of one split."""
    images = sorted(osp.relpath(osp.join(d, f), img_dir)
                    for d, _, files in os.walk(img_dir) for f in files
                    if f.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise DataError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {img_dir}; '
                        'pass the image folder with --train-img-dir/--val-img-dir.')
    suffixes = Counter(osp.splitext(p)[1] for p in images)
    if len(suffixes) > 1:
        raise DataError(f'{img_dir} mixes image types {dict(suffixes)}; mmseg '
                        'reads one suffix per data set: convert them to one type.')
    img_suffix = next(iter(suffixes))
    labels = {osp.splitext(f)[1] for d, _, fs in os.walk(seg_dir) for f in fs}
    seg_suffix = '.png' if '.png' in labels or not labels else sorted(labels)[0]
    max_label, missing = -1, []
    for rel in images:
        seg_path = osp.join(seg_dir, rel[:-len(img_suffix)] + seg_suffix)
        seg = cv2.imread(seg_path, cv2.IMREAD_UNCHANGED)
        if seg is None:
            missing.append(osp.basename(seg_path))
            continue
        if seg.ndim != 2:
            raise DataError(f'{seg_path} has {seg.shape[2]} channels; label maps '
                            'hold one class index per pixel (single channel, '
                            '255 = ignore), not colours.')
        values = np.unique(seg)
        values = values[values != IGNORE_INDEX]
        if values.size:
            max_label = max(max_label, int(values.max()))
    if missing:
        raise DataError(f'{len(missing)} of {len(images)} images have no label '
                        f'map in {seg_dir} (e.g. {missing[:3]}); a label map '
                        'has the image name with its suffix.')
    return img_suffix, seg_suffix, len(images), max_label


# --------------------------------------------------------------- config ----

def _find_base(base: str) -> str:
    for cand in (base, osp.join(_REPO, 'm2f_plugin', '.mim', base),
                 osp.join(_REPO, base)):
        if osp.isfile(cand):
            return cand
    raise DataError(f'--base {base} not found (tried it relative to the '
                    'working folder and to the m2f_plugin checkout).')


def _uses_panoptic_loading(cfg: Config) -> bool:
    return 'LoadPanopticAnnotations' in str(cfg.train_dataloader.dataset.get(
        'pipeline', cfg.get('train_pipeline')))


def _check_base(cfg: Config, task: str, base: str) -> None:
    model = cfg.model
    if task == 'semantic' and 'decode_head' not in model:
        raise DataError(f'--base {base} is not a semantic segmentation config '
                        '(no model.decode_head); pass one of configs/demo or '
                        'configs/mask2former.')
    if task != 'semantic' and 'panoptic_head' not in model:
        raise DataError(f'--base {base} has no model.panoptic_head; --task '
                        f'{task} needs an mmdet Mask2Former config (configs/'
                        'demo/*instance*/*panoptic*, configs/mask2former_coco).')
    if task != 'semantic' and _uses_panoptic_loading(cfg) != (task == 'panoptic'):
        raise DataError(f'--base {base} loads '
                        f'{"panoptic" if task == "instance" else "instance"} '
                        f'annotations; pass a {task} config as --base.')
    for loader in _LOADERS:
        if 'dataset' in cfg[loader].dataset:
            raise DataError(f'--base {base} wraps its data sets ({loader}); '
                            'pass a config with plain data sets.')
    if cfg.train_cfg.get('type') != 'IterBasedTrainLoop':
        raise DataError(f'--base {base} does not train by iterations; pass an '
                        'IterBasedTrainLoop config.')


def _set_datasets(cfg: Config, dataset_type: str, data_root: str,
                  splits: Dict[str, dict], metainfo: dict) -> None:
    """Replace the data sets of the three loaders by ``dataset_type`` (the
    synthetic-only keys go with the old dicts); test uses the val split."""
    for loader in _LOADERS:
        old = cfg[loader].dataset
        split = 'train' if loader == 'train_dataloader' else 'val'
        new = dict(type=dataset_type, data_root=data_root,
                   metainfo=dict(metainfo), **splits[split])
        for key in ('filter_cfg', 'backend_args'):
            if key in old:
                new[key] = old[key]
        if split == 'val':
            new['test_mode'] = True
        new['pipeline'] = old.get('pipeline')
        cfg[loader].dataset = ConfigDict(new)
    cfg.data_root = data_root
    cfg.dataset_type = dataset_type


def _class_weight(loss_cls: dict, num_classes: int) -> None:
    old = loss_cls.get('class_weight')
    no_object = old[-1] if old else loss_cls.pop('no_object_weight', 0.1)
    loss_cls['class_weight'] = [1.0] * num_classes + [no_object]


def _set_det_classes(cfg: Config, things: int, stuff: int, notes: List[str]) -> None:
    head, fusion = cfg.model.panoptic_head, cfg.model.panoptic_fusion_head
    for part in (head, fusion):
        part.num_things_classes, part.num_stuff_classes = things, stuff
    _class_weight(head.loss_cls, things + stuff)
    cfg.num_things_classes, cfg.num_stuff_classes = things, stuff
    test_cfg = cfg.model.get('test_cfg') or {}
    pairs = head.get('num_queries', 100) * (things + stuff)
    if test_cfg.get('instance_on') and test_cfg.get('max_per_image', 100) > pairs:
        test_cfg['max_per_image'] = pairs
        notes.append(f'model.test_cfg.max_per_image lowered to queries x '
                     f'classes = {pairs}.')


def _scale_schedule(cfg: Config, num_train: int, epochs: int,
                    iters: Optional[int]) -> Tuple[int, int]:
    """Iterations: ``iters``, else epochs x ceil(images / batch) within
    [MIN_ITERS, MAX_ITERS]; as many validations as the base (at most
    MAX_EVALS), schedulers and hooks scaled with it."""
    loop = cfg.train_cfg
    old_iters = loop.max_iters
    evals = min(MAX_EVALS, max(1, round(old_iters / loop.val_interval)))
    if iters is None:
        per_epoch = math.ceil(num_train / cfg.train_dataloader.batch_size)
        iters = min(MAX_ITERS, max(MIN_ITERS, epochs * per_epoch))
    interval = max(1, math.ceil(iters / evals))
    loop.max_iters, loop.val_interval = iters, interval
    loop.pop('dynamic_intervals', None)
    cfg.max_iters = iters
    scale = iters / old_iters
    schedulers = cfg.param_scheduler
    for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
        if sched.get('by_epoch', True):  # mmengine's default
            continue
        for key in ('begin', 'end'):
            if key in sched:
                sched[key] = (iters if sched[key] >= old_iters
                              else max(1 if key == 'end' else 0,
                                       int(sched[key] * scale)))
        if 'milestones' in sched:
            sched.milestones = [max(1, int(m * scale)) for m in sched.milestones]
    hooks = cfg.default_hooks
    if 'checkpoint' in hooks:
        hooks.checkpoint.interval = interval
    if 'logger' in hooks:
        hooks.logger.interval = max(1, min(hooks.logger.get('interval', 50),
                                           interval // 2))
    return iters, interval


def _rel(path: str, root: str) -> str:
    """``path`` relative to the data root when inside it, else absolute."""
    return osp.relpath(path, root) if _inside(path, root) else path


def _evaluators(cfg: Config, metrics: List[dict]) -> None:
    """``metrics`` plus the base's metrics other than the COCO ones."""
    base = cfg.val_evaluator
    kept = [m for m in (base if isinstance(base, list) else [base])
            if m.get('type') not in ('CocoMetric', 'CocoPanopticMetric')]
    metrics = metrics + [dict(m) for m in kept]
    cfg.val_evaluator = metrics if len(metrics) > 1 else metrics[0]
    cfg.test_evaluator = cfg.val_evaluator


@dataclass
class _Plan:
    """What a task found in the data: config parts and files to write."""

    classes: Tuple[str, ...]
    num_things: int
    num_train: int
    splits: Dict[str, dict]
    metainfo: dict
    dataset_type: str
    files: Dict[str, dict] = field(default_factory=dict)  # path -> JSON
    notes: List[str] = field(default_factory=list)


def _plan_semantic(args: argparse.Namespace, root: str) -> _Plan:
    splits, counts, max_label = {}, {}, -1
    for split in ('train', 'val'):
        seg, ann = getattr(args, f'{split}_seg_dir'), getattr(args, f'{split}_ann')
        if seg and ann and _path(root, seg) != _path(root, ann):
            raise DataError(f'--{split}-seg-dir and --{split}-ann name different '
                            'label-map folders; for --task semantic give one.')
        img_dir = _require_dir(
            _path(root, getattr(args, f'{split}_img_dir') or f'img_dir/{split}'),
            f'{split} image folder', f'--{split}-img-dir')
        seg_dir = _require_dir(_path(root, seg or ann or f'ann_dir/{split}'),
                               f'{split} label-map folder', f'--{split}-seg-dir')
        img_suffix, seg_suffix, counts[split], top = _scan_semantic(img_dir, seg_dir)
        max_label = max(max_label, top)
        splits[split] = dict(
            data_prefix=dict(img_path=_rel(img_dir, root),
                             seg_map_path=_rel(seg_dir, root)),
            img_suffix=img_suffix, seg_map_suffix=seg_suffix,
            reduce_zero_label=False)
    if max_label < 0:
        raise DataError(f'the label maps hold only ignored pixels '
                        f'({IGNORE_INDEX}); label pixels 0..N-1 by class.')
    if args.classes:
        classes = tuple(c.strip() for c in args.classes.split(','))
        if len(classes) <= max_label:
            raise DataError(f'--classes names {len(classes)} classes but the '
                            f'label maps hold label {max_label}; name '
                            f'{max_label + 1} classes (labels 0..{max_label}).')
    else:
        classes = tuple(f'class_{i}' for i in range(max_label + 1))
    palette = make_palette(len(classes))
    return _Plan(classes, 0, counts['train'], splits,
                 dict(classes=classes, palette=palette), 'BaseSegDataset')


def _plan_coco(args: argparse.Namespace, root: str, ann_dir: str) -> _Plan:
    """Instance or panoptic (``args.task``) from COCO JSONs."""
    panoptic = args.task == 'panoptic'
    data, cats, splits, files = {}, {}, {}, {}
    for split in ('train', 'val'):
        flag = f'--{split}-ann'
        if not getattr(args, f'{split}_ann'):
            raise DataError(f'{flag} is required for --task {args.task} (the '
                            f'COCO {args.task} JSON of the {split} split).')
        path = _path(root, getattr(args, f'{split}_ann'))
        data[split] = _load_json(path, flag)
        _check_kind(data[split], args.task, path, flag)
        cats[split] = _categories(data[split], path, flag, panoptic)
        img_dir = _image_dir(root, path, getattr(args, f'{split}_img_dir'),
                             f'--{split}-img-dir')
        _check_images(data[split], img_dir, f'--{split}-img-dir')
        ann_file = _rel(path, root)
        prefix = dict(img=_rel(img_dir, root) + '/')
        if panoptic:
            seg = getattr(args, f'{split}_seg_dir')
            seg_dir = _require_dir(_path(root, seg) if seg else osp.splitext(path)[0],
                                   f'{split} panoptic PNG folder',
                                   f'--{split}-seg-dir')
            _check_panoptic_pngs(data[split], seg_dir, f'--{split}-seg-dir')
            prefix['seg'] = _rel(seg_dir, root) + '/'
            if cats[split] != data[split]['categories']:
                ann_file = osp.join(ann_dir, f'panoptic_{split}.json')
                files[ann_file] = dict(data[split], categories=cats[split])
        splits[split] = dict(ann_file=ann_file, data_prefix=prefix)
    _same_categories(cats['train'], cats['val'])
    classes = tuple(c['name'] for c in cats['train'])
    things = tuple(c['name'] for c in cats['train'] if c.get('isthing', 1))
    palette = make_palette(len(classes))
    metainfo = dict(classes=classes, palette=palette)
    if panoptic:
        metainfo.update(thing_classes=things, stuff_classes=classes[len(things):])
    return _Plan(classes, len(things), len(data['train']['images']), splits,
                 metainfo, 'CocoPanopticDataset' if panoptic else 'CocoDataset',
                 files)


def _instance_metric(args: argparse.Namespace, root: str, plan: _Plan,
                     ann_dir: str) -> List[dict]:
    """CocoMetric for a panoptic run: needs ``--val-instances`` (its
    categories re-ordered like the things when they differ)."""
    if not args.val_instances:
        plan.notes.append('no --val-instances: CocoMetric (mask AP) is not '
                          'evaluated; it needs the val COCO instance JSON.')
        return []
    path = _path(root, args.val_instances)
    data = _load_json(path, '--val-instances')
    _check_kind(data, 'instance', path, '--val-instances')
    things = plan.classes[:plan.num_things]
    by_name = {c['name']: c for c in data['categories']}
    absent = [t for t in things if t not in by_name]
    if absent:
        raise DataError(f'--val-instances: {path} lacks the thing categories '
                        f'{absent} of the panoptic JSON; pass the instance '
                        'JSON of the same data.')
    order = [by_name[t] for t in things]
    if [c['name'] for c in data['categories']][:len(things)] != list(things):
        path = osp.join(ann_dir, 'instances_val.json')
        rest = [c for c in data['categories'] if c['name'] not in things]
        plan.files[path] = dict(data, categories=order + rest)
    return [dict(type='CocoMetric', ann_file=path, metric=['segm'])]


def make_config(args: argparse.Namespace) -> NewConfig:
    """Check the data, build the config, write it (and any re-ordered
    annotation copies). Raises ``DataError`` before writing anything."""
    root = osp.abspath(args.data_root)
    _require_dir(root, 'data root', '--data-root')
    name = osp.basename(root.rstrip(os.sep)) or 'data'
    out = osp.abspath(args.out or osp.join('own_configs', f'm2f_{args.task}_{name}.py'))
    if _inside(out, root):
        raise DataError(f'--out {out} is inside the data root; write the config '
                        'elsewhere (the data root is never written).')
    if not out.endswith('.py'):
        raise DataError(f'--out {out}: the config file name must end in .py.')
    if osp.exists(out) and not args.force:
        raise DataError(f'{out} exists; pass --force to overwrite it or choose '
                        'another --out.')
    ann_dir = osp.join(osp.dirname(out), osp.splitext(osp.basename(out))[0] +
                       '_annotations')
    base = _find_base(args.base or BASES[args.task])
    cfg = Config.fromfile(base)
    _check_base(cfg, args.task, args.base or BASES[args.task])

    if args.task == 'semantic':
        plan = _plan_semantic(args, root)
        head = cfg.model.decode_head
        head.num_classes = cfg.num_classes = len(plan.classes)
        _class_weight(head.loss_cls, len(plan.classes))
        for loader in _LOADERS:  # e.g. ADE20K's: labels as in the data set
            for step in cfg[loader].dataset.get('pipeline') or []:
                if step.get('type') == 'LoadAnnotations':
                    step.pop('reduce_zero_label', None)
    else:
        plan = _plan_coco(args, root, ann_dir)
        _set_det_classes(cfg, plan.num_things,
                         len(plan.classes) - plan.num_things, plan.notes)
        val = plan.splits['val']
        val_json = _path(root, val['ann_file'])
        if args.task == 'instance':
            _evaluators(cfg, [dict(type='CocoMetric', ann_file=val_json,
                                   metric=['segm'])])
        else:
            _evaluators(cfg, [dict(type='CocoPanopticMetric', ann_file=val_json,
                                   seg_prefix=_path(root, val['data_prefix']['seg']) + '/')]
                        + _instance_metric(args, root, plan, ann_dir))
    if args.batch_size:
        cfg.train_dataloader.batch_size = args.batch_size
    _set_datasets(cfg, plan.dataset_type, root + '/', plan.splits, plan.metainfo)
    iters, interval = _scale_schedule(cfg, plan.num_train, args.epochs, args.iters)
    if args.work_dir:
        cfg.work_dir = osp.abspath(args.work_dir)
    # the guards of configs/_base_/m2f_runtime.py, for any entry point (our
    # bases declare them; a --base that does not gets them here)
    added = add_missing_hooks(cfg, guard_hooks())
    if added:
        plan.notes.append(f'added {", ".join(added)} to custom_hooks (--base '
                          'does not declare them)')

    if plan.files and osp.isdir(ann_dir) and not args.force:
        raise DataError(f'{ann_dir} exists; pass --force to overwrite it or '
                        'choose another --out.')
    if plan.files:  # only into a folder of its own, never over others' files
        claim_folder(ann_dir, 'm2f_new_config', 'annotation copies',
                     'Choose another --out.')
    for path, content in plan.files.items():
        write_owned_file(ann_dir, 'm2f_new_config',
                         osp.relpath(path, ann_dir),
                         json.dumps(content).encode())
    os.makedirs(osp.dirname(out), exist_ok=True)
    cfg.dump(out)
    return NewConfig(out, plan.classes, plan.num_things, iters, interval,
                     sorted(plan.files), plan.notes)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog='python -m m2f_plugin.tools.new_config',
        description='Write one training config for your own data set.')
    p.add_argument('--task', required=True, choices=sorted(BASES))
    p.add_argument('--data-root', required=True, help='the data set folder')
    p.add_argument('--train-ann', help='train COCO JSON (semantic: label-map '
                   'folder, default ann_dir/train)')
    p.add_argument('--val-ann', help='val COCO JSON (semantic: label-map folder, '
                   'default ann_dir/val)')
    for split in ('train', 'val'):
        p.add_argument(f'--{split}-img-dir', help=f'{split} image folder')
        p.add_argument(f'--{split}-seg-dir', help=f'{split} panoptic PNG folder '
                       '(default: the JSON path without .json) or label maps')
    p.add_argument('--val-instances', help='panoptic: val COCO instance JSON, '
                   'for CocoMetric (mask AP)')
    p.add_argument('--classes', help='semantic: class names a,b,c (default: '
                   'class_0.. up to the largest label)')
    p.add_argument('--base', help='config to start from (default: the demo '
                   'config of the task)')
    p.add_argument('--out', help='config to write (default: '
                   'own_configs/m2f_<task>_<data root name>.py)')
    p.add_argument('--force', action='store_true', help='overwrite --out')
    p.add_argument('--work-dir', help='work_dir written into the config')
    p.add_argument('--epochs', type=int, default=12,
                   help='passes over the train images (default 12)')
    p.add_argument('--iters', type=int, help='training iterations (overrides '
                   '--epochs)')
    p.add_argument('--batch-size', type=int, help='train batch size per GPU '
                   "(default: the base's)")
    return p.parse_args(argv)


def train_commands(config: str) -> List[str]:
    """``mim train`` and ``tools/train.py`` commands for ``config`` (paths
    relative to the working folder when below it)."""
    rel = osp.relpath(config)
    shown = config if rel.startswith('..') else rel
    train_py = osp.join(_REPO, 'tools', 'train.py')
    if osp.realpath(os.getcwd()) == osp.realpath(_REPO) or not osp.isfile(train_py):
        train_py = osp.join('tools', 'train.py')
    return [f'mim train m2f_plugin {shown}', f'python {train_py} {shown}']


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        made = make_config(args)
    except (DataError, FolderNotOursError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    shown = ', '.join(made.classes[:8]) + (', ...' if len(made.classes) > 8 else '')
    split = (f'{made.num_things} things + {len(made.classes) - made.num_things} '
             'stuff' if args.task == 'panoptic' else f'{len(made.classes)}')
    print(f'wrote {made.path}\n  {args.task}: {split} classes ({shown})\n'
          f'  schedule: {made.max_iters} iterations, validation and checkpoint '
          f'every {made.val_interval}')
    for path in made.written:
        print(f'  wrote {path} (categories re-ordered: things before stuff)')
    for note in made.notes:
        print(f'  note: {note}')
    print('train it:\n' + '\n'.join(f'  {c}' for c in train_commands(made.path)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
