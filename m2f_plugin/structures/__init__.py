"""Data structures: semantic maps as mask targets."""
from .sem_seg_to_masks import MaskTargets, sem_seg_to_masks

__all__ = ['MaskTargets', 'sem_seg_to_masks']
