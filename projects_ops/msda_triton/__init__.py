"""Multi-scale deformable attention (Deformable DETR) in Triton.

Forward and backward kernels for float32 / float16 / bfloat16, a drop-in for
mmcv's ``MultiScaleDeformableAttnFunction``; see :mod:`.function`.
Importing this package imports ``triton``.
"""
from .function import (
    DEFAULT_CONFIG,
    MSDAConfig,
    TritonMSDAFunction,
    ms_deform_attn_triton,
)

__all__ = ['DEFAULT_CONFIG', 'MSDAConfig', 'TritonMSDAFunction',
           'ms_deform_attn_triton']
