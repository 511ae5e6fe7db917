"""Fail before the first step when the heads, data sets and metrics disagree.

What is compared (each mismatch is a ``ValueError`` naming the config key and
the value to set):

- semantic: ``decode_head.num_classes`` against the data set's classes;
- panoptic / instance (mmdet's Mask2Former): ``panoptic_head``'s things and
  stuff against the data set's ``thing_classes`` / ``stuff_classes``, and
  ``panoptic_fusion_head``'s against ``panoptic_head``'s;
- COCO data sets and metrics: mmdet numbers labels in the order the
  annotation JSON lists its categories (not the order of ``metainfo``), so
  that order, the presence of every class and each category's ``isthing``
  are checked against ``metainfo``, for the data sets and for the
  ``ann_file`` of ``CocoPanopticMetric`` / ``CocoMetric``;
- COCO panoptic data: the first images' PNGs hold the segment ids their JSON
  entries list, and a training pipeline loads ``gt_sem_seg``
  (``with_seg=True``) when the head has stuff classes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['M2FNumClassesCheckHook', 'check_num_classes']


def check_num_classes(model, dataset, field: str = 'train_dataloader',
                      evaluator=None,
                      evaluator_field: str = 'val_evaluator') -> None:
    """Raise ``ValueError`` if the head's class count != the data set's.

    Segmentors: ``M2FHead.num_classes`` against ``metainfo['classes']``.
    mmdet's MaskFormer-style detectors (``panoptic_head`` with
    ``num_things_classes``/``num_stuff_classes``): things + stuff against
    ``classes``, and each against ``thing_classes``/``stuff_classes`` when the
    data set lists them (COCO panoptic does).

    Args:
        model: The segmentor or detector (possibly wrapped by DDP).
        dataset: A data set with ``metainfo['classes']``.
        field: Config field named in the message.
        evaluator: The loop's ``Evaluator`` (its COCO metrics' annotation
            files are checked), or None.
        evaluator_field: Config field of ``evaluator``, for the message.
    """
    from ..models.heads import M2FHead
    if is_model_wrapper(model):
        model = model.module
    if hasattr(getattr(model, 'panoptic_head', None), 'num_things_classes'):
        metainfo = getattr(dataset, 'metainfo', {})
        _check_things_and_stuff(model.panoptic_head, metainfo, field)
        _check_fusion_head(model)
        _check_coco_dataset(dataset, model.panoptic_head.num_things_classes,
                            field)
        _check_segment_ids(dataset, field)
        if field == 'train_dataloader':
            _check_stuff_is_loaded(dataset, model.panoptic_head, field)
        _check_coco_metrics(evaluator, metainfo, evaluator_field)
        return
    head = getattr(model, 'decode_head', None)
    classes = getattr(dataset, 'metainfo', {}).get('classes')
    if not isinstance(head, M2FHead) or not classes:
        return
    if len(classes) != head.num_classes:
        shown = ', '.join(map(str, list(classes)[:6]))
        raise ValueError(
            f'model.decode_head.num_classes={head.num_classes}, but the data '
            f'set of {field} has {len(classes)} classes ({shown}, ...). Set '
            f'model.decode_head.num_classes={len(classes)} (and the '
            f'class-head weights are re-initialised when loading a checkpoint '
            f'with another class count).')


def _check_things_and_stuff(head, metainfo: dict, field: str) -> None:
    things, stuff = head.num_things_classes, head.num_stuff_classes
    wanted = {'num_things_classes': metainfo.get('thing_classes'),
              'num_stuff_classes': metainfo.get('stuff_classes')}
    classes = metainfo.get('classes')
    if wanted['num_things_classes'] is None and classes is not None:
        # an instance data set lists only its (thing) classes
        wanted = {'num_things_classes': classes, 'num_stuff_classes': ()}
    have = {'num_things_classes': things, 'num_stuff_classes': stuff}
    wrong = {k: v for k, v in wanted.items()
             if v is not None and len(v) != have[k]}
    if not wrong:
        return
    fix = ', '.join(f'{k}={len(v)}' for k, v in wanted.items() if v is not None)
    found = '; '.join(
        f'{len(v)} {k[4:9]} classes ({", ".join(map(str, list(v)[:4]))}'
        f'{", ..." if len(v) > 4 else ""})' for k, v in wrong.items())
    raise ValueError(
        f'model.panoptic_head has num_things_classes={things}, '
        f'num_stuff_classes={stuff}, but the data set of {field} has {found}. '
        f'Set model.panoptic_head {fix} (and model.panoptic_fusion_head the '
        f'same; loss_cls.class_weight needs num_things_classes + '
        f'num_stuff_classes + 1 entries).')


def _check_fusion_head(model) -> None:
    head, fusion = model.panoptic_head, getattr(model, 'panoptic_fusion_head',
                                                None)
    if not hasattr(fusion, 'num_things_classes'):
        return
    want = (head.num_things_classes, head.num_stuff_classes)
    have = (fusion.num_things_classes, fusion.num_stuff_classes)
    if have != want:
        raise ValueError(
            f'model.panoptic_fusion_head has num_things_classes={have[0]}, '
            f'num_stuff_classes={have[1]}, but model.panoptic_head has '
            f'{want[0]} and {want[1]}. Set model.panoptic_fusion_head '
            f'num_things_classes={want[0]}, num_stuff_classes={want[1]} '
            f"(mmdet's defaults are COCO's 80 and 53; with another split "
            f'stuff segments get instance ids and validation fails inside '
            f'the panoptic metric).')


def _names(cats: dict, cat_ids: Sequence[int]) -> list:
    return [cats[c]['name'] for c in cat_ids]


def _check_json_order(cats: dict, cat_ids: Sequence[int],
                      expected: Sequence[str], where: str,
                      ann_file: str, metainfo: dict) -> None:
    """``cat_ids``: the ids mmdet picked for ``metainfo['classes']``, in the
    JSON's order; label ``i`` is ``cat_ids[i]``."""
    found = _names(cats, cat_ids)
    missing = [c for c in expected if c not in found]
    if missing:
        raise ValueError(
            f'{where}: the categories of {ann_file} have no '
            f'{", ".join(map(repr, missing[:4]))} (classes of metainfo). The '
            f'names in metainfo must be the JSON\'s category names: fix '
            f'metainfo.classes or the JSON.')
    if list(found[:len(expected)]) != list(expected):
        raise ValueError(
            f'{where}: {ann_file} lists the categories in the order '
            f'{found}, but metainfo.classes is {list(expected)}. mmdet '
            f'numbers labels in the order of the JSON, so list the things '
            f'first, then the stuff, in the JSON in the order of metainfo '
            f'(`python -m m2f_plugin.tools.new_config` writes a reordered '
            f'copy), or give metainfo.classes in the JSON\'s order.')
    things = set(metainfo.get('thing_classes') or ())
    stuff = set(metainfo.get('stuff_classes') or ())
    for cat_id in cat_ids:
        cat = cats[cat_id]
        if 'isthing' not in cat or cat['name'] not in things | stuff:
            continue
        if bool(cat['isthing']) != (cat['name'] in things):
            listed = 'thing_classes' if cat['name'] in things else \
                'stuff_classes'
            raise ValueError(
                f'{where}: category {cat["name"]!r} (id {cat_id}) has '
                f'isthing={cat["isthing"]} in {ann_file} but is listed in '
                f'metainfo.{listed}. Move it to the other list (things come '
                f'first in classes), or fix isthing in the JSON.')


