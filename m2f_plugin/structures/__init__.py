"""Data structures: mask targets from label maps, the decoder's predictions."""
from .predictions import Match, Predictions, mask_logits
from .sem_seg_to_masks import MaskTargets, sem_seg_to_masks

__all__ = ['MaskTargets', 'Match', 'Predictions', 'mask_logits',
           'sem_seg_to_masks']
