"""Data sets shipped with the plugin (generated locally, never downloaded).

``M2FSyntheticShapesDataset`` (mmseg, semantic) and, with a usable mmdet,
``M2FSyntheticShapesCocoDataset`` / ``M2FSyntheticShapesPanopticDataset``
(mmdet, COCO instances / panoptic) read the same generated shapes.
"""
from .synthetic_shapes import (
    CLASSES,
    PALETTE,
    PANOPTIC_CLASSES,
    STUFF_CLASSES,
    THING_CLASSES,
    M2FSyntheticShapesDataset,
    generate_synthetic_shapes,
)
from .synthetic_shapes_coco import MMDET_AVAILABLE

__all__ = ['CLASSES', 'PALETTE', 'THING_CLASSES', 'STUFF_CLASSES',
           'PANOPTIC_CLASSES', 'MMDET_AVAILABLE', 'M2FSyntheticShapesDataset',
           'generate_synthetic_shapes']
if MMDET_AVAILABLE:
    from .synthetic_shapes_coco import (  # noqa: F401
        M2FSyntheticShapesCocoDataset,
        M2FSyntheticShapesPanopticDataset,
    )
    __all__ += ['M2FSyntheticShapesCocoDataset',
                'M2FSyntheticShapesPanopticDataset']