def _check_coco_dataset(dataset, num_things: int, field: str,
                        max_images: int = 1000) -> None:
    """Each panoptic segment's ``isthing`` (from the JSON) against its label
    (from the JSON's category order): labels below ``num_things`` are
    things. Looks at up to ``max_images`` images spread over the set."""
    if not hasattr(dataset, 'cat_ids') or not hasattr(dataset,
                                                      'get_data_info'):
        return
    classes = list(getattr(dataset, 'metainfo', {}).get('classes') or ())
    step = max(1, len(dataset) // max_images)
    for i in range(0, len(dataset), step):
        for seg in dataset.get_data_info(i).get('segments_info', ()):
            label, is_thing = seg['category'], bool(seg['is_thing'])
            if is_thing == (label < num_things):
                continue
            name = classes[label] if label < len(classes) else '?'
            raise ValueError(
                f'{field}.dataset: in {getattr(dataset, "ann_file", "?")!r} '
                f'a segment of category id {dataset.cat_ids[label]} has '
                f'isthing={int(is_thing)}, but it gets label {label} '
                f'({name!r} in metainfo.classes), which the head treats as '
                f'{"a thing" if label < num_things else "stuff"} '
                f'(num_things_classes={num_things}). mmdet numbers labels in '
                f'the order the JSON lists its categories: list the things '
                f'first, then the stuff (`python -m m2f_plugin.tools.'
                f'new_config` writes a reordered copy), with metainfo.classes '
                f'in that order and thing_classes / stuff_classes matching '
                f'each category\'s isthing.')


def _check_stuff_is_loaded(dataset, head, field: str) -> None:
    """A panoptic head with stuff classes learns them from ``gt_sem_seg``,
    which ``LoadPanopticAnnotations`` makes only with ``with_seg=True``."""
    if not head.num_stuff_classes:
        return
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', ())
    for i, t in enumerate(transforms):
        if (type(t).__name__ == 'LoadPanopticAnnotations'
                and not getattr(t, 'with_seg', True)):
            raise ValueError(
                f'model.panoptic_head has {head.num_stuff_classes} stuff '
                f'classes, but {field}.dataset.pipeline.{i} '
                f'(LoadPanopticAnnotations) has with_seg=False: the stuff '
                f'classes get no ground truth and the model would train on '
                f'the things only. Set with_seg=True there (or '
                f'num_stuff_classes=0 for instance segmentation).')


def _check_segment_ids(dataset, field: str, num_images: int = 3) -> None:
    """The first images' panoptic PNGs hold every segment id their JSON
    entry lists (else mmdet loads empty masks without a word)."""
    if not hasattr(dataset, 'cat_ids') or not hasattr(dataset,
                                                      'get_data_info'):
        return
    import mmcv
    from mmengine.fileio import get
    for i in range(min(num_images, len(dataset))):
        info = dataset.get_data_info(i)
        path, segments = info.get('seg_map_path'), info.get('segments_info')
        if not path or not segments:
            continue
        rgb = mmcv.imfrombytes(get(path), flag='color',
                               channel_order='rgb').astype('int64')
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
        present = set(np.unique(ids).tolist())
        missing = [seg['id'] for seg in segments if seg['id'] not in present]
        if missing:
            raise ValueError(
                f'{field}.dataset: {path} holds no pixel of segment id(s) '
                f'{missing[:5]} that {getattr(dataset, "ann_file", "?")!r} '
                f'lists for this image (ids in the PNG: '
                f'{sorted(present)[:8]}). Panoptic PNGs encode a segment id as '
                f'R + 256 G + 256^2 B (RGB order), the PNG of an image is '
                f'found by replacing .jpg with .png under data_prefix.seg: '
                f'check data_prefix.seg and that the PNGs belong to this '
                f'JSON.')


def _check_coco_metrics(evaluator, metainfo: dict, field: str) -> None:
    classes = list(metainfo.get('classes') or ())
    for i, metric in enumerate(getattr(evaluator, 'metrics', ()) or ()):
        api = getattr(metric, '_coco_api', None)
        if api is None or not classes or not hasattr(api, 'get_cat_ids'):
            continue
        panoptic = type(metric).__name__.endswith('PanopticMetric')
        # CocoMetric scores thing masks: label i is the i-th thing
        expected = classes if panoptic else list(
            metainfo.get('thing_classes') or classes)
        where = f'{field}.{i} ({type(metric).__name__})'
        _check_json_order(api.cats, api.get_cat_ids(cat_names=classes),
                          expected, where, f'{field}.{i}.ann_file', metainfo)


def _loop_parts(runner, loop: str) -> tuple:
    """(dataset, evaluator) of ``runner.<loop>_loop``, or (None, None)."""
    try:
        built = getattr(runner, f'{loop}_loop')
    except Exception:  # noqa: BLE001 - no such loop in this config
        return None, None
    if built is None or not hasattr(built, 'dataloader'):
        return None, None
    return built.dataloader.dataset, getattr(built, 'evaluator', None)


@HOOKS.register_module()
class M2FNumClassesCheckHook(Hook):
    """Compare the head's class count with the data sets' before running.

    Declared in ``configs/_base_/m2f_runtime.py``, which our configs
    inherit; ``tools/train.py`` and ``tools/test.py`` add it to a config
    that lacks it.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        check_num_classes(runner.model, runner.train_dataloader.dataset)
        dataset, evaluator = _loop_parts(runner, 'val')
        if dataset is not None:
            check_num_classes(runner.model, dataset, 'val_dataloader',
                              evaluator, 'val_evaluator')

    def before_test(self, runner) -> None:
        dataset, evaluator = _loop_parts(runner, 'test')
        if dataset is None:
            dataset = runner.test_dataloader.dataset
        check_num_classes(runner.model, dataset, 'test_dataloader',
                          evaluator, 'test_evaluator')
