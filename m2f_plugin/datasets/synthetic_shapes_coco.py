"""The synthetic shapes as mmdet COCO instance and panoptic data sets.

The same generator as ``M2FSyntheticShapesDataset`` writes the COCO files
(layout in ``synthetic_shapes``); these classes read them with mmdet's
``CocoDataset`` / ``CocoPanopticDataset``, so mmdet's loading transforms and
``CocoMetric(metric='segm')`` / ``CocoPanopticMetric`` work on them. They are
registered in mmdet's ``DATASETS`` registry; without a usable mmdet they are
not defined and the mmseg data set still works.

Class order: the things ``disc .. cross`` (category ids 1..5), then the stuff
``background`` (category id 6), i.e. ``num_things_classes=5,
num_stuff_classes=1`` for mmdet's panoptic heads.
"""
from __future__ import annotations

from typing import Optional

from .synthetic_shapes import (
    PANOPTIC_CLASSES,
    PANOPTIC_PALETTE,
    STUFF_CLASSES,
    THING_CLASSES,
    THING_PALETTE,
    generate_synthetic_shapes,
)

try:
    from mmdet.datasets import CocoDataset, CocoPanopticDataset
    from mmdet.registry import DATASETS as MMDET_DATASETS
    MMDET_AVAILABLE = True
except Exception:  # noqa: BLE001 - missing, or refusing the installed mmcv
    MMDET_AVAILABLE = False


def _prepare(kwargs: dict, generate: bool, num_train: int, num_val: int,
             size: int, seed: int, split: Optional[str], ann_file: str,
             data_prefix: dict) -> dict:
    """Generate the data under ``data_root`` if asked, and fill the split's
    default ``ann_file`` / ``data_prefix`` where not given."""
    if generate and kwargs.get('data_root'):
        generate_synthetic_shapes(kwargs['data_root'], num_train, num_val,
                                  size, seed)
    if split is not None:
        kwargs.setdefault('ann_file', ann_file)
        kwargs.setdefault('data_prefix', data_prefix)
    return kwargs


if MMDET_AVAILABLE:

    @MMDET_DATASETS.register_module()
    class M2FSyntheticShapesCocoDataset(CocoDataset):
        """The synthetic shapes as COCO instances; generated on first use.

        Each instance's mask is its visible pixels (later shapes occlude
        earlier ones); labels 0..4 are ``disc .. cross``.

        Args:
            generate: Generate the data if ``data_root`` is not complete.
            num_train, num_val, size, seed: Passed to the generator.
            split: ``'train'`` or ``'val'``: fills ``ann_file``
                (``annotations/instances_<split>.json``) and ``data_prefix``
                (``img=img_dir/<split>/``) where not given.
            **kwargs: ``CocoDataset`` arguments (``data_root``,
                ``ann_file``, ``data_prefix``, ``pipeline``, ...).
        """

        METAINFO = dict(classes=THING_CLASSES, thing_classes=THING_CLASSES,
                        stuff_classes=(), palette=THING_PALETTE)

        def __init__(self, generate: bool = True, num_train: int = 400,
                     num_val: int = 50, size: int = 128, seed: int = 0,
                     split: Optional[str] = None, **kwargs) -> None:
            kwargs = _prepare(
                kwargs, generate, num_train, num_val, size, seed, split,
                f'annotations/instances_{split}.json',
                dict(img=f'img_dir/{split}/'))
            super().__init__(**kwargs)

    @MMDET_DATASETS.register_module()
    class M2FSyntheticShapesPanopticDataset(CocoPanopticDataset):
        """The synthetic shapes as COCO panoptic; generated on first use.

        Labels 0..4 are the things ``disc .. cross``, 5 the stuff
        ``background``; the ignore band around shapes is VOID (255 in
        ``gt_seg_map``).

        Args:
            generate: Generate the data if ``data_root`` is not complete.
            num_train, num_val, size, seed: Passed to the generator.
            split: ``'train'`` or ``'val'``: fills ``ann_file``
                (``annotations/panoptic_<split>.json``) and ``data_prefix``
                (``img=img_dir/<split>/``,
                ``seg=annotations/panoptic_<split>/``) where not given.
            **kwargs: ``CocoPanopticDataset`` arguments (``data_root``,
                ``ann_file``, ``data_prefix``, ``pipeline``, ...).
        """

        METAINFO = dict(classes=PANOPTIC_CLASSES,
                        thing_classes=THING_CLASSES,
                        stuff_classes=STUFF_CLASSES,
                        palette=PANOPTIC_PALETTE)

        def __init__(self, generate: bool = True, num_train: int = 400,
                     num_val: int = 50, size: int = 128, seed: int = 0,
                     split: Optional[str] = None, **kwargs) -> None:
            kwargs = _prepare(
                kwargs, generate, num_train, num_val, size, seed, split,
                f'annotations/panoptic_{split}.json',
                dict(img=f'img_dir/{split}/',
                     seg=f'annotations/panoptic_{split}/'))
            super().__init__(**kwargs)

# the classes exist only with a usable mmdet
__all__ = ['MMDET_AVAILABLE'] + (
    ['M2FSyntheticShapesCocoDataset', 'M2FSyntheticShapesPanopticDataset']
    if MMDET_AVAILABLE else [])
