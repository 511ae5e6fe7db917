"""Refuse to resume silently on a schedule other than the config's.

mmengine's ``Runner.resume`` restores the parameter schedulers and the
optimizer's hyper-parameters (learning rates included) from the checkpoint,
whatever the config now says. Extending a finished 50-iteration run with
``--resume --cfg-options train_cfg.max_iters=70 param_scheduler.0.end=70``
therefore trains iterations 51-70 at the checkpoint's final learning rate, 0
for ``PolyLR``; resuming with a lower ``optim_wrapper.optimizer.lr`` keeps the
old one.

``M2FResumeScheduleHook`` compares, on resume, the checkpoint's schedule with
the config's: every parameter scheduler's settings (``begin``, ``end``,
``eta_min``, ``power``, ``T_max``, ..., and the base values it scales, i.e.
the configured learning rates), the optimizer's parameter-group options
(``initial_lr``, ``weight_decay``, ...) and ``train_cfg.max_iters`` (when
there are schedulers). When they differ, ``on_change`` decides:

* ``'error'`` (default): raise before the first resumed step, listing the
  differences, the learning rate each choice gives and how to choose.
* ``'config'``: apply the config. Its schedulers are replayed from step 0 to
  the resumed iteration (exactly as the ``ParamSchedulerHook`` steps them), so
  the learning rates and scheduler states are those the run would have now
  had it used this config from the start; the parameter-group options come
  from the config too. The optimizer's state (moments) and the iteration come
  from the checkpoint. If the resulting learning rate is 0 for every group
  while iterations remain (a schedule that ends before ``max_iters``), it
  raises with the fix.
* ``'checkpoint'``: keep mmengine's behaviour, with a warning.

``tools/train.py --resume-schedule {error,config,checkpoint}`` sets it.
Schedulers given per optimizer (a dict) are not checked.
"""
from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, List, Optional, Sequence, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, find_latest_checkpoint
from mmseg.registry import HOOKS

from .optim_wrapper_constructor import IMPLEMENTATION_KEYS
from .train_command import train_command

__all__ = ['M2FResumeScheduleHook', 'replay_schedule', 'schedule_changes']

ON_CHANGE = ('error', 'config', 'checkpoint')
# scheduler state that records progress, not the schedule
_PROGRESS_KEYS = ('last_step', '_global_step', '_last_value', 'verbose',
                  '_get_value_called_within_step')


class _GroupsOnly:
    """Stand-in optimizer for replaying schedules: parameter groups only."""

    def __init__(self, param_groups: List[dict]) -> None:
        self.param_groups = param_groups
        self._global_step = 0

    def step(self) -> None:  # schedulers check that it counts steps
        pass

    step._with_counter = True  # type: ignore[attr-defined]


def _options(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != 'params'}


def replay_schedule(schedulers: Sequence[Any], states: Sequence[dict],
                    groups: Sequence[dict], iters: int, epochs: int = 0,
                    iters_per_epoch: Optional[int] = None
                    ) -> Tuple[List[dict], List[dict]]:
    """Step copies of ``schedulers`` from ``states`` over ``groups``.

    Args:
        schedulers: mmengine parameter schedulers (used as templates, not
            modified).
        states: Their ``state_dict()`` to start from (e.g. just built).
        groups: Parameter-group options to start from (not modified).
        iters: Training iterations done: steps of the iteration-based ones.
        epochs: Epochs done: steps of the epoch-based ones.
        iters_per_epoch: Interleave epoch steps every this many iterations
            (epoch-based loops); ``None``: after all iteration steps.

    Returns:
        The parameter-group options and scheduler states after replaying.
    """
    groups = [copy.deepcopy(_options(g)) for g in groups]
    optimizer = _GroupsOnly(groups)
    clones = []
    for scheduler, state in zip(schedulers, states):
        clone = copy.copy(scheduler)
        clone.__dict__.update(copy.deepcopy(state))
        clone.optimizer = optimizer
        clones.append(clone)
    by_iter = [c for c in clones if not c.by_epoch]
    by_epoch = [c for c in clones if c.by_epoch]
    done_epochs = 0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "scheduler.step() before optimizer"
        for i in range(iters):
            for clone in by_iter:
                clone.step()
            if (by_epoch and iters_per_epoch and done_epochs < epochs
                    and (i + 1) % iters_per_epoch == 0):
                for clone in by_epoch:
                    clone.step()
                done_epochs += 1
        for _ in range(epochs - done_epochs):
            for clone in by_epoch:
                clone.step()
    return groups, [c.state_dict() for c in clones]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f'[{", ".join(_fmt(v) for v in value[:3])}, ...]'
    if isinstance(value, (list, tuple)):
        return f'[{", ".join(_fmt(v) for v in value)}]'
    return repr(value)


