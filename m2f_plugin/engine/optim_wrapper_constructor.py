"""An optimizer-wrapper constructor that keeps one parameter group per set of
options instead of one per parameter.

mmengine's ``DefaultOptimWrapperConstructor`` with a ``paramwise_cfg`` puts
every parameter in its own group: 451 groups for Mask2Former R50, where only
four distinct option sets exist (three distinct (lr, weight decay) pairs). PyTorch's optimizers loop over
groups in Python, so each step pays the per-group overhead 451 times, and a
``foreach``/``fused`` kernel only ever sees one tensor. Merging the groups
gives the same update (every parameter keeps its own lr and weight decay)
with far less host work per step.

Use it in a config::

    optim_wrapper = dict(
        constructor='M2FOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, fused=True),
        paramwise_cfg=dict(...))

The default constructor logs one ``paramwise_options`` line per parameter and
option (hundreds of lines for a small model); this one logs one line per
merged group instead (its options, how many parameters, from which modules,
which ``custom_keys`` matched), and the parameter names of each group at
DEBUG level.

Resuming keeps this run's optimizer implementation (``fused``, ``foreach``,
...), which PyTorch would otherwise take from the checkpoint. A checkpoint
written with mmengine's default constructor (one group per parameter) is
refused with a clear error: its learning-rate schedulers' state has one entry
per parameter too, and no merge of the optimizer alone would keep them right.
Resume such a checkpoint with the default constructor, or start from its
weights (``load_from``).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Union

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


def group_options(group: Dict[str, Any]) -> Dict[str, Any]:
    """A parameter group's options: everything but ``params``."""
    return {k: v for k, v in group.items() if k != 'params'}


