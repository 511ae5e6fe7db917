"""The ``tools/train.py`` command line of this process, for error messages
that tell the user the exact command to run next."""
from __future__ import annotations

import os.path as osp
import shlex
import sys
from typing import List, Optional, Sequence

from mmengine.dist import get_world_size

__all__ = ['train_command']

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
