"""The pixel decoder's transformer encoder: deformable self-attention layers."""
from __future__ import annotations

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..layers import FFN, MSDeformAttn

__all__ = ['MSDeformEncoderLayer', 'MSDeformEncoder']


class MSDeformEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention -> norm -> FFN -> norm.

    Args:
        embed_dims: Channels C.
        num_heads: Attention heads.
        num_levels: Feature levels L.
        num_points: Sampling points per head and level.
        ffn_dims: FFN hidden channels.
        dropout: Dropout in attention output and FFN.
        msda_impl: Deformable-attention kernel, see ``MSDeformAttn``.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 num_levels: int = 3, num_points: int = 4,
                 ffn_dims: int = 1024, dropout: float = 0.0,
                 msda_impl: str = 'mmcv') -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(embed_dims, num_heads, num_levels,
                                      num_points, dropout, impl=msda_impl)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, ffn_dims, dropout)
        self.norm2 = nn.LayerNorm(embed_dims)

    def forward(self, query: Tensor, query_pos: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
        """query, query_pos: (B, N, C); reference_points: (B, N, L, 2)."""
        query = self.norm1(
            self.self_attn(query, query_pos, reference_points, spatial_shapes,
                           level_start_index))
        return self.norm2(self.ffn(query))


class MSDeformEncoder(nn.Module):
    """A stack of ``MSDeformEncoderLayer`` over the flattened multi-scale map.

    Args:
        num_layers: Number of layers.
        with_cp: Activation checkpointing: keep only each layer's input and
            recompute the layer in the backward pass. The layers' saved
            activations (the 4x-wide FFN hidden state above all) are the
            largest memory item of the head.
        **layer_kwargs: Passed to every ``MSDeformEncoderLayer``.
    """

    def __init__(self, num_layers: int = 6, with_cp: bool = False,
                 **layer_kwargs) -> None:
        super().__init__()
        self.with_cp = with_cp
        # without dropout the recomputation need not replay the RNG (saving
        # its state is a host call that CUDA-graph capture refuses)
        self._rng = layer_kwargs.get('dropout', 0.0) > 0
        self.layers = nn.ModuleList(
            MSDeformEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, query: Tensor, query_pos: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
        """(B, N, C) -> (B, N, C)."""
        for layer in self.layers:
            if self.with_cp and self.training:
                query = checkpoint(layer, query, query_pos, reference_points,
                                   spatial_shapes, level_start_index,
                                   use_reentrant=False,
                                   preserve_rng_state=self._rng)
            else:
                query = layer(query, query_pos, reference_points,
                              spatial_shapes, level_start_index)
        return query
