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
there are schedulers). A setting that differs matters when

* the scheduled values (learning rates, momentum) that the iterations still
  to train would get differ between the two schedules: both are stepped over
  those iterations on a stand-in optimizer and compared (relative tolerance
  ``1e-6``). Raising ``max_iters`` within a scheduler's ``end`` changes
  nothing and is not reported;
* an unscheduled parameter-group option (``weight_decay``, ...) or the number
  of schedulers differs;
* the run is extended past the end of the config's learning-rate schedule,
  which was timed to the checkpoint's run: the added iterations would train
  at its final value (0, or ``eta_min``) whichever schedule is used. The
  message names the ``param_scheduler.<i>.end`` to move and the command. A
  schedule that ended before the checkpoint's last iteration (a tail at
  ``eta_min`` by design) is questioned only if that tail is at lr 0.

``on_change`` decides what happens then:

* ``'error'`` (default): raise before the first resumed step, listing the
  differences, the learning rate each choice gives and the commands that
  make each choice.
* ``'config'``: apply the config. Its schedulers are replayed from step 0 to
  the resumed iteration (exactly as the ``ParamSchedulerHook`` steps them), so
  the learning rates and scheduler states are those the run would have now
  had it used this config from the start; the parameter-group options come
  from the config too. The optimizer's state (moments) and the iteration come
  from the checkpoint. If the iterations past the end of its learning-rate
  schedule would train at learning rate 0, it raises with the fix; a final
  value above 0 is applied with a warning.
* ``'checkpoint'``: keep mmengine's behaviour, with a warning.