def merge_param_groups(groups: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Merge parameter groups whose options (everything but ``params``) are
    equal. Groups keep the order of their first member; parameters keep their
    order within each merged group. Options are compared with ``==``, so
    unhashable values (lists) are fine.

    Args:
        groups: param-group dicts, each with a ``params`` list (of tensors,
            or of indices as in an optimizer's ``state_dict``).

    Returns:
        New group dicts; the input is not modified.
    """
    merged: List[Dict[str, Any]] = []
    for group in groups:
        opts = group_options(group)
        for target in merged:
            if group_options(target) == opts:
                target['params'].extend(group['params'])
                break
        else:
            merged.append(dict(opts, params=list(group['params'])))
    return merged


_PARAMWISE_PREFIX = 'paramwise_options -- '


class _DropPerParameterLines(logging.Filter):
    """Drops the default constructor's per-parameter ``paramwise_options``
    lines (replaced by :func:`describe_param_groups`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PARAMWISE_PREFIX)


def _module_of(name: str) -> str:
    """The first two components of a parameter's module path
    (``decode_head.pixel_decoder``), or its owner for shallower names."""
    parts = name.split('.')[:-1] or [name]
    return '.'.join(parts[:2])


def describe_param_groups(groups: Sequence[Dict[str, Any]],
                          names: Dict[int, str],
                          custom_keys: Sequence[str] = (),
                          defaults: Optional[Dict[str, Any]] = None
                          ) -> List[str]:
    """One summary line per parameter group, for the log.

    Args:
        groups: Param-group dicts (``params``: tensors).
        names: ``id(param)`` -> parameter name.
        custom_keys: The ``paramwise_cfg.custom_keys`` names; each line says
            which of them its parameters matched (first match, longest key
            first, as the default constructor applies them).
        defaults: The optimizer's own options (``lr``, ``weight_decay``),
            shown for groups that do not set them.

    Returns:
        Lines like ``paramwise_options -- group 2/3: lr=0.0003,
        weight_decay=0.0 -> 78 parameters (backbone.bn1: 2, ...; custom keys:
        ...)``; a group with only the optimizer's options says so.
    """
    keys = sorted(sorted(custom_keys), key=len, reverse=True)
    defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
    lines = []
    for i, group in enumerate(groups, 1):
        own = group_options(group)
        opts = ', '.join(f'{k}={v}' for k, v in {**defaults, **own}.items())
        if not own:
            opts = f'{opts} (optimizer defaults)' if opts else 'optimizer defaults'
        group_names = [names.get(id(p), '?') for p in group['params']]
        modules = Counter(_module_of(n) for n in group_names)
        where = ', '.join(f'{m}: {c}' for m, c in modules.items())
        matched = []
        for n in group_names:
            key = next((k for k in keys if k in n), None)
            if key is not None and key not in matched:
                matched.append(key)
        if matched:
            where += '; custom keys: ' + ', '.join(matched)
        lines.append(f'{_PARAMWISE_PREFIX}group {i}/{len(groups)}: {opts} -> '
                     f'{len(group_names)} parameters ({where})')
    return lines


# chosen by the run, not by the checkpoint: a fused optimizer that loads a
# foreach checkpoint's groups would step the slow way, and under AMP its
# GradScaler path would fail
IMPLEMENTATION_KEYS = ('fused', 'foreach', 'capturable', 'differentiable')


def _load_state_dict_pre_hook(optimizer, state_dict: Dict[str, Any]
                              ) -> Dict[str, Any]:
    """Keep the current implementation flags; refuse another grouping."""
    saved = state_dict['param_groups']
    ours = optimizer.param_groups
    if len(saved) != len(ours):
        raise ValueError(
            f"The checkpoint's optimizer has {len(saved)} parameter groups, "
            f'this one has {len(ours)} (M2FOptimWrapperConstructor puts '
            'parameters with equal options in one group). A checkpoint '
            "written with mmengine's default constructor has one group per "
            'parameter; resume it with --cfg-options '
            'optim_wrapper.constructor=DefaultOptimWrapperConstructor '
            'optim_wrapper.optimizer.fused=None, or start from its weights '
            'only (load_from without resume).')
    groups = [dict(g, **{k: cur[k] for k in IMPLEMENTATION_KEYS if k in cur})
              for g, cur in zip(saved, ours)]
    return dict(state_dict, param_groups=groups)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class M2FOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with one parameter group per distinct
    set of options (lr, weight decay, ...) instead of one per parameter.

    Every parameter gets exactly the options the default constructor gives it
    (``custom_keys``, ``norm_decay_mult``, ``bias_lr_mult``, ...); only the
    grouping changes. Without a ``paramwise_cfg`` it is the default
    constructor (a single group).
    """

    def add_params(self, params: List[dict], module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        """Add the module's parameters as the default constructor does, then,
        at the top of the recursion (``prefix == ''``), merge the groups and
        log one line per merged group."""
        if prefix != '':
            super().add_params(params, module, prefix, is_dcn_module)
            return
        logger = MMLogger.get_current_instance()
        drop = _DropPerParameterLines()
        logger.addFilter(drop)
        try:
            super().add_params(params, module, prefix, is_dcn_module)
        finally:
            logger.removeFilter(drop)
        params[:] = merge_param_groups(params)
        names = {id(p): n for n, p in module.named_parameters()}
        custom_keys = list(self.paramwise_cfg.get('custom_keys', {}))
        defaults = {'lr': self.base_lr, 'weight_decay': self.base_wd}
        for line in describe_param_groups(params, names, custom_keys,
                                          defaults):
            print_log(line, logger='current')
        for i, group in enumerate(params, 1):
            print_log(f'{_PARAMWISE_PREFIX}group {i}/{len(params)} parameters: '
                      + ', '.join(names.get(id(p), '?')
                                  for p in group['params']),
                      logger='current', level=logging.DEBUG)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper; its optimizer keeps its implementation
        flags when it loads a state dict (see the module docstring)."""
        wrapper = super().__call__(model)
        optimizer = wrapper.optimizer
        # the default constructor hands the groups over inside a ConfigDict,
        # which turns each into a ConfigDict: plain dicts again, as
        # torch.compile (mmengine's ``compile=True``) can trace only those
        # through the optimizer's step
        optimizer.param_groups[:] = [dict(g) for g in optimizer.param_groups]
        optimizer.register_load_state_dict_pre_hook(_load_state_dict_pre_hook)
        return wrapper
