"""An optimizer-wrapper constructor that keeps one parameter group per set of
options instead of one per parameter.

mmengine's ``DefaultOptimWrapperConstructor`` with a ``paramwise_cfg`` puts
every parameter in its own group: 451 groups for Mask2Former R50, where only
four distinct (lr, weight decay) settings exist. PyTorch's optimizers loop over
groups in Python, so each step pays the per-group overhead 451 times, and a
``foreach``/``fused`` kernel only ever sees one tensor. Merging the groups
gives the same update (every parameter keeps its own lr and weight decay)
with far less host work per step.

Use it in a config::

    optim_wrapper = dict(
        constructor='M2FOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, fused=True),
        paramwise_cfg=dict(...))

Checkpoints written with mmengine's default constructor (one group per
parameter) resume into the merged groups: the saved groups are merged the
same way before PyTorch loads them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


def _options(group: Dict[str, Any]) -> Dict[str, Any]:
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
        opts = _options(group)
        for target in merged:
            if _options(target) == opts:
                target['params'].extend(group['params'])
                break
        else:
            merged.append(dict(opts, params=list(group['params'])))
    return merged


def _merge_saved_groups(optimizer, state_dict: Dict[str, Any]
                        ) -> Optional[Dict[str, Any]]:
    """``load_state_dict`` pre-hook: a state dict with one group per
    parameter (mmengine's default constructor) is merged like ours."""
    saved = state_dict['param_groups']
    ours = optimizer.param_groups
    if len(saved) == len(ours):
        return None
    merged = merge_param_groups(saved)
    if [len(g['params']) for g in merged] != [len(g['params']) for g in ours]:
        raise ValueError(
            f'The checkpoint\'s optimizer has {len(saved)} parameter groups '
            f'({len(merged)} after merging equal options, sizes '
            f'{[len(g["params"]) for g in merged]}), this one has '
            f'{len(ours)} (sizes {[len(g["params"]) for g in ours]}). '
            'M2FOptimWrapperConstructor merges parameters with equal options '
            'into one group; the checkpoint comes from a different model or '
            'paramwise_cfg. Resume with the config that wrote it, or start '
            'from its weights only (load_from without resume).')
    return dict(state_dict, param_groups=merged)


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
        at the top of the recursion (``prefix == ''``), merge the groups."""
        super().add_params(params, module, prefix, is_dcn_module)
        if prefix == '':
            params[:] = merge_param_groups(params)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper; its optimizer also loads state dicts
        saved with one group per parameter."""
        wrapper = super().__call__(model)
        if self.paramwise_cfg:
            wrapper.optimizer.register_load_state_dict_pre_hook(
                _merge_saved_groups)
        return wrapper