``tools/train.py --resume-schedule {error,config,checkpoint}`` sets it.
Schedulers given per optimizer (a dict) are not checked; the end of the
schedule is checked for iteration-based learning-rate schedulers.
"""
from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, find_latest_checkpoint
from mmseg.registry import HOOKS

from .optim_wrapper_constructor import IMPLEMENTATION_KEYS, group_options
from .train_command import train_command

__all__ = ['M2FResumeScheduleHook', 'replay_schedule', 'schedule_changes',
           'schedule_values', 'first_difference']

ON_CHANGE = ('error', 'config', 'checkpoint')
# scheduler state that records progress, not the schedule
_PROGRESS_KEYS = ('last_step', '_global_step', '_last_value', 'verbose',
                  '_get_value_called_within_step')
# scheduler state with one entry per parameter group
_PER_GROUP_STATE = ('base_values', '_last_value', 'min_values')
# scheduled values closer than this (relative) are the same schedule: a
# replayed schedule and a trained one do the same float operations, but a
# closed form and a chained one do not
REL_TOL = 1e-6


class _GroupsOnly:
    """Stand-in optimizer for replaying schedules: parameter groups only."""

    def __init__(self, param_groups: List[dict]) -> None:
        self.param_groups = param_groups
        self._global_step = 0

    def step(self) -> None:  # schedulers check that it counts steps
        pass

    step._with_counter = True  # type: ignore[attr-defined]


def _per_group(state: dict, key: str, count: int) -> bool:
    value = state[key]
    return key in _PER_GROUP_STATE and isinstance(value, list) \
        and len(value) == count


def _take(states: Sequence[dict], count: int, index: Sequence[int]
          ) -> List[dict]:
    """``states`` of schedulers over ``count`` groups, their per-group
    entries taken at ``index``."""
    return [{k: [v[i] for i in index] if _per_group(state, k, count) else v
             for k, v in state.items()} for state in states]


def _distinct(*schedules: Tuple[Sequence[dict], Sequence[dict]]
              ) -> Tuple[List[int], List[int]]:
    """Groups that every ``(groups, scheduler states)`` schedule treats
    alike: same options, same per-group scheduler state.

    A config with per-parameter options has one group per parameter
    (hundreds), scheduled in a few distinct ways; stepping one of each keeps
    a long replay to seconds.

    Returns:
        One representative group index per kind, and for every group the
        position of its kind.
    """
    count = len(schedules[0][0])
    seen: dict = {}
    index: List[int] = []
    kinds: List[int] = []
    for g in range(count):
        key = repr([(sorted(group_options(groups[g]).items()),
                     [[state[k][g] for k in sorted(state)
                       if _per_group(state, k, count)] for state in states])
                    for groups, states in schedules])
        if key not in seen:
            seen[key] = len(index)
            index.append(g)
        kinds.append(seen[key])
    return index, kinds


def _clones(schedulers: Sequence[Any], states: Sequence[dict],
            groups: Sequence[dict], index: Optional[Sequence[int]] = None
            ) -> Tuple[List[dict], List[Any]]:
    """Copies of ``groups`` (those at ``index``) and of ``schedulers`` (in
    ``states``) acting on them; the inputs are not modified."""
    if index is not None:
        states = _take(states, len(groups), index)
        groups = [groups[i] for i in index]
    groups = [copy.deepcopy(group_options(g)) for g in groups]
    optimizer = _GroupsOnly(groups)
    clones = []
    for scheduler, state in zip(schedulers, states):
        clone = copy.copy(scheduler)
        clone.__dict__.update(copy.deepcopy(state))
        clone.optimizer = optimizer
        clones.append(clone)
    return groups, clones


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
    index, kinds = _distinct((groups, states))
    distinct, clones = _clones(schedulers, states, groups, index)
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
    # every group of a kind went the same way as its representative
    return ([copy.deepcopy(distinct[k]) for k in kinds],
            _take([c.state_dict() for c in clones], len(index), kinds))


def schedule_values(schedulers: Sequence[Any], states: Sequence[dict],
                    groups: Sequence[dict], done: int, count: int,
                    keys: Sequence[str],
                    iters_per_epoch: Optional[int] = None,
                    index: Optional[Sequence[int]] = None
                    ) -> List[List[tuple]]:
    """The scheduled values the next ``count`` iterations train at.

    Args:
        schedulers: mmengine parameter schedulers (templates, not modified).
        states: Their states at the start (after ``done`` iterations).
        groups: Parameter-group options at the start (not modified).
        done: Iterations trained so far (where epoch boundaries fall).
        count: Iterations to simulate.
        keys: Group keys to read (``'lr'``, ``'momentum'``, ...).
        iters_per_epoch: Step the epoch-based schedulers after every this
            many iterations (epoch-based loops); ``None``: never.
        index: Only the groups at these indices (e.g. one of each kind, see
            ``_distinct``); ``None``: all.

    Returns:
        For iteration ``done + 1 + j``, one tuple per group (in ``index``) of
        the values of ``keys`` (``None`` where a group lacks one).
    """
    groups, clones = _clones(schedulers, states, groups, index)
    by_iter = [c for c in clones if not c.by_epoch]
    by_epoch = [c for c in clones if c.by_epoch] if iters_per_epoch else []
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "scheduler.step() before optimizer"
        for j in range(count):
            values.append([tuple(g.get(k) for k in keys)
                           for g in groups])
            if j == count - 1:
                break  # nothing trains after the last iteration
            for clone in by_iter:  # as ParamSchedulerHook.after_train_iter
                clone.step()
            if by_epoch and (done + j + 1) % iters_per_epoch == 0:
                for clone in by_epoch:
                    clone.step()
    return values


def _flat(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _close(a: Any, b: Any) -> bool:
    """Equal scheduled values, floats within ``REL_TOL``."""
    a, b = _flat(a), _flat(b)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            if not math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def first_difference(old: Sequence[Sequence[tuple]],
                     new: Sequence[Sequence[tuple]]
                     ) -> Optional[Tuple[int, int, int]]:
    """``(iteration offset, group, key index)`` of the first scheduled value
    that differs between two ``schedule_values`` results, or ``None``."""
    for j, (old_groups, new_groups) in enumerate(zip(old, new)):
        if len(old_groups) != len(new_groups):
            return j, 0, 0
        for g, (a, b) in enumerate(zip(old_groups, new_groups)):
            for k, (x, y) in enumerate(zip(a, b)):
                if not _close(x, y):
                    return j, g, k
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f'[{", ".join(_fmt(v) for v in value[:3])}, ...]'
    if isinstance(value, (list, tuple)):
        return f'[{", ".join(_fmt(v) for v in value)}]'
    return repr(value)


def _scheduler_changes(ckpt_states: Sequence[dict],
                       cfg_states: Sequence[dict], names: Sequence[str],
                       ckpt_max: Optional[int], cfg_max: Optional[int]
                       ) -> List[str]:
    """Scheduler settings and ``max_iters`` that differ: they matter only
    through the values they schedule."""
    changes = []
    if ckpt_max is not None and cfg_max is not None and ckpt_max != cfg_max \
            and cfg_states:
        changes.append(f'train_cfg.max_iters: {ckpt_max} -> {cfg_max}')
    for i, (old, new) in enumerate(zip(ckpt_states, cfg_states)):
        for key in sorted(set(old) & set(new)):
            if key in _PROGRESS_KEYS or old[key] == new[key]:
                continue
            shown = 'base values (learning rates)' if key == 'base_values' \
                and new.get('param_name') == 'lr' else key
            changes.append(f'param_scheduler[{i}] ({names[i]}) {shown}: '
                           f'{_fmt(old[key])} -> {_fmt(new[key])}')
    return changes


def _structure_changes(ckpt_states: Sequence[dict],
                       cfg_states: Sequence[dict],
                       ckpt_groups: Optional[Sequence[dict]],
                       cfg_groups: Sequence[dict], scheduled: Sequence[str]
                       ) -> List[str]:
    """Differences that matter whatever the scheduled values: the number of
    schedulers and the unscheduled parameter-group options."""
    changes = []
    if len(ckpt_states) != len(cfg_states):
        changes.append(f'number of param_scheduler entries: '
                       f'{len(ckpt_states)} -> {len(cfg_states)}')
    if ckpt_groups is not None and len(ckpt_groups) == len(cfg_groups):
        # a scheduled value moves with progress; its initial value is the
        # scheduler's base value, compared through the scheduled values
        skip = ({*scheduled, *(f'initial_{k}' for k in scheduled), 'params'}
                | set(IMPLEMENTATION_KEYS))
        for i, (old, new) in enumerate(zip(ckpt_groups, cfg_groups)):
            for key in sorted(set(old) & set(new) - skip):
                if old[key] != new[key]:
                    changes.append(f'optimizer param group {i} {key}: '
                                   f'{_fmt(old[key])} -> {_fmt(new[key])}')
    return changes


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
    return (_scheduler_changes(ckpt_states, cfg_states, names, ckpt_max,
                               cfg_max)
            + _structure_changes(ckpt_states, cfg_states, ckpt_groups,
                                 cfg_groups, scheduled))


class _Ended(NamedTuple):
    """The config's learning-rate schedule ends before ``max_iters``."""

    index: int  # of the scheduler in param_scheduler
    name: str  # its class name
    end: int  # the iteration it ends at
    first: int  # first iteration trained past it (1-based)
    lr: Any  # the learning rate there (first group that trains)
    zero: bool  # every group that trains would train at lr 0
    key: str  # the --cfg-options key to move
    target: int  # the value to move it to


