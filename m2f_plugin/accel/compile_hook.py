"""``torch.compile`` for validation and testing too.

mmengine's ``compile`` option (``compile=True`` or a dict of
``torch.compile`` arguments in a config) compiles the runner's
``train_step`` only. ``M2FCompileHook`` applies the same option to
``val_step`` and ``test_step``, so ``compile=True`` covers training,
validation and ``tools/test.py``. ``tools/train.py`` and ``tools/test.py``
add it when the config sets ``compile``.
"""
from __future__ import annotations

from typing import Optional

import torch
from mmengine.hooks import Hook
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
    """Compile the model's ``val_step`` and ``test_step`` as mmengine
    compiles ``train_step``, with the config's ``compile`` arguments."""

    priority = 'VERY_HIGH'

    def _compile(self, runner, target: str) -> None:
        options = compile_options(runner.cfg)
        model = runner.model
        if options is None or getattr(model, f'_m2f_compiled_{target}',
                                      False):
            return
        setattr(model, target, torch.compile(getattr(model, target),
                                             **options))
        setattr(model, f'_m2f_compiled_{target}', True)
        runner.logger.info(f'{target} compiled with torch.compile'
                           f'({options or ""}); the first iterations are '
                           'slow while it compiles')

    def before_val(self, runner) -> None:
        """Compile ``val_step``."""
        self._compile(runner, 'val_step')

    def before_test(self, runner) -> None:
        """Compile ``test_step``."""
        self._compile(runner, 'test_step')
