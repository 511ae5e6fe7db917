"""Agree on a host-side decision across distributed ranks.

A guard that stops training must stop every rank at the same iteration: a rank
that raises while the others go on leaves them waiting in the next gradient
all-reduce. The decisions here are made from host values (Python floats that
mmengine already copied from the device for logging), so they are exchanged
over a gloo (CPU) process group: agreeing costs one small host round trip
between the ranks and never waits for the accelerator. When the default group
is not gloo (NCCL on GPUs), one extra gloo group over the same ranks is
created the first time it is needed; ``prepare_host_group`` lets a hook create
it at a point every rank reaches (``before_train``), as ``new_group`` requires.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size, is_distributed

__all__ = ['any_rank', 'gather_from_ranks', 'prepare_host_group']

_HOST_GROUPS: dict = {}


def prepare_host_group() -> Optional[object]:
    """Return the gloo group for host values (``None``: the default group).

    Must be called by every rank (collectively) the first time.
    """
    if not is_distributed():
        return None
    default = torch_dist.group.WORLD
    if torch_dist.get_backend(default) == 'gloo':
        return None
    key = id(default)
    if key not in _HOST_GROUPS:
        _HOST_GROUPS[key] = torch_dist.new_group(backend='gloo')
    return _HOST_GROUPS[key]


def any_rank(flag: bool) -> bool:
    """``True`` on every rank if ``flag`` is ``True`` on at least one.

    Args:
        flag: This rank's answer.
    """
    if not is_distributed() or get_world_size() == 1:
        return bool(flag)
    value = torch.tensor([int(bool(flag))], dtype=torch.int32)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX,
                          group=prepare_host_group())
    return bool(value.item())  # a CPU tensor: no device synchronisation


def gather_from_ranks(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank.

    Args:
        obj: This rank's object.
    """
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    torch_dist.all_gather_object(out, obj, group=prepare_host_group())
    return out
