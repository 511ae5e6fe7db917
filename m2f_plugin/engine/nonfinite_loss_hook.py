"""Stop training loudly when a loss becomes NaN or Inf.

mmengine trains on through NaN losses: the run "finishes", exits 0 and saves
NaN weights. ``M2FNonFiniteLossHook`` raises ``M2FNonFiniteError`` (a
``FloatingPointError``) at the first iteration whose total loss or any loss
term is non-finite, naming the iteration, the non-finite terms, the images of
the batch (``img_path``) and whether those input tensors were finite, and
ending with the command that resumes from the run's last checkpoint (kept
intact by ``M2FFiniteCheckpointHook``).

No extra device-to-host synchronisation: mmengine's ``RuntimeInfoHook``
already copies every logged loss to the host each iteration (``.item()`` into
the message hub, in ``after_train_iter``); this hook runs after it and reads
those Python floats. Checking before the optimizer step instead would need the
loss on the host before ``update_params``, an extra synchronisation per step;
the step of the bad iteration is therefore already applied when the hook
raises, which is harmless because the run stops before any checkpoint of that
iteration is written (this hook runs before ``CheckpointHook``). Only on
failure does it look at the batch (finiteness of the inputs, the paths).

Policies (``policy``):

* ``'raise'``: stop at the first non-finite loss.
* ``'skip'``: for mixed precision (``AmpOptimWrapper``). Its loss scaler
  already skips the optimizer step whose gradients are non-finite (and lowers
  the loss scale); a non-finite loss makes the gradients non-finite, so the
  step is skipped, not applied. The hook counts these steps (a warning each,
  the total in the message hub as ``skipped_steps``) and stops with the same
  error after ``max_consecutive_skips`` in a row. Steps the scaler skips for
  overflowing gradients with a finite loss are its routine and not counted.
  Refused with any other optimizer wrapper, which would apply the NaN step.
* ``'auto'`` (default): ``'skip'`` under ``AmpOptimWrapper``, else
  ``'raise'``.

Distributed training: losses are per rank (mmengine does not reduce the
logged values), so the ranks agree on "some rank saw a non-finite loss" each
iteration (one integer, all-reduced on the host over gloo, see
``rank_agreement``) and all stop, or skip, together; the message lists every
rank's terms and images.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook, RuntimeInfoHook
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapperDict
from mmseg.registry import HOOKS

from .finite_checkpoint_hook import M2FFiniteCheckpointHook
from .nonfinite_error import M2FNonFiniteError, resume_advice
from .rank_agreement import any_rank, gather_from_ranks, prepare_host_group

__all__ = ['M2FNonFiniteLossHook', 'batch_images']

POLICIES = ('auto', 'raise', 'skip')


def _skips_nonfinite_steps(optim_wrapper) -> bool:
    """Whether the wrapper's loss scaler skips steps with non-finite grads."""
    wrappers = (list(optim_wrapper.values())
                if isinstance(optim_wrapper, OptimWrapperDict)
                else [optim_wrapper])
    for wrapper in wrappers:
        scaler = getattr(wrapper, 'loss_scaler', None)
        if not isinstance(wrapper, AmpOptimWrapper) or scaler is None:
            return False
        if hasattr(scaler, 'is_enabled') and not scaler.is_enabled():
            return False  # a disabled GradScaler steps unconditionally
    return bool(wrappers)


def batch_images(data_batch: Any, limit: int = 16
                 ) -> List[Tuple[str, Optional[bool]]]:
    """(image path, input finite?) for the samples of a training batch.

    Args:
        data_batch: The batch as the data loader gave it (``inputs`` and
            ``data_samples`` with ``img_path`` in their metainfo).
        limit: At most this many entries.

    Returns:
        One ``(path, finite)`` per sample; ``finite`` is ``None`` when the
        input is not a tensor. Integer images are finite by construction.
    """
    if not isinstance(data_batch, dict):
        return []
    inputs = data_batch.get('inputs')
    samples = data_batch.get('data_samples') or []
    if torch.is_tensor(inputs):
        inputs = list(inputs)
    inputs = list(inputs or [])
    out: List[Tuple[str, Optional[bool]]] = []
    for i in range(min(max(len(inputs), len(samples)), limit)):
        sample = samples[i] if i < len(samples) else None
        meta = (sample if isinstance(sample, dict)
                else getattr(sample, 'metainfo', {}) or {})
        path = meta.get('img_path') or f'<sample {i}, no img_path>'
        img = inputs[i] if i < len(inputs) else None
        finite: Optional[bool] = None
        if torch.is_tensor(img):
            finite = (not img.is_floating_point()
                      or bool(torch.isfinite(img).all()))
        out.append((str(path), finite))
    return out


