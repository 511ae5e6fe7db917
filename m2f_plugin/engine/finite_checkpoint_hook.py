"""Never write (or load) a checkpoint whose weights hold NaN/Inf.

mmengine's ``CheckpointHook`` deletes the oldest kept checkpoint
(``max_keep_ckpts``) *before* it writes the new one, and removes the previous
best checkpoint before it writes a new best. A diverged run therefore replaced
its last good checkpoints with NaN ones. ``M2FFiniteCheckpointHook`` runs just
before ``CheckpointHook`` wherever that hook is about to save (its
``interval``/``save_last`` rule after an iteration or epoch, and every
validation when ``save_best`` is set) and checks the model's weights and
buffers with one reduction (a single device-to-host copy, at save time only).
If any is non-finite it raises ``M2FNonFiniteError`` before the rotation runs:
nothing is written, nothing is deleted, and ``last_checkpoint`` still points
at the last finite checkpoint, which the message tells how to resume from.
Under distributed training every rank takes the same decision.

``before_save_checkpoint`` repeats the check on the checkpoint itself, for
saves made outside ``CheckpointHook``'s schedule (rank 0 only, where the file
is written). ``after_load_checkpoint`` refuses a checkpoint that already holds
non-finite weights (written by a run without this hook), for ``load_from``,
resume and ``tools/test.py``.
"""
from __future__ import annotations

import glob
import os.path as osp
from typing import List, Mapping, Optional

import torch
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import find_latest_checkpoint
from mmseg.registry import HOOKS

from .nonfinite_error import M2FNonFiniteError, resume_advice
from .rank_agreement import any_rank, gather_from_ranks, prepare_host_group

__all__ = ['M2FFiniteCheckpointHook', 'nonfinite_tensors']


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors holding a NaN or an Inf.

    One reduction (the max-norm of every tensor, in which NaN and Inf
    propagate) and one device-to-host copy when all are finite.

    Args:
        tensors: name -> tensor, e.g. a state dict.
    """
    named = [(k, t) for k, t in tensors.items()
             if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not named:
        return []
    values = [t.detach() for _, t in named]
    try:
        norms = torch._foreach_norm(values, float('inf'))
    except (AttributeError, RuntimeError, TypeError):  # private API
        norms = [torch.linalg.vector_norm(v, float('inf')) for v in values]
    device = norms[0].device
    norms = torch.stack([n.to(device, torch.float32) for n in norms])
    finite = torch.isfinite(norms)
    if bool(finite.all()):
        return []
    return [k for (k, _), ok in zip(named, finite.tolist()) if not ok]


def _shown(names: List[str], limit: int = 8) -> str:
    more = f', ... ({len(names) - limit} more)' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


@HOOKS.register_module()
class M2FFiniteCheckpointHook(Hook):
    """Refuse to save or load checkpoints with non-finite weights.

    Declared in ``configs/_base_/m2f_runtime.py``, which our configs
    inherit; ``tools/train.py`` adds it to a config that lacks it.
    """

    # after the loss guard (BELOW_NORMAL), before CheckpointHook (VERY_LOW)
    priority = 'LOW'

    def before_train(self, runner) -> None:
        prepare_host_group()  # collective: every rank is here

    def _checkpoint_hooks(self, runner) -> List[CheckpointHook]:
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        due = any(
            not h.by_epoch and (
                h.every_n_train_iters(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_iter(runner)))
            for h in self._checkpoint_hooks(runner))
        if due:
            self.check_model(runner, f'iteration={runner.iter + 1}')

    def after_train_epoch(self, runner) -> None:
        due = any(
            h.by_epoch and (
                h.every_n_epochs(runner, h.interval, h.save_begin)
                or (h.save_last and h.is_last_train_epoch(runner)))
            for h in self._checkpoint_hooks(runner))
        if due:
            self.check_model(runner, f'epoch={runner.epoch + 1}')

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        if any(h.save_best for h in self._checkpoint_hooks(runner)):
            self.check_model(runner, f'iteration={runner.iter} (best '
                             'checkpoint after validation)')

    def check_model(self, runner, when: str) -> None:
        """Raise ``M2FNonFiniteError`` on every rank if any rank's model
        holds a non-finite weight or buffer.

        Args:
            runner: The mmengine runner.
            when: Where training is, for the message.
        """
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        state = model.state_dict()
        bad = nonfinite_tensors(state)
        if not any_rank(bool(bad)):
            return
        per_rank = gather_from_ranks(bad)
        names = sorted({n for rank_bad in per_rank for n in rank_bad})
        raise M2FNonFiniteError(
            f'Refusing to save a checkpoint at {when}: {len(names)} of '
            f'{len(state)} weight tensors hold NaN/Inf ({_shown(names)}). '
            'Nothing was written and no earlier checkpoint was deleted.\n'
            'Training diverged (the losses logged so far were finite, so the '
            'last optimizer step produced these values).\n'
            + resume_advice(runner))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint.get('state_dict', {}))
        if bad:
            raise M2FNonFiniteError(
                f'Refusing to save a checkpoint: {len(bad)} weight tensors '
                f'hold NaN/Inf ({_shown(bad)}). Nothing was written.\n'
                + resume_advice(runner))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint.get('state_dict', {}))
        if not bad:
            return
        source = getattr(runner, '_load_from', None)
        if source is None and getattr(runner, '_resume', False):
            source = find_latest_checkpoint(runner.work_dir)
        others = sorted(
            p for p in glob.glob(osp.join(osp.dirname(source or ''), '*.pth'))
            if not osp.samefile(p, source)) if source else []
        raise M2FNonFiniteError(
            f'{source or "The checkpoint"} holds NaN/Inf in {len(bad)} weight '
            f'tensors ({_shown(bad)}): it was written by a run that diverged. '
            'Use an earlier checkpoint of that run'
            + (f' ({_shown(others, 5)})' if others else '')
            + '; to resume training from one: --resume --cfg-options '
            'load_from=<that .pth>.')
