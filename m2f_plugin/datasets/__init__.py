"""Data sets shipped with the plugin (generated locally, never downloaded)."""
from .synthetic_shapes import (
    CLASSES,
    PALETTE,
    M2FSyntheticShapesDataset,
    generate_synthetic_shapes,
)

__all__ = ['CLASSES', 'PALETTE', 'M2FSyntheticShapesDataset',
           'generate_synthetic_shapes']
