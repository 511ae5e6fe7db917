"""Carry the random-number state through checkpoints, for exact resume.

mmengine re-seeds at start-up, so a resumed run replays the random stream from
the beginning instead of continuing it: anything drawn during training (point
sampling in the Mask2Former losses, dropout, ...) differs from an uninterrupted
run. This hook stores the Python, NumPy and torch (CPU and CUDA) generator
states in every checkpoint and restores them on resume.

Exactness also needs the data pipeline's randomness to replay: it does with
``num_workers >= 1`` (mmengine re-seeds workers identically and fast-forwards
them over the batches already trained on); with ``num_workers=0`` that
fast-forward re-runs the augmentations in the main process after the restore
and shifts its random stream.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

__all__ = ['M2FRandomStateHook']

_KEY = 'm2f_random_state'


@HOOKS.register_module()
class M2FRandomStateHook(Hook):
    """Save/restore RNG states in checkpoints (``runner.resume`` only)."""

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(
            python=random.getstate(),
            numpy=np.random.get_state(),
            torch=torch.get_rng_state(),
        )
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint.setdefault('meta', {})[_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get(_KEY)
        if state is None or not getattr(runner, '_resume', False):
            return  # load_from (fine-tuning) starts a fresh random stream
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