@HOOKS.register_module()
class M2FNonFiniteLossHook(Hook):
    """Raise ``M2FNonFiniteError`` when a loss becomes NaN/Inf (see the
    module docstring).

    Declared in ``configs/_base_/m2f_runtime.py``, which our configs
    inherit; ``tools/train.py`` adds it to a config that lacks it.

    Args:
        policy: ``'auto'``, ``'raise'`` or ``'skip'``.
        max_consecutive_skips: With ``'skip'``, stop after this many
            consecutive steps with a non-finite loss.
        max_images: At most this many image paths per rank in the message.
    """

    # after RuntimeInfoHook (VERY_HIGH, puts the losses on the host) and
    # LoggerHook (prints the iteration), before M2FFiniteCheckpointHook (LOW)
    # and CheckpointHook (VERY_LOW)
    priority = 'BELOW_NORMAL'

    def __init__(self, policy: str = 'auto', max_consecutive_skips: int = 10,
                 max_images: int = 16) -> None:
        if policy not in POLICIES:
            raise ValueError(f'policy must be one of {POLICIES}, got '
                             f'{policy!r}')
        if max_consecutive_skips < 1:
            raise ValueError('max_consecutive_skips must be >= 1, got '
                             f'{max_consecutive_skips}')
        self.policy = policy
        self.max_consecutive_skips = max_consecutive_skips
        self.max_images = max_images
        self.active_policy = 'raise' if policy == 'auto' else policy
        self.consecutive_skips = 0
        self.skipped_steps = 0
        self._host_losses = True

    def before_train(self, runner) -> None:
        prepare_host_group()  # collective: every rank is here
        amp = _skips_nonfinite_steps(runner.optim_wrapper)
        if self.policy == 'skip' and not amp:
            raise ValueError(
                "M2FNonFiniteLossHook(policy='skip') needs an AmpOptimWrapper "
                'with a loss scaler, which skips the steps whose gradients are '
                f'non-finite; {type(runner.optim_wrapper).__name__} applies '
                "them and the weights become NaN. Use policy='raise' (or "
                "'auto'), or mixed precision (tools/train.py --amp).")
        self.active_policy = ('skip' if self.policy == 'skip' or
                              (self.policy == 'auto' and amp) else 'raise')
        self.consecutive_skips = 0
        self.skipped_steps = runner.message_hub.get_info('skipped_steps', 0)
        # without RuntimeInfoHook nothing brought the losses to the host
        self._host_losses = any(isinstance(h, RuntimeInfoHook)
                                for h in runner.hooks)

    def _host_value(self, runner, key: str, value: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        if self._host_losses:
            buffer = runner.message_hub.log_scalars.get(f'train/{key}')
            if buffer is not None:
                return float(buffer.current())
        return float(value)  # a device sync, only without RuntimeInfoHook

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs:
            return
        bad: Dict[str, float] = {}
        for key, value in outputs.items():
            if 'loss' not in key:  # the terms parse_losses sums, and 'loss'
                continue
            host = self._host_value(runner, key, value)
            if not math.isfinite(host):
                bad[key] = host
        if not any_rank(bool(bad)):
            self.consecutive_skips = 0
            return
        if self.active_policy == 'skip':
            self.consecutive_skips += 1
            self.skipped_steps += 1
            runner.message_hub.update_info('skipped_steps', self.skipped_steps)
            if self.consecutive_skips < self.max_consecutive_skips:
                print_log(
                    f'Iteration {runner.iter + 1}: non-finite loss '
                    f'({_terms(bad) or "on another rank"}); the loss scaler '
                    f'skipped this step ({self.consecutive_skips} in a row, '
                    f'{self.skipped_steps} in all; stopping after '
                    f'{self.max_consecutive_skips} in a row).',
                    logger='current', level=logging.WARNING)
                return
        raise M2FNonFiniteError(self._message(runner, bad, data_batch))

    def _message(self, runner, bad: Dict[str, float], data_batch) -> str:
        report = dict(rank=get_rank(), bad=bad,
                      images=batch_images(data_batch, self.max_images))
        reports = gather_from_ranks(report)
        multi = len(reports) > 1
        lines = [f'Loss became infinite or NaN at iteration={runner.iter + 1}'
                 f' (of max_iters={runner.max_iters}).']
        if self.active_policy == 'skip':
            lines.append(
                f'The last {self.consecutive_skips} steps in a row had a '
                'non-finite loss (each skipped by the loss scaler); '
                f'max_consecutive_skips={self.max_consecutive_skips}.')
        for r in reports:
            prefix = f'rank {r["rank"]}: ' if multi else ''
            if r['bad']:
                lines.append(f'Non-finite terms ({prefix}{len(r["bad"])}): '
                             f'{_terms(r["bad"])}')
        inputs_finite = True
        lines.append('Images of that step' + (' (per rank):' if multi
                                               else ':'))
        for r in reports:
            for path, finite in r['images']:
                state = ('input finite' if finite else
                         'input NOT FINITE' if finite is False else
                         'input not checked')
                inputs_finite &= finite is not False
                rank = f'[rank {r["rank"]}] ' if multi else ''
                lines.append(f'  {rank}{path}  ({state})')
        if inputs_finite:
            lines.append('Their inputs are finite: the training diverged '
                         '(learning rate too high, no gradient clipping, or '
                         'mixed-precision overflow).')
        else:
            lines.append('Inputs marked NOT FINITE hold NaN/Inf values: the '
                         'data is at fault, fix or remove those images.')
        if any(isinstance(h, M2FFiniteCheckpointHook) for h in runner.hooks):
            lines.append('No checkpoint with non-finite weights was written.')
        lines.append(resume_advice(runner, inputs_finite=inputs_finite))
        return '\n'.join(lines)


def _terms(bad: Dict[str, float]) -> str:
    return ', '.join(f'{k}={v}' for k, v in bad.items())
