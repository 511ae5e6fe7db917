"""What ``tools/train.py`` brings to a run besides its options.

- The guards: ``custom_hooks`` of ``configs/_base_/m2f_runtime.py``, which
  our configs inherit; ``add_missing_hooks`` adds those that a config leaves
  out (an older user config, or one that replaced the list), with a warning.
- This process's command line, for error messages that tell the user the
  exact command to run next.
- The options ``tools/train.py`` and ``tools/test.py`` share, and the config
  loading they share.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import os.path as osp
import shlex
import sys
from typing import Any, List, Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmengine.utils import import_modules_from_strings

__all__ = ['RUNTIME_BASE', 'add_common_arguments', 'add_missing_hooks', 'config_hooks', 'guard_hooks', 'load_config',
           'runtime_base', 'set_hook_options', 'train_command']

# the guards' config, relative to configs/
RUNTIME_BASE = osp.join('_base_', 'm2f_runtime.py')

# flags taking no value / one value, that a message may set again
_SWITCHES = ('--resume',)
_WITH_VALUE = ('--resume-schedule',)


def _merge_cfg_options(args: List[str], options: Sequence[str]
                       ) -> List[str]:
    """``args`` with ``options`` (``key=value``) added to its last
    ``--cfg-options`` group (a new one at the end if none), replacing any
    earlier value of the same keys."""
    keys = {o.split('=', 1)[0] for o in options}
    out: List[str] = []
    insert_at: Optional[int] = None
    in_group = False
    for arg in args:
        if arg == '--cfg-options':
            in_group = True
            out.append(arg)
            insert_at = len(out)
            continue
        if in_group and arg.startswith('-'):
            in_group = False  # the next flag ends the group (nargs='+')
        if in_group:
            if arg.split('=', 1)[0] in keys:
                continue  # replaced by the new value
            out.append(arg)
            insert_at = len(out)
            continue
        out.append(arg)
    if insert_at is None:
        return out + ['--cfg-options', *options]
    return out[:insert_at] + list(options) + out[insert_at:]


def train_command(extra: Sequence[str],
                  drop: Sequence[str] = _SWITCHES + _WITH_VALUE,
                  cfg_options: Sequence[str] = ()) -> Optional[str]:
    """This process's command, without the flags in ``drop``, plus ``extra``.

    Args:
        extra: Arguments to append (e.g. ``['--resume', '--cfg-options',
            'load_from=x.pth']``; a second ``--cfg-options`` adds to the
            first).
        drop: Flags removed first (with their value for ``--resume-schedule``).
        cfg_options: ``key=value`` settings merged into the command's own
            ``--cfg-options`` (replacing the same keys there), so that the
            printed command reads as one list of overrides.

    Returns:
        A shell command (``python tools/train.py ...``, or ``torchrun
        --nproc_per_node=N tools/train.py ...`` under a launcher), or ``None``
        when this process is not ``tools/train.py``.
    """
    argv = list(sys.argv)
    if not argv or osp.basename(argv[0]) != 'train.py':
        return None
    args: List[str] = []
    skip_value = False
    for arg in argv[1:]:
        if skip_value:
            skip_value = False
            continue
        name = arg.split('=', 1)[0]
        if name in drop:
            skip_value = name in _WITH_VALUE and '=' not in arg
            continue
        args.append(arg)
    if cfg_options:
        args = _merge_cfg_options(args, cfg_options)
    launcher = 'python'
    for i, arg in enumerate(args):
        if arg == '--launcher' and i + 1 < len(args):
            value: Optional[str] = args[i + 1]
        elif arg.startswith('--launcher='):
            value = arg.split('=', 1)[1]
        else:
            continue
        if value != 'none':
            launcher = f'torchrun --nproc_per_node={get_world_size()}'
    return ' '.join([launcher] + [shlex.quote(a) for a in
                                  [argv[0]] + args + list(extra)])


def runtime_base() -> str:
    """Path of ``configs/_base_/m2f_runtime.py``: the installed copy (under
    ``m2f_plugin/.mim``, where ``mim`` looks), else the checkout's."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    tried = []
    for configs in (osp.join(package, '.mim', 'configs'),
                    osp.join(osp.dirname(package), 'configs')):
        path = osp.join(configs, RUNTIME_BASE)
        if osp.isfile(path):
            return path
        tried.append(path)
    raise FileNotFoundError(f'{RUNTIME_BASE} of m2f_plugin not found (tried '
                            f'{", ".join(tried)}); reinstall m2f_plugin.')


