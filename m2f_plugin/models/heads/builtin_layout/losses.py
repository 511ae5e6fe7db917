"""The built-in head's losses, match costs and ``train_cfg``, read.

mmdet's ``CrossEntropyLoss`` / ``DiceLoss`` -> ``M2FClassLoss``,
``M2FPointBCELoss``, ``M2FPointDiceLoss``; ``HungarianAssigner`` match costs
-> ``M2FHungarianMatcher`` weights; the point sampling of ``train_cfg``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .reader import MISSING, Reader, bare_type

__all__ = ['matcher_from_assigner', 'read_loss_cls', 'read_loss_dice',
           'read_loss_mask', 'read_train_cfg']

_MATCH_COSTS = {'ClassificationCost': 'cost_class',
                'CrossEntropyLossCost': 'cost_mask',
                'DiceCost': 'cost_dice'}
_ALL_COST_WEIGHTS = ('cost_class', 'cost_mask', 'cost_dice')


def _cross_entropy(r: Reader, sigmoid: bool) -> None:
    """mmdet ``CrossEntropyLoss`` options shared by both uses."""
    r.expect('type', MISSING, ['CrossEntropyLoss', 'mmdet.CrossEntropyLoss'],
             "set type='CrossEntropyLoss' as the built-in does, or ours")
    r.expect('use_sigmoid', False, [sigmoid],
             f'the built-in computes this loss with use_sigmoid={sigmoid}; '
             'set it so')
    r.expect('use_mask', False, [False], 'delete it')
    r.expect('reduction', 'mean', ['mean'],
             "the built-in averages it (avg_factor); set reduction='mean'")
    r.expect('ignore_index', None, [None], 'delete it')
    r.expect('avg_non_ignore', False, [False], 'delete it')


def read_loss_cls(r: Reader) -> dict:
    """Softmax ``CrossEntropyLoss`` with ``class_weight`` ->
    ``M2FClassLoss``."""
    _cross_entropy(r, sigmoid=False)
    weight = r.get('class_weight', None)
    if weight is None:
        r.fail(f'{r.name("class_weight")} is required by the built-in head; '
               'set class_weight=[1.0] * num_classes + [0.1]')
    loss_weight = r.get('loss_weight', 1.0)
    r.finish()
    return dict(type='M2FClassLoss', class_weight=list(weight),
                loss_weight=loss_weight)


def read_loss_mask(r: Reader) -> dict:
    """Sigmoid ``CrossEntropyLoss`` -> ``M2FPointBCELoss``."""
    _cross_entropy(r, sigmoid=True)
    r.expect('class_weight', None, [None],
             'ours weighs every point alike; delete it')
    loss_weight = r.get('loss_weight', 1.0)
    r.finish()
    return dict(type='M2FPointBCELoss', loss_weight=loss_weight)


def read_loss_dice(r: Reader) -> dict:
    """Naive sigmoid ``DiceLoss`` -> ``M2FPointDiceLoss``."""
    r.expect('type', MISSING, ['DiceLoss', 'mmdet.DiceLoss'],
             "set type='DiceLoss' as the built-in does, or ours")
    r.expect('use_sigmoid', True, [True], 'set use_sigmoid=True')
    r.expect('activate', True, [True],
             'ours applies the sigmoid; set activate=True')
    r.expect('naive_dice', False, [True],
             'ours is the naive Dice (1 - (2|pt| + eps) / (|p| + |t| + eps));'
             ' set naive_dice=True')
    r.expect('reduction', 'mean', ['mean'],
             "the built-in averages it (avg_factor); set reduction='mean'")
    eps = r.get('eps', 1e-3)
    loss_weight = r.get('loss_weight', 1.0)
    r.finish()
    return dict(type='M2FPointDiceLoss', eps=eps, loss_weight=loss_weight)


def _match_cost(r: Reader) -> Tuple[str, float]:
    """One mmdet match cost -> (our weight key, weight)."""
    kind = bare_type(r.get('type'))
    if kind not in _MATCH_COSTS:
        r.fail(f'{r.name("type")}={r.cfg["type"]!r}: our matcher computes '
               'ClassificationCost, CrossEntropyLossCost(use_sigmoid=True) '
               'and DiceCost(pred_act=True, naive_dice=True, eps=1.0) only; '
               'remove it or replace it by one of those')
    weight = r.get('weight', 1.0)
    if kind == 'CrossEntropyLossCost':
        r.expect('use_sigmoid', True, [True], 'set use_sigmoid=True')
    elif kind == 'DiceCost':
        r.expect('pred_act', False, [True],
                 'ours applies the sigmoid; set pred_act=True')
        r.expect('naive_dice', True, [True], 'set naive_dice=True')
        r.expect('eps', 1e-3, [1.0],
                 "ours matches with the paper's eps=1.0; set eps=1.0")
    r.finish()
    return _MATCH_COSTS[kind], weight


def matcher_from_assigner(assigner: Optional[dict], num_points: int,
                          path: str = 'train_cfg.assigner',
                          head: str = 'M2FDetHead') -> dict:
    """mmdet's ``HungarianAssigner`` config -> ``M2FHungarianMatcher``'s.

    Every cost kind gets its weight (summed if given twice; 0 if absent);
    anything our matcher cannot compute raises ``BuiltinLayoutError``.
    None or an empty dict: our matcher's defaults.
    """
    matcher: Dict[str, Any] = dict(type='M2FHungarianMatcher',
                                   num_points=num_points)
    if not assigner:
        return matcher
    r = Reader(assigner, path, head)
    r.expect('type', 'HungarianAssigner',
             ['HungarianAssigner', 'mmdet.HungarianAssigner'],
             "our matcher is the Hungarian one; set type='HungarianAssigner'")
    costs = r.get('match_costs')
    if isinstance(costs, dict):  # as HungarianAssigner accepts
        costs = [costs]
    weights = dict.fromkeys(_ALL_COST_WEIGHTS, 0.0)
    for i, cost in enumerate(costs):
        key, weight = _match_cost(Reader(cost, f'{path}.match_costs[{i}]',
                                          head))
        weights[key] += weight
    r.finish()
    matcher.update(weights)
    return matcher


def read_train_cfg(r: Reader) -> dict:
    """Head ``train_cfg`` -> matcher and point-sampling keys."""
    num_points = r.get('num_points', 12544)
    out = dict(num_points=num_points,
               oversample_ratio=r.get('oversample_ratio', 3.0),
               importance_sample_ratio=r.get('importance_sample_ratio', 0.75))
    out['matcher'] = matcher_from_assigner(
        r.get('assigner'), num_points, r.name('assigner'), r.head)
    sampler = r.sub('sampler')
    sampler.expect('type', MISSING,
                   ['MaskPseudoSampler', 'mmdet.MaskPseudoSampler'],
                   "our criterion takes every matched pair, as "
                   "MaskPseudoSampler; set type='MaskPseudoSampler'")
    sampler.finish()
    r.finish()
    return out
