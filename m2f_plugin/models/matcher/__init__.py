"""Hungarian matching with point-sampled costs (registered in TASK_UTILS)."""
from .hungarian_matcher import M2FHungarianMatcher, Match
from .match_costs import class_cost, dice_cost, sigmoid_bce_cost

__all__ = ['M2FHungarianMatcher', 'Match', 'class_cost', 'dice_cost',
           'sigmoid_bce_cost']
