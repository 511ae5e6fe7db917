"""Multi-scale deformable attention (Deformable DETR) as a layer.

The sampling kernel is chosen once, at construction (``impl``), from
``m2f_plugin.ops.msda``; all three compute the same sampling:

* ``'mmcv'`` (default): mmcv's compiled op on CUDA tensors (in float32: it
  has no bfloat16 kernel), mmcv's PyTorch reference on the CPU.
* ``'pytorch'``: the PyTorch reference everywhere (exportable, any dtype;
  on CUDA it reads the level sizes on the host, a sync).
* ``'triton'``: our Triton kernels on CUDA tensors, natively in float32 /
  float16 / bfloat16.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...ops.msda import MSDA_KERNELS

__all__ = ['MSDeformAttn']


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
        if impl not in MSDA_KERNELS:
            raise ValueError(f'msda impl must be one of {sorted(MSDA_KERNELS)},'
                             f' got {impl!r}')
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
        # compiled kernels do not trace; an export records the PyTorch path
        kernel = MSDA_KERNELS['pytorch' if torch.jit.is_tracing() else
                              self.impl]
        out = kernel(value, spatial_shapes, level_start_index, locations,
                     weights, self.im2col_step)
        return query + self.dropout(self.output_proj(out))
