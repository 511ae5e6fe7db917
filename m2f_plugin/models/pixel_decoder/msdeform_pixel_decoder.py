"""Mask2Former's pixel decoder: deformable encoder over strides 8/16/32 + FPN."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..layers import SinePositionEncoding2d
from .msdeform_encoder import MSDeformEncoder

__all__ = ['M2FPixelDecoder']


def _check_strides(strides: Sequence[int], in_channels: Sequence[int]) -> None:
    if len(strides) != len(in_channels):
        raise ValueError(
            f'pixel decoder: got {len(in_channels)} in_channels but '
            f'{len(strides)} strides; give one stride per backbone level')
    for a, b in zip(strides[:-1], strides[1:]):
        if b != 2 * a:
            raise ValueError(
                f'pixel decoder: strides must double from level to level '
                f'(e.g. [4, 8, 16, 32]), got {list(strides)}')


def _conv_gn(in_ch: int, out_ch: int, kernel: int, groups: int, *,
             bias: bool, relu: bool) -> nn.Sequential:
    """Conv -> GroupNorm [-> ReLU], as ``Sequential`` (keys ``0.*``, ``1.*``)."""
    layers: List[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias),
        nn.GroupNorm(groups, out_ch)
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _fpn_step(lateral: nn.Module, output: nn.Module, feat: Tensor,
              coarse: Tensor) -> Tensor:
    """``output(lateral(feat) + upsample(coarse))``: one FPN level."""
    x = lateral(feat)
    return output(x + F.interpolate(coarse, size=x.shape[-2:],
                                    mode='bilinear', align_corners=False))


@MODELS.register_module()
class M2FPixelDecoder(nn.Module):
    """Multi-scale deformable-attention pixel decoder.

    The ``num_levels`` coarsest backbone maps are projected (1x1 conv + GN) to
    ``feat_channels``, refined jointly by a deformable encoder, and the finer
    maps are merged FPN-style into the per-pixel mask features.

    Args:
        in_channels: Backbone channels per level, fine to coarse.
        strides: Backbone strides per level, e.g. (4, 8, 16, 32).
        feat_channels: Channels C of the encoder and FPN.
        out_channels: Channels of the mask features.
        num_levels: Levels the encoder attends over (the coarsest ones).
        num_layers: Encoder layers.
        num_heads: Deformable-attention heads.
        num_points: Sampling points per head and level.
        ffn_dims: Encoder FFN hidden channels.
        dropout: Encoder dropout.
        num_groups: GroupNorm groups.
        msda_impl: Deformable-attention kernel, see ``MSDeformAttn``.
        with_cp: Activation checkpointing: recompute each encoder layer and
            the FPN levels in the backward pass instead of keeping their
            activations (about 0.35 GB less per 512x512 image in float32, for
            about one extra pixel-decoder forward per step).
    """

    def __init__(self, in_channels: Sequence[int] = (256, 512, 1024, 2048),
                 strides: Sequence[int] = (4, 8, 16, 32),
                 feat_channels: int = 256, out_channels: int = 256,
                 num_levels: int = 3, num_layers: int = 6, num_heads: int = 8,
                 num_points: int = 4, ffn_dims: int = 1024,
                 dropout: float = 0.0, num_groups: int = 32,
                 msda_impl: str = 'mmcv', with_cp: bool = False) -> None:
        super().__init__()
        _check_strides(strides, in_channels)
        if not 1 <= num_levels <= len(in_channels):
            raise ValueError(f'pixel decoder: num_levels={num_levels} must be '
                             f'in [1, {len(in_channels)}]')
        self.strides = tuple(strides)
        self.num_levels = num_levels
        num_inputs = len(in_channels)
        # coarse -> fine: input_projs[0] takes the coarsest backbone level
        # the reference keeps a bias before GN in the input projections only
        self.input_projs = nn.ModuleList(
            _conv_gn(in_channels[num_inputs - 1 - i], feat_channels, 1,
                     num_groups, bias=True, relu=False)
            for i in range(num_levels))
        self.pos_encoding = SinePositionEncoding2d(feat_channels // 2)
        self.level_embed = nn.Parameter(torch.empty(num_levels, feat_channels))
        self.encoder = MSDeformEncoder(
            num_layers, embed_dims=feat_channels, num_heads=num_heads,
            num_levels=num_levels, num_points=num_points, ffn_dims=ffn_dims,
            dropout=dropout, msda_impl=msda_impl, with_cp=with_cp)
        self.with_cp = with_cp
        # FPN over the finer levels, coarse -> fine
        num_fpn = num_inputs - num_levels
        self.lateral_convs = nn.ModuleList(
            _conv_gn(in_channels[num_fpn - 1 - i], feat_channels, 1, num_groups,
                     bias=False, relu=False)
            for i in range(num_fpn))
        self.output_convs = nn.ModuleList(
            _conv_gn(feat_channels, feat_channels, 3, num_groups, bias=False,
                     relu=True)
            for _ in range(num_fpn))
        self.mask_proj = nn.Conv2d(feat_channels, out_channels, 1)
        # per-size constants, cached; a trace reads them from the tensors
        # instead (``_traced_level_geometry``)
        self.cache = True
        self._geometry_cache: Dict[Tuple, Tuple[Tensor, Tensor, Tensor]] = {}
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier for projections and the encoder, N(0, 1) level embedding."""
        for m in self.input_projs:
            nn.init.xavier_uniform_(m[0].weight)
            nn.init.zeros_(m[0].bias)
        for m in list(self.lateral_convs) + list(self.output_convs):
            nn.init.kaiming_uniform_(m[0].weight, a=1)  # caffe2 xavier
        nn.init.kaiming_uniform_(self.mask_proj.weight, a=1)
        nn.init.zeros_(self.mask_proj.bias)
        nn.init.normal_(self.level_embed)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.encoder.layers:
            layer.self_attn.init_weights()

    def _level_geometry(self, shapes: Tuple[Tuple[int, int], ...],
                        device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """Spatial shapes (L, 2), level start indices (L,) and reference
        points (1, N, 1, 2) for these level sizes, cached: building them is a
        host-to-device copy and ~10 small kernels per level every step."""
        key = (shapes, device)
        cached = self._geometry_cache.get(key) if self.cache else None
        if cached is not None:
            return cached
        # normal tensors even under inference_mode (they are cached and may
        # be saved for backward by a later, checkpointed training step)
        with torch.inference_mode(False):
            spatial_shapes = torch.as_tensor(shapes, dtype=torch.long,
                                             device=device)
            sizes = [h * w for h, w in shapes]
            level_start_index = torch.as_tensor([0] + sizes[:-1],
                                                device=device).cumsum(0)
            out = (spatial_shapes, level_start_index,
                   self._reference_points(shapes, device))
        if self.cache:
            if len(self._geometry_cache) >= 16:  # many input sizes: bound it
                self._geometry_cache.clear()
            self._geometry_cache[key] = out
        return out

    def _traced_level_geometry(self, maps: Sequence[Tensor]
                               ) -> Tuple[Tensor, Tensor, Tensor]:
        """``_level_geometry`` for a trace: each level's (H, W) read from its
        (B, C, H, W) map (``Shape`` ops, so an exported graph takes any
        input size) and nothing cached. The same values as eagerly."""
        spatial_shapes = torch.stack(
            [torch._shape_as_tensor(x)[-2:] for x in maps])
        level_start_index = torch.cat([
            spatial_shapes.new_zeros(1),
            spatial_shapes.prod(1).cumsum(0)[:-1]])
        shapes = [tuple(x.shape[-2:]) for x in maps]
        return (spatial_shapes, level_start_index,
                self._reference_points(shapes, maps[0].device))

    @staticmethod
    def _reference_points(shapes: Sequence[Tuple[int, int]],
                          device: torch.device) -> Tensor:
        """Pixel centres of every level, normalised: (1, N, 1, 2) (x, y)."""
        refs = []
        for h, w in shapes:
            y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            yy, xx = torch.meshgrid(y, x, indexing='ij')
            refs.append(torch.stack((xx.reshape(-1), yy.reshape(-1)), -1))
        return torch.cat(refs, 0)[None, :, None]  # (N, 2) -> (1, N, 1, 2)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Decode backbone features.

        Args:
            feats: Backbone maps fine to coarse, each (B, C_i, H_i, W_i).

        Returns:
            mask_features: (B, out_channels, H_0, W_0) (stride 4).
            memories: ``num_levels`` maps (B, C, H_l, W_l), coarse to fine,
                the transformer decoder's keys and values.
        """
        batch = feats[0].shape[0]
        num_inputs = len(feats)
        tokens, pos, shapes, maps = [], [], [], []
        for i in range(self.num_levels):
            x = self.input_projs[i](feats[num_inputs - 1 - i])
            _, _, h, w = x.shape
            p = self.pos_encoding(batch, h, w, x.device, x.dtype)
            p = p + self.level_embed[i].view(1, -1, 1, 1).to(x.dtype)
            tokens.append(x.flatten(2).transpose(1, 2))  # (B, C, HW) -> (B, HW, C)
            pos.append(p.flatten(2).transpose(1, 2))
            shapes.append((h, w))
            maps.append(x)
        sizes = [h * w for h, w in shapes]
        if torch.jit.is_tracing():
            spatial_shapes, level_start_index, reference_points = \
                self._traced_level_geometry(maps)
        else:
            spatial_shapes, level_start_index, reference_points = \
                self._level_geometry(tuple(shapes), feats[0].device)
        reference_points = reference_points.expand(batch, -1,
                                                    self.num_levels, -1)
        memory = self.encoder(torch.cat(tokens, 1), torch.cat(pos, 1),
                              reference_points, spatial_shapes,
                              level_start_index)
        # (B, N, C) -> per level (B, C, H, W)
        outs = [
            m.transpose(1, 2).reshape(batch, -1, h, w)
            for m, (h, w) in zip(memory.split(sizes, 1), shapes)
        ]
        y = outs[-1]
        recompute = self.with_cp and self.training
        for i, (lateral, output) in enumerate(
                zip(self.lateral_convs, self.output_convs)):
            feat = feats[num_inputs - self.num_levels - 1 - i]
            if recompute:  # stride-4 maps: ~6 tensors of (B, C, H/4, W/4)
                y = checkpoint(_fpn_step, lateral, output, feat, y,
                               use_reentrant=False, preserve_rng_state=False)
            else:
                y = _fpn_step(lateral, output, feat, y)
        return self.mask_proj(y), outs
