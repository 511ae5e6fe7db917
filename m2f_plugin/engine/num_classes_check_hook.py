"""Fail before the first step when the head and the data set disagree."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['M2FNumClassesCheckHook', 'check_num_classes']


def check_num_classes(model, dataset, field: str = 'train_dataloader') -> None:
    """Raise ``ValueError`` if ``M2FHead.num_classes`` != the data set's.

    Args:
        model: The segmentor (possibly wrapped by DDP).
        dataset: A data set with ``metainfo['classes']``.
        field: Config field named in the message.
    """
    from ..models.heads import M2FHead
    if is_model_wrapper(model):
        model = model.module
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
