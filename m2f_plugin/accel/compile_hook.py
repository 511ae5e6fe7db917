"""``torch.compile`` for validation and testing too.

mmengine's ``compile`` option (``compile=True`` or a dict of
``torch.compile`` arguments in a config) compiles the runner's
``train_step`` only. ``M2FCompileHook`` applies the same option to the
segmentor's ``inference`` (images -> per-class logits, whole or slide), which
``val_step`` and ``test_step`` call, so ``compile=True`` covers training,
validation and ``tools/test.py``. Not the whole ``val_step``: its result
packing copies NumPy metadata, which ``torch.compile`` cannot trace.
``tools/train.py`` and ``tools/test.py`` add the hook when the config sets
``compile``.
"""
from __future__ import annotations

from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['M2FCompileHook', 'compile_options']


def compile_options(cfg) -> Optional[dict]:
    """``torch.compile`` arguments of a config's ``compile`` option, or None
    when it is off (as mmengine reads it)."""
    option = cfg.get('compile', None)
    if option is None or option is False:
        return None
    if option is True:
        return {}
    if not isinstance(option, dict):
        raise TypeError(f'compile must be a bool or a dict of torch.compile '
                        f'arguments, got {type(option).__name__}: {option!r}')
    return dict(option)


@HOOKS.register_module()
class M2FCompileHook(Hook):
    """Compile the segmentor's ``inference`` before validation or testing,
    with the config's ``compile`` arguments (once)."""

    priority = 'VERY_HIGH'

    def _compile(self, runner) -> None:
        options = compile_options(runner.cfg)
        if options is None:
            return
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        if 'inference' in vars(model):  # compiled already
            return
        if not hasattr(model, 'inference'):
            runner.logger.warning(
                f'M2FCompileHook: {type(model).__name__} has no inference() '
                'to compile; validation and testing run eagerly')
            return
        model.inference = torch.compile(model.inference, **options)
        runner.logger.info(f'inference compiled with torch.compile'
                           f'({options or ""}); the first iterations are '
                           'slow while it compiles')

    def before_val(self, runner) -> None:
        """Compile before the first validation."""
        self._compile(runner)

    def before_test(self, runner) -> None:
        """Compile before testing."""
        self._compile(runner)