@HOOKS.register_module()
class M2FResumeScheduleHook(Hook):
    """On resume, detect a schedule that differs from the checkpoint's (see
    the module docstring).

    Declared in ``configs/_base_/m2f_runtime.py``, which our configs
    inherit; ``tools/train.py`` adds it to a config that lacks it.

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
            groups=[copy.deepcopy(group_options(g)) for g in groups],
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
            groups=[group_options(g) for g in groups] if groups else None,
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
        names = [type(s).__name__ for s in schedulers]
        settings = _scheduler_changes(ckpt['states'], cfg['states'], names,
                                      ckpt['max_iters'], cfg['max_iters'])
        structure = _structure_changes(ckpt['states'], cfg['states'],
                                       ckpt['groups'], cfg['groups'],
                                       scheduled)
        if not settings and not structure:
            return
        new_groups, new_states = self._replay(runner, schedulers)
        # what the iterations still to train get under each schedule; the
        # runner's schedulers and groups hold the checkpoint's by now
        nxt, remaining = runner.iter + 1, runner.max_iters - runner.iter
        keys = [k for k in scheduled
                if any(k in g for g in runner.optim_wrapper.param_groups)]
        per_epoch = self._iters_per_epoch(runner)
        old_groups = runner.optim_wrapper.param_groups
        old_states = [s.state_dict() for s in schedulers]
        index = None
        if len(old_groups) == len(new_groups):
            index, _ = _distinct((old_groups, old_states),
                                 (new_groups, new_states))
        old_values = schedule_values(schedulers, old_states, old_groups,
                                     runner.iter, remaining, keys, per_epoch,
                                     index)
        new_values = schedule_values(schedulers, new_states, new_groups,
                                     runner.iter, remaining, keys, per_epoch,
                                     index)
        index = index or list(range(len(new_groups)))
        diff = first_difference(old_values, new_values)
        ended = self._ended(runner, new_values, keys, ckpt['max_iters'],
                            index)
        changes = settings + structure
        listing = '\n'.join(f'  {c}' for c in changes)
        where = (f'Resuming {ckpt["path"]} at iteration {runner.iter} with a '
                 "schedule that differs from the checkpoint's "
                 '(checkpoint -> config):\n' + listing)
        if diff is None and not structure and ended is None:
            # the settings differ, the values trained at do not
            print_log(f'{where}\nBoth schedules give the same '
                      f'{"/".join(keys) or "values"} for iterations {nxt}-'
                      f'{runner.max_iters}: resuming.', logger='current',
                      level=logging.INFO)
            if self.on_change == 'config':
                self._apply(runner, schedulers, new_groups, new_states)
            return
        lr_key = keys.index('lr') if 'lr' in keys else None
        old_lr = runner.optim_wrapper.param_groups[0].get('lr')
        if self.on_change == 'checkpoint':
            tail = ('' if ended is None else '\n' + self._ended_text(
                runner, ended, same=diff is None, command=False))
            print_log(f'{where}\nKeeping the checkpoint\'s schedule '
                      f'(on_change=\'checkpoint\'): lr={_fmt(old_lr)} at '
                      f'iteration {nxt}.{tail}', logger='current',
                      level=logging.WARNING)
            return
        if self.on_change == 'error':
            raise ValueError(self._error(
                runner, where, diff, old_values, new_values, keys, index,
                ended))
        self._apply(runner, schedulers, new_groups, new_states)
        if ended is not None and ended.zero:
            raise ValueError('\n'.join([where, self._ended_text(
                runner, ended, same=False)] + self._commands(ended)))
        new_lr = (new_values[0][0][lr_key] if lr_key is not None and
                  new_values else new_groups[0].get('lr'))
        tail = ('' if ended is None else '\n' + self._ended_text(
            runner, ended, same=False, command=False))
        print_log(f'{where}\nApplied this config\'s schedule '
                  f'(on_change=\'config\'): lr={_fmt(new_lr)} at iteration '
                  f'{nxt}, as if the run had used it from the start.{tail}',
                  logger='current', level=logging.WARNING)

    @staticmethod
    def _apply(runner, schedulers: list, groups: List[dict],
               states: List[dict]) -> None:
        for group, new in zip(runner.optim_wrapper.param_groups, groups):
            group.update(new)
        for scheduler, state in zip(schedulers, states):
            scheduler.load_state_dict(state)

    @staticmethod
    def _iters_per_epoch(runner) -> Optional[int]:
        loop = runner.train_loop
        return (len(loop.dataloader)
                if isinstance(loop, EpochBasedTrainLoop) else None)

    def _replay(self, runner, schedulers: list
                ) -> Tuple[List[dict], List[dict]]:
        """The config's groups and scheduler states at the resumed step."""
        per_epoch = self._iters_per_epoch(runner)
        return replay_schedule(schedulers, self._config['states'],
                               self._config['groups'], runner.iter,
                               runner.epoch if per_epoch else 0, per_epoch)

    def _ended(self, runner, values: List[List[tuple]], keys: Sequence[str],
               ckpt_max: Optional[int], index: Sequence[int]
               ) -> Optional[_Ended]:
        """Whether the config's learning-rate schedule ends before
        ``max_iters`` with iterations left past it at its final value: 0, or
        a decayed value (``eta_min``) when that end was timed to the
        checkpoint's run (at or after the iterations it was trained for)."""
        if 'lr' not in keys or not values:
            return None
        states = self._config['states']
        ends = [(state['end'], i) for i, state in enumerate(states)
                if state.get('param_name') == 'lr'
                and not state.get('by_epoch')]
        if not ends:
            return None
        end, which = max(ends)
        max_iters = runner.max_iters
        if end >= max_iters:
            return None
        first = max(end, runner.iter) + 1
        lr_key = keys.index('lr')
        past = values[first - runner.iter - 1]
        bases = states[which].get('base_values') or []
        # groups with a base learning rate of 0 (frozen) never train
        trained = [(g, bases[i]) for g, i in enumerate(index)
                   if g < len(past) and i < len(bases) and bases[i]]
        if not trained:
            return None
        lrs = [past[g][lr_key] for g, _ in trained]
        zero = all(lr == 0 for lr in lrs)
        decayed = all(lr < base * (1 - REL_TOL)
                      for (_, base), lr in zip(trained, lrs))
        timed = end >= (ckpt_max if ckpt_max is not None else runner.iter)
        if not zero and not (decayed and timed):
            return None
        key, target = self._end_key(runner, which, max_iters)
        return _Ended(which, type(runner.param_schedulers[which]).__name__,
                      end, first, lrs[0], zero, key, target)

    @staticmethod
    def _end_key(runner, index: int, max_iters: int) -> Tuple[str, int]:
        """The ``--cfg-options`` key of the scheduler's ``end`` and the value
        that ends it with the run, in the config's units."""
        cfg = getattr(runner, 'cfg', None)
        entry = cfg.get('param_scheduler') if cfg is not None else None
        key = ('param_scheduler.end' if isinstance(entry, dict)
               else f'param_scheduler.{index}.end')
        if isinstance(entry, (list, tuple)) and index < len(entry):
            entry = entry[index]
        if (isinstance(entry, dict) and entry.get('convert_to_iter_based')
                and isinstance(runner.train_loop, EpochBasedTrainLoop)):
            return key, runner.max_epochs  # given in epochs, run in iters
        return key, max_iters

    @staticmethod
    def _ended_text(runner, ended: _Ended, same: bool,
                    command: bool = True) -> str:
        """What the added iterations would train at, and the fix (followed
        by its command when ``command``)."""
        which = ('with the checkpoint\'s schedule as with this config\'s'
                 if same else 'with this config\'s schedule')
        value = '0' if ended.zero else f'{_fmt(ended.lr)} (its final value)'
        fix = (', and take this config\'s schedule (replayed to the resumed '
               'iteration, as if the run had used it from the start):'
               if command else '.')
        return (f"This config's param_scheduler[{ended.index}] ({ended.name}) "
                f'ends at iteration {ended.end} but train_cfg.max_iters='
                f'{runner.max_iters}: iterations {ended.first}-'
                f'{runner.max_iters} would train at lr={value} {which}. '
                f'Set {ended.key}={ended.target} to extend the schedule with '
                f'the run{fix}')

    @staticmethod
    def _commands(ended: _Ended) -> List[str]:
        """The command that extends the schedule with the run."""
        command = train_command(['--resume-schedule', 'config'],
                                drop=('--resume-schedule',),
                                cfg_options=[f'{ended.key}={ended.target}'])
        if command:
            return [f'    {command}']
        return [f'    {ended.key}={ended.target} in the config, and '
                "M2FResumeScheduleHook(on_change='config')"]

    def _error(self, runner, where: str, diff: Optional[Tuple[int, int, int]],
               old_values: List[List[tuple]], new_values: List[List[tuple]],
               keys: Sequence[str], index: Sequence[int],
               ended: Optional[_Ended]) -> str:
        lines = [where]
        same = diff is None
        if diff is not None:
            j, g, k = diff
            key = keys[k]
            # named by its place in the optimizer
            group = (f' (param group {index[g]})'
                     if g < len(index) and index[g] else '')
            lines.append(
                'mmengine restores the schedule and the learning rates from '
                f'the checkpoint: iteration {runner.iter + 1 + j} would train '
                f'at {key}={_fmt(old_values[j][g][k])}{group} (the '
                f"checkpoint's schedule), not {key}="
                f"{_fmt(new_values[j][g][k])} (this config's, as if the run "
                'had used it from the start).')
        elif ended is None:
            lines.append(
                'mmengine restores the schedulers and the parameter-group '
                "options from the checkpoint: the run would keep the "
                "checkpoint's (above), not this config's.")
        # this config's schedule is no choice where it trains at lr 0 (the
        # 'config' policy refuses it), nor the checkpoint's where it is the
        # same
        choices = ['config', 'checkpoint']
        if ended is not None:
            lines.append(self._ended_text(runner, ended, same))
            lines += self._commands(ended)
            if ended.zero:
                choices.remove('config')
                if same:
                    return '\n'.join(lines)
                lines.append("Or keep the checkpoint's schedule:")
            elif same:
                lines.append(f'To train iterations {ended.first}-'
                             f'{runner.max_iters} at lr={_fmt(ended.lr)} on '
                             'purpose, choose one:')
            else:
                lines.append('Or choose one:')
        else:
            lines[-1] += ' Choose one:'
        for choice in choices:
            command = train_command(['--resume-schedule', choice],
                                    drop=('--resume-schedule',))
            which = ("this config's schedule" if choice == 'config'
                     else "the checkpoint's schedule")
            lines += ([f'  {which}:', f'    {command}'] if command else
                      [f"  M2FResumeScheduleHook(on_change='{choice}'): "
                       f'{which}'])
        return '\n'.join(lines)
