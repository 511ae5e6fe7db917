"""2-D sine positional encoding (DETR), for unpadded feature maps."""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

__all__ = ['SinePositionEncoding2d']


class SinePositionEncoding2d(nn.Module):
    """Fixed sine/cosine encoding of normalised (y, x) positions.

    Args:
        num_feats: Channels per axis; the output has ``2 * num_feats``.
        temperature: Frequency base.
        scale: Positions are normalised to ``(0, scale]``.
        eps: Added to the normaliser.
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.,
                 scale: float = 2 * math.pi, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale
        self.eps = eps
        # the encoding depends only on (H, W, device, dtype): compute it once
        # per shape instead of ~20 small kernels per call (not a buffer, so
        # it stays out of checkpoints); a trace bypasses it
        self.cache = True
        self._cache: Dict[Tuple, Tensor] = {}

    def forward(self, batch: int, height: int, width: int,
                device: torch.device, dtype: torch.dtype = torch.float32
                ) -> Tensor:
        """Return the encoding, shape (B, 2 * num_feats, H, W).

        Computed in float32 (positions up to 2*pi at 1e-4 steps need it), then
        cast to ``dtype``. Cached per (H, W, device, dtype).
        """
        key = (height, width, device, dtype)
        # a trace must not record a cached tensor as a constant of its size
        use_cache = self.cache and not torch.jit.is_tracing()
        pos = self._cache.get(key) if use_cache else None
        if pos is None:
            # a normal tensor even under inference_mode: a cached inference
            # tensor could not be saved for backward by a later training step
            with torch.inference_mode(False):
                pos = self._encode(height, width, device).to(dtype)
            if use_cache:
                if len(self._cache) >= 16:  # many sizes (slide, TTA): bound
                    self._cache.clear()
                self._cache[key] = pos
        return pos.expand(batch, -1, -1, -1)

    def _encode(self, height: int, width: int, device: torch.device
                ) -> Tensor:
        """(1, 2 * num_feats, H, W) float32."""
        y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
        y = y / (height + self.eps) * self.scale
        x = x / (width + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature**(2 * (dim_t // 2) / self.num_feats)
        pos_y = y[:, None] / dim_t  # (H, F)
        pos_x = x[:, None] / dim_t  # (W, F)
        # interleave sin (even channels) and cos (odd channels)
        pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()),
                            dim=2).flatten(1)
        pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()),
                            dim=2).flatten(1)
        pos = torch.cat((pos_y[:, None, :].expand(height, width, -1),
                         pos_x[None, :, :].expand(height, width, -1)), dim=2)
        # (H, W, 2F) -> (1, 2F, H, W)
        return pos.permute(2, 0, 1).unsqueeze(0).contiguous()
