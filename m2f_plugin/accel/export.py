"""The one switch for tracing and ONNX export.

A trace records the ops one call runs, with Python values frozen as
constants. Three things in the model are right eagerly but wrong in a
dynamic-size trace, and ``prepare_for_export`` turns each off:

* per-size caches (position encodings, the pixel decoder's level geometry):
  a cached tensor would enter the trace as a constant of the traced size;
* the banded per-class map (``M2FHead.predict_chunk``): its Python loop over
  rows would be unrolled for the traced height;
* compiled deformable-attention kernels (mmcv's, Triton's): they do not
  export; the PyTorch reference does.
"""
from __future__ import annotations

from torch import nn

__all__ = ['prepare_for_export']


def prepare_for_export(model: nn.Module) -> int:
    """Switch ``model`` (in place) to its exportable, size-agnostic paths.

    Args:
        model: A segmentor or head containing this package's modules.

    Returns:
        The number of deformable-attention layers switched to the PyTorch
        reference.
    """
    from ..models.heads import M2FHead
    from ..models.layers import MSDeformAttn
    switched = 0
    for m in model.modules():
        if isinstance(getattr(m, 'cache', None), bool):
            m.cache = False
        if isinstance(m, M2FHead):
            m.predict_chunk = 0
        if isinstance(m, MSDeformAttn):
            m.impl = 'pytorch'
            switched += 1
    return switched
