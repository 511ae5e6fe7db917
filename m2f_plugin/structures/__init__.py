"""Data structures: the decoder's predictions and the mask targets built
from label maps, panoptic segments or instance masks."""
from .instances_to_masks import (
    UNLABELLED_SEGMENT,
    instances_to_masks,
    panoptic_to_masks,
)
from .mask_targets import (
    InstanceMaskTargets,
    MaskTargets,
    SegmentMapTargets,
    SemanticTargets,
)
from .predictions import Match, Predictions
from .sem_seg_to_masks import sem_seg_to_masks

__all__ = ['InstanceMaskTargets', 'MaskTargets', 'Match', 'Predictions',
           'SegmentMapTargets', 'SemanticTargets', 'UNLABELLED_SEGMENT',
           'instances_to_masks', 'panoptic_to_masks', 'sem_seg_to_masks']