def schedule_changes(ckpt_states: Sequence[dict], cfg_states: Sequence[dict],
                     names: Sequence[str], ckpt_groups: Optional[Sequence[dict]],
                     cfg_groups: Sequence[dict], scheduled: Sequence[str] = (),
                     ckpt_max: Optional[int] = None,
                     cfg_max: Optional[int] = None) -> List[str]:
    """Human-readable differences between a checkpoint's schedule and the
    config's, ``"what: checkpoint -> config"``; empty when they agree.

    Args:
        ckpt_states: The checkpoint's ``param_schedulers``.
        cfg_states: The config's schedulers' ``state_dict()`` (just built).
        names: Class names of the config's schedulers.
        ckpt_groups: The checkpoint's optimizer ``param_groups`` (or None).
        cfg_groups: The config's optimizer parameter groups.
        scheduled: Group keys the schedulers set (compared through them).
        ckpt_max: ``max_iters`` the checkpoint was trained for (or None).
        cfg_max: The config's ``max_iters``.
    """
    changes = []
    if ckpt_max is not None and cfg_max is not None and ckpt_max != cfg_max \
            and cfg_states:
        changes.append(f'train_cfg.max_iters: {ckpt_max} -> {cfg_max}')
    if len(ckpt_states) != len(cfg_states):
        changes.append(f'number of param_scheduler entries: '
                       f'{len(ckpt_states)} -> {len(cfg_states)}')
    for i, (old, new) in enumerate(zip(ckpt_states, cfg_states)):
        for key in sorted(set(old) & set(new)):
            if key in _PROGRESS_KEYS or old[key] == new[key]:
                continue
            shown = 'base values (learning rates)' if key == 'base_values' \
                and new.get('param_name') == 'lr' else key
            changes.append(f'param_scheduler[{i}] ({names[i]}) {shown}: '
                           f'{_fmt(old[key])} -> {_fmt(new[key])}')
    if ckpt_groups is not None and len(ckpt_groups) == len(cfg_groups):
        # a scheduled value moves with progress; its initial value is the
        # scheduler's base value, compared above
        skip = ({*scheduled, *(f'initial_{k}' for k in scheduled), 'params'}
                | set(IMPLEMENTATION_KEYS))
        for i, (old, new) in enumerate(zip(ckpt_groups, cfg_groups)):
            for key in sorted(set(old) & set(new) - skip):
                if old[key] != new[key]:
                    changes.append(f'optimizer param group {i} {key}: '
                                   f'{_fmt(old[key])} -> {_fmt(new[key])}')
    return changes


