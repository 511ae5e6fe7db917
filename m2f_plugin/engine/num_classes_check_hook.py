"""Fail before the first step when the head and the data set disagree."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['M2FNumClassesCheckHook', 'check_num_classes']


def check_num_classes(model, dataset, field: str = 'train_dataloader') -> None:
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
    """
    from ..models.heads import M2FHead
    if is_model_wrapper(model):
        model = model.module
    if hasattr(getattr(model, 'panoptic_head', None), 'num_things_classes'):
        _check_things_and_stuff(model.panoptic_head,
                                getattr(dataset, 'metainfo', {}), field)
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


@HOOKS.register_module()
class M2FNumClassesCheckHook(Hook):
    """Compare the head's class count with the data sets' before running.

    ``tools/train.py`` and ``tools/test.py`` register it; add it to
    ``custom_hooks`` when using your own entry point.
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        check_num_classes(runner.model, runner.train_dataloader.dataset)

    def before_test(self, runner) -> None:
        check_num_classes(runner.model, runner.test_dataloader.dataset,
                          'test_dataloader')