def guard_hooks() -> List[dict]:
    """The guards: ``custom_hooks`` of ``configs/_base_/m2f_runtime.py``."""
    cfg = Config.fromfile(runtime_base(), import_custom_modules=False)
    return cfg.to_dict()['custom_hooks']


def _hook_type(entry: Any) -> Any:
    """The ``type`` of a ``custom_hooks`` entry (a dict or a built hook)."""
    return entry.get('type') if isinstance(entry, dict) else type(entry)


def _name(hook_type: Any) -> str:
    if isinstance(hook_type, type):
        return hook_type.__name__
    return str(hook_type).rsplit('.', 1)[-1]  # 'mmdet.X' -> 'X'


def _registry(cfg: Config):
    """The hook registry that builds ``cfg``'s hooks (its default scope)."""
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.registry import HOOKS
    else:
        from mmseg.registry import HOOKS
    return HOOKS


def _resolve(hook_type: Any, registry) -> Optional[type]:
    if isinstance(hook_type, type):
        return hook_type
    try:
        return registry.get(hook_type) if isinstance(hook_type, str) else None
    except Exception:  # noqa: BLE001 - an unknown scope: compare names only
        return None


def config_hooks(cfg: Config, hook_type: Any) -> list:
    """The entries of ``cfg.custom_hooks`` that build a ``hook_type`` (its
    registered name, a scoped name or the class; subclasses count)."""
    registry = _registry(cfg)
    wanted = _resolve(hook_type, registry)
    found = []
    for entry in cfg.get('custom_hooks') or []:
        entry_type = _hook_type(entry)
        if _name(entry_type) == _name(hook_type):
            found.append(entry)
            continue
        cls = _resolve(entry_type, registry)
        if isinstance(cls, type) and isinstance(wanted, type) and issubclass(
                cls, wanted):
            found.append(entry)
    return found


def add_missing_hooks(cfg: Config, hooks: Sequence[dict],
                      who: Optional[str] = None) -> List[str]:
    """Append to ``cfg.custom_hooks`` each of ``hooks`` whose type it lacks.

    Args:
        cfg: The config, changed in place.
        hooks: Hook configs (``dict(type=..., ...)``), e.g. ``guard_hooks()``.
        who: The tool adding them, for the warning; ``None``: no warning.

    Returns:
        The type names added.
    """
    missing = [copy.deepcopy(dict(h)) for h in hooks
               if not config_hooks(cfg, h['type'])]
    if not missing:
        return []
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + missing
    names = [_name(h['type']) for h in missing]
    if who is not None:
        print_log(
            f'{who}: the config does not declare {", ".join(names)} in '
            'custom_hooks; added for this run. A plain Runner.from_cfg(cfg) '
            f'would run without them: inherit configs/{RUNTIME_BASE} (and '
            'extend its list, custom_hooks = _base_.custom_hooks + [...]).',
            logger='current', level=logging.WARNING)
    return names


def set_hook_options(cfg: Config, hook_type: Any, **options: Any) -> int:
    """Set ``options`` on every ``cfg.custom_hooks`` entry building a
    ``hook_type``. Returns how many entries were set."""
    entries = config_hooks(cfg, hook_type)
    for entry in entries:
        if isinstance(entry, dict):
            entry.update(options)
        else:  # a built hook
            for key, value in options.items():
                setattr(entry, key, value)
    return len(entries)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share:
    ``--work-dir``, ``--cfg-options``, ``--launcher``, ``--local-rank``."""
    parser.add_argument('--work-dir', help='where to save logs, checkpoints '
                        'and metrics (default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings, e.g. key=value')
    parser.add_argument('--launcher',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    """``args.config`` with the shared options applied (launcher,
    ``--cfg-options`` and the imports they add, the work dir); sets
    ``LOCAL_RANK`` for the launcher."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
        if cfg.get('custom_imports'):  # imports added on the command line
            import_modules_from_strings(**cfg.custom_imports)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg

