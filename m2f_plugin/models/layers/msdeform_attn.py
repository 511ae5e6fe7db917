"""Multi-scale deformable attention (Deformable DETR) as a layer.

The sampling kernel is chosen once, at construction (``impl``):

* ``'mmcv'`` (default): mmcv's compiled op on CUDA tensors, mmcv's PyTorch
  (grid_sample) path on the CPU. mmcv's CUDA kernel has no bfloat16 and a slow
  float16 path, so its inputs are cast to float32 and the result back.
* ``'pytorch'``: mmcv's PyTorch path everywhere (exportable, any dtype).
* ``'triton'``: our fused Triton kernels (``projects_ops.msda_triton``) on
  CUDA tensors, natively in float32 / float16 / bfloat16 (float32
  accumulation, no casts); on CPU tensors mmcv's PyTorch path, unless
  ``TRITON_INTERPRET=1`` is set, then the Triton kernels run in Triton's
  interpreter (for tests). ``projects_ops`` (at the repository root) and
  ``triton`` are imported at the first such call.
"""
from __future__ import annotations

import math
import os
from typing import Sequence, Tuple

import torch
from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttnFunction,
    multi_scale_deformable_attn_pytorch,
)
from torch import Tensor, nn

__all__ = ['MSDeformAttn', 'ms_deform_attn_core']

SpatialShapes = Sequence[Tuple[int, int]]

IMPLS = ('mmcv', 'pytorch', 'triton')


def _triton_interpret() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter."""
    return os.environ.get('TRITON_INTERPRET', '').strip().lower() in (
        '1', 'true', 'yes', 'on')


def _triton_msda():
    """``projects_ops.msda_triton.ms_deform_attn_triton``, imported lazily."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "MSDeformAttn(impl='triton') needs the 'triton' package "
            "(pip install triton, normally shipped with CUDA builds of "
            "PyTorch); or use impl='mmcv' / 'pytorch'") from e
    try:
        from projects_ops.msda_triton import ms_deform_attn_triton
    except ModuleNotFoundError as e:
        if e.name not in ('projects_ops', 'projects_ops.msda_triton'):
            raise
        raise ImportError(
            "MSDeformAttn(impl='triton') needs 'projects_ops' (at the root of "
            'the m2f_plugin repository) to be importable: run from the '
            'repository root or add it to PYTHONPATH') from e
    return ms_deform_attn_triton


def ms_deform_attn_core(value: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor, sampling_locations: Tensor,
                        attention_weights: Tensor, impl: str = 'mmcv',
                        im2col_step: int = 64) -> Tensor:
    """Sample and weight multi-scale values.

    Args:
        value: (B, N_v, heads, C_h).
        spatial_shapes: (L, 2) int64, (H, W) per level.
        level_start_index: (L,) int64.
        sampling_locations: (B, N_q, heads, L, P, 2) in [0, 1], (x, y).
        attention_weights: (B, N_q, heads, L, P), softmaxed over L * P.
        impl: ``'mmcv'``, ``'pytorch'`` or ``'triton'``.
        im2col_step: mmcv CUDA kernel's batch chunk.

    Returns:
        (B, N_q, heads * C_h) in the dtype of ``value``.
    """
    if impl == 'triton' and (value.is_cuda or _triton_interpret()):
        # no casts: the kernels read each input in its dtype, add in float32
        return _triton_msda()(value, spatial_shapes, level_start_index,
                              sampling_locations, attention_weights)
    if impl == 'mmcv' and value.is_cuda:
        dtype = value.dtype
        # mmcv's kernel: no bfloat16 and a slow float16 -> run it in float32.
        with torch.autocast('cuda', enabled=False):
            out = MultiScaleDeformableAttnFunction.apply(
                value.float(), spatial_shapes, level_start_index,
                sampling_locations.float(), attention_weights.float(),
                im2col_step)
        return out.to(dtype)
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes,
                                               sampling_locations,
                                               attention_weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable self-attention with residual.

    Parameter names follow mmcv's ``MultiScaleDeformableAttention`` so that
    checkpoints map one-to-one.

    Args:
        embed_dims: Channels C.
        num_heads: Attention heads.
        num_levels: Feature levels L.
        num_points: Sampling points P per head and level.
        dropout: Dropout on the output before the residual.
        im2col_step: mmcv CUDA kernel's batch chunk.
        impl: ``'mmcv'``, ``'pytorch'`` or ``'triton'`` (see module
            docstring).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 num_levels: int = 3, num_points: int = 4,
                 dropout: float = 0.0, im2col_step: int = 64,
                 impl: str = 'mmcv') -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        if impl not in IMPLS:
            raise ValueError(
                f"impl must be 'mmcv', 'pytorch' or 'triton', got {impl!r}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.im2col_step = im2col_step
        self.impl = impl
        self.sampling_offsets = nn.Linear(
            embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims,
                                           num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Deformable DETR init: offsets start on rays around the reference."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(
            self.num_heads, 1, 1, 2).repeat(1, self.num_levels,
                                            self.num_points, 1)
        for i in range(self.num_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: Tensor, query_pos: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
        """Self-attention over the flattened multi-scale map.

        Args:
            query: (B, N, C), the value source too.
            query_pos: (B, N, C), added to the query only.
            reference_points: (B, N, L, 2) normalised (x, y).
            spatial_shapes: (L, 2) int64 (H, W).
            level_start_index: (L,) int64.

        Returns:
            (B, N, C): ``query + dropout(attention)``.
        """
        bs, num_query, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(query).view(bs, num_query, heads, -1)
        q = query + query_pos
        offsets = self.sampling_offsets(q).view(bs, num_query, heads, levels,
                                                points, 2)
        weights = self.attention_weights(q).view(bs, num_query, heads,
                                                 levels * points)
        weights = weights.softmax(-1).view(bs, num_query, heads, levels, points)
        # offsets are in pixels of each level: normalise by (W, H)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]],
                                 -1)
        locations = reference_points[:, :, None, :, None, :] + \
            offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn_core(value, spatial_shapes, level_start_index,
                                  locations, weights, self.impl,
                                  self.im2col_step)
        return query + self.dropout(self.output_proj(out))
