"""The error a diverged run stops with, and how to pick it up again.

Both guards (``M2FNonFiniteLossHook`` for the losses,
``M2FFiniteCheckpointHook`` for the weights about to be saved) raise
``M2FNonFiniteError``, a ``FloatingPointError`` as in detectron2, whose
message ends with the last checkpoint of the run and the exact command that
resumes from it.
"""
from __future__ import annotations

import os.path as osp
from typing import List, Optional

from .train_command import train_command

__all__ = ['M2FNonFiniteError', 'last_checkpoint', 'resume_advice']


class M2FNonFiniteError(FloatingPointError):
    """Training produced NaN/Inf losses or weights."""


def last_checkpoint(runner) -> Optional[str]:
    """Path of the run's latest checkpoint that still exists, or ``None``.

    With ``M2FFiniteCheckpointHook`` every checkpoint written holds finite
    weights, so this is the one to resume from.

    Args:
        runner: The mmengine runner.
    """
    candidates = []
    if runner.message_hub.get_info('last_ckpt') is not None:
        candidates.append(runner.message_hub.get_info('last_ckpt'))
    pointer = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            candidates.append(f.read().strip())
    for path in candidates:
        if path and osp.isfile(path):
            return path
    return None


def _lowered_lr(runner) -> Optional[str]:
    """A tenth of the configured base learning rate, as a cfg option."""
    try:
        lr = float(runner.cfg.optim_wrapper.optimizer.lr)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return f'optim_wrapper.optimizer.lr={lr / 10:g}'


def _command(checkpoint: Optional[str], options: List[str]
             ) -> Optional[str]:
    """This process's ``tools/train.py`` command with ``options`` added,
    resuming from ``checkpoint`` if given."""
    extra: List[str] = []
    if checkpoint:
        extra.append('--resume')
        if any(o.startswith('optim_wrapper.') for o in options):
            # a changed learning rate only takes effect on resume with this
            extra += ['--resume-schedule', 'config']
    cfg_options = ([f'load_from={checkpoint}'] if checkpoint else []) + options
    if cfg_options:
        extra += ['--cfg-options'] + cfg_options
    return train_command(extra)


def resume_advice(runner, inputs_finite: bool = True) -> str:
    """The closing lines of the error: where the last checkpoint is and the
    command that resumes from it.

    Args:
        runner: The mmengine runner.
        inputs_finite: ``False`` when the batch held NaN/Inf inputs: the data
            needs fixing, not the learning rate.
    """
    ckpt = last_checkpoint(runner)
    lowered = _lowered_lr(runner) if inputs_finite else None
    options = [lowered] if lowered else []
    clip = ('gradient clipping (optim_wrapper.clip_grad=dict(max_norm=1.0, '
            'norm_type=2))')
    if not inputs_finite:
        why = 'after fixing or removing those images'
    elif lowered:
        why = f'with the cause fixed: a lower learning rate (a tenth below) or {clip}'
    else:
        why = ('with the cause fixed: a lower learning rate '
               f'(optim_wrapper.optimizer.lr) or {clip}')
    command = _command(ckpt, options)
    if ckpt is None:
        return '\n'.join([
            'No checkpoint of this run was written before this point; train '
            f'again {why}:',
            f'  {command}' if command else '  (the same config'
            + (f' with {lowered}' if lowered else '') + ')'])
    lines = [f'Last checkpoint (finite weights): {ckpt}',
             f'Resume from it {why}:']
    if command:
        lines.append(f'  {command}')
    else:
        lines.append(f"  resume=True, load_from='{ckpt}'"
                     + (f', {lowered}' if lowered else '') + ' in the config; '
                     'a changed learning rate or schedule takes effect on '
                     "resume with custom_hooks=[dict(type='M2FResumeSchedule"
                     "Hook', on_change='config')]")
    return '\n'.join(lines)
