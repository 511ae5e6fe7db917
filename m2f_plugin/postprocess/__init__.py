"""Post-processing: a prediction set (class logits, mask logits) to results.

Tensor operations only, written once for eager inference and export: no
Python loop over queries or segments, no host reads, traceable. Semantic
maps (``semantic``), mmdet's panoptic fusion (``panoptic``) and mmdet's
instance results (``instance``) share one primitive (``kept_masks``): the
chosen queries' masks taken back to image pixels, a few at a time.
"""
from .instance import instance_results, masks_to_boxes
from .kept_masks import MaskGeometry, kept_masks, resize_masks
from .panoptic import INSTANCE_OFFSET, panoptic_fusion
from .semantic import semantic_labels, semantic_logits, semantic_map

__all__ = [
    'INSTANCE_OFFSET', 'MaskGeometry', 'instance_results', 'kept_masks',
    'masks_to_boxes', 'panoptic_fusion', 'resize_masks', 'semantic_labels',
    'semantic_logits', 'semantic_map'
]