@HOOKS.register_module()
class M2FResumeScheduleHook(Hook):
    """On resume, detect a schedule that differs from the checkpoint's (see
    the module docstring).

    ``tools/train.py`` registers it; add ``dict(type='M2FResumeScheduleHook')``
    to ``custom_hooks`` when using your own entry point.

    Args:
        on_change: ``'error'``, ``'config'`` or ``'checkpoint'``.
    """

    priority = 'VERY_HIGH'  # settle the schedule before anything reads it

    def __init__(self, on_change: str = 'error') -> None:
        if on_change not in ON_CHANGE:
            raise ValueError(f'on_change must be one of {ON_CHANGE}, got '
                             f'{on_change!r}')
        self.on_change = on_change
        self._config: Optional[dict] = None
        self._checkpoint: Optional[dict] = None

    @staticmethod
    def _schedulers(runner) -> Optional[list]:
        schedulers = runner.param_schedulers
        return schedulers if isinstance(schedulers, list) else None

    def before_run(self, runner) -> None:
        """Snapshot the config's schedule: built, not yet resumed."""
        self._config = self._checkpoint = None
        schedulers = self._schedulers(runner)
        if schedulers is None and runner.param_schedulers is not None:
            return  # one list per optimizer: not checked
        try:
            groups = runner.optim_wrapper.param_groups
            max_iters = runner.max_iters
        except (AttributeError, TypeError):  # no training set up
            return
        schedulers = schedulers or []
        self._config = dict(
            states=[copy.deepcopy(s.state_dict()) for s in schedulers],
            groups=[copy.deepcopy(_options(g)) for g in groups],
            max_iters=max_iters)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False) or self._config is None:
            return  # load_from (fine-tuning) starts the config's schedule
        optimizer = checkpoint.get('optimizer', {})
        groups = optimizer.get('param_groups') \
            if isinstance(optimizer, dict) else None
        hub = checkpoint.get('message_hub', {}).get('runtime_info', {})
        self._checkpoint = dict(
            states=list(checkpoint.get('param_schedulers') or []),
            groups=[_options(g) for g in groups] if groups else None,
            max_iters=hub.get('max_iters'),
            path=(getattr(runner, '_load_from', None)
                  or find_latest_checkpoint(runner.work_dir)))

    def before_train(self, runner) -> None:
        if self._checkpoint is None or self._config is None:
            return
        ckpt, cfg = self._checkpoint, self._config
        self._checkpoint = None
        schedulers = self._schedulers(runner) or []
        scheduled = sorted({s.param_name for s in schedulers}
                           | ({'betas'} if any(s.param_name == 'momentum'
                                               for s in schedulers) else set()))
        changes = schedule_changes(
            ckpt['states'], cfg['states'],
            [type(s).__name__ for s in schedulers], ckpt['groups'],
            cfg['groups'], scheduled, ckpt['max_iters'], cfg['max_iters'])
        if not changes:
            return
        new_groups, new_states = self._replay(runner, schedulers)
        nxt = runner.iter + 1
        old_lr = runner.optim_wrapper.param_groups[0].get('lr')
        new_lr = new_groups[0].get('lr')
        listing = '\n'.join(f'  {c}' for c in changes)
        where = (f'Resuming {ckpt["path"]} at iteration {runner.iter} with a '
                 "schedule that differs from the checkpoint's "
                 '(checkpoint -> config):\n' + listing)
        if self.on_change == 'checkpoint':
            print_log(f'{where}\nKeeping the checkpoint\'s schedule '
                      f'(on_change=\'checkpoint\'): lr={_fmt(old_lr)} at '
                      f'iteration {nxt}.', logger='current',
                      level=logging.WARNING)
            return
        if self.on_change == 'error':
            raise ValueError(self._error(where, nxt, old_lr, new_lr))
        for group, new in zip(runner.optim_wrapper.param_groups, new_groups):
            group.update(new)
        for scheduler, state in zip(schedulers, new_states):
            scheduler.load_state_dict(state)
        lrs = [g.get('lr') for g in runner.optim_wrapper.param_groups]
        if runner.iter < runner.max_iters and lrs and all(
                lr == 0 for lr in lrs):
            ends = [s.end for s in schedulers if not s.by_epoch]
            raise ValueError(
                f'{where}\nWith this config\'s schedule the learning rate at '
                f'iteration {nxt} is 0 for every parameter group: its '
                f'param_scheduler ends at iteration {max(ends, default="?")} '
                f'but train_cfg.max_iters={runner.max_iters}. Extend the '
                'scheduler with the run, e.g. --cfg-options '
                f'param_scheduler.{len(schedulers) - 1}.end={runner.max_iters}.')
        print_log(f'{where}\nApplied this config\'s schedule '
                  f'(on_change=\'config\'): lr={_fmt(new_lr)} at iteration '
                  f'{nxt}, as if the run had used it from the start.',
                  logger='current', level=logging.WARNING)

    def _replay(self, runner, schedulers: list
                ) -> Tuple[List[dict], List[dict]]:
        """The config's groups and scheduler states at the resumed step."""
        loop = runner.train_loop
        per_epoch = (len(loop.dataloader)
                     if isinstance(loop, EpochBasedTrainLoop) else None)
        return replay_schedule(schedulers, self._config['states'],
                               self._config['groups'], runner.iter,
                               runner.epoch if per_epoch else 0, per_epoch)

    @staticmethod
    def _error(where: str, nxt: int, old_lr: Any, new_lr: Any) -> str:
        config = train_command(['--resume-schedule', 'config'], drop=(
            '--resume-schedule',))
        keep = train_command(['--resume-schedule', 'checkpoint'], drop=(
            '--resume-schedule',))
        lines = [
            where,
            'mmengine restores the schedule and the learning rates from the '
            f'checkpoint: iteration {nxt} would train at lr={_fmt(old_lr)} '
            "(the checkpoint's schedule), not lr="
            f"{_fmt(new_lr)} (this config's, as if the run had used it from "
            'the start). Choose one:']
        if config:
            lines += ["  this config's schedule:", f'    {config}',
                      "  the checkpoint's schedule:", f'    {keep}']
        else:
            lines += ["  M2FResumeScheduleHook(on_change='config'): this "
                      "config's schedule",
                      "  M2FResumeScheduleHook(on_change='checkpoint'): the "
                      "checkpoint's"]
        return '\n'.join(lines)
