"""Overlays users get from ``DetInferencer``, the ``DetVisualizationHook``
and the demo: one kind of prediction per image, the image showing through,
labels kept inside the image."""
from .readable_overlays import M2FDetLocalVisualizer, keep_inside

__all__ = ['M2FDetLocalVisualizer', 'keep_inside']
