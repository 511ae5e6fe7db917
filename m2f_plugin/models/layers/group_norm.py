"""GroupNorm whose statistics are reduced by the whole GPU at inference.

PyTorch's CUDA GroupNorm computes each (image, group)'s mean and variance in
one thread block. At batch 1 the pixel decoder's maps have 32 groups, so 32
of an H100's 132 SMs do the reduction; at 1024x2048 the stride-4 maps' groups
hold a million elements each. In run 8's profile (``docs/bench/profile_after``)
the statistics kernel averaged 388 us over the five norms of different sizes,
the stride-4 ones roughly 0.8 ms, where reading such a map once takes ~50 us.
``torch.var_mean`` over the same rows splits each row across many blocks.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['ParallelStatsGroupNorm', 'group_norm_split_stats']


def group_norm_split_stats(x: Tensor, num_groups: int, weight: Tensor,
                           bias: Tensor, eps: float) -> Tensor:
    """``F.group_norm(x, num_groups, weight, bias, eps)`` from
    ``torch.var_mean`` and one fused multiply-add.

    Args:
        x: (N, C, *) float32.
        num_groups: Groups G, dividing C.
        weight, bias: (C,).
        eps: Added to the variance.

    Returns:
        (N, C, *), as ``F.group_norm``.
    """
    n, c = x.shape[:2]
    var, mean = torch.var_mean(x.reshape(n, num_groups, -1), dim=-1,
                               correction=0)  # (N, G) each
    rstd = var.add_(eps).rsqrt_()
    # per (image, channel): out = x * scale + shift, shift = bias - mean*scale
    scale = rstd[:, :, None] * weight.view(num_groups, -1)  # (N, G, C/G)
    shift = torch.addcmul(bias.view(num_groups, -1), mean[:, :, None], scale,
                          value=-1)
    trailing = (1, ) * (x.dim() - 2)
    return torch.addcmul(shift.view(n, c, *trailing), x,
                         scale.view(n, c, *trailing))


class ParallelStatsGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state-dict keys) that uses
    ``group_norm_split_stats`` where PyTorch's kernel leaves the GPU idle:
    float32 CUDA input without autograd (inference), few (image, group) rows
    (fewer than ``max_rows``) and large groups (at least
    ``min_group_elements`` elements each). Elsewhere (training, CPU, half
    precision, tracing and ONNX export) it is ``nn.GroupNorm``.

    The split path costs 6 small launches instead of the native ~3, so it
    only pays where the reduction is long and poorly spread.

    ``split_devices`` (a class attribute, ``('cuda',)``) names the device
    types that take the split path; the tests add ``'cpu'``.

    Args:
        num_groups, num_channels, eps, affine, device, dtype: As
            ``nn.GroupNorm``.
        min_group_elements: Smallest group (C/G x H x W elements) that takes
            the split path.
        max_rows: The native kernel runs one block per (image, group) row;
            from about one row per SM (132 on an H100, 108 on an A100) it
            fills the GPU itself. 0 turns the split path off.
    """

    split_devices = ('cuda', )

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None,
                 min_group_elements: int = 1 << 18,
                 max_rows: int = 128) -> None:
        super().__init__(num_groups, num_channels, eps, affine, device=device,
                         dtype=dtype)
        self.min_group_elements = min_group_elements
        self.max_rows = max_rows

    def uses_split_stats(self, x: Tensor) -> bool:
        """Whether ``forward(x)`` takes the split-statistics path."""
        if (x.device.type not in self.split_devices or x.dtype != torch.float32
                or not self.affine or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export()):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or
                                        self.weight.requires_grad or
                                        self.bias.requires_grad):
            return False
        rows = x.shape[0] * self.num_groups
        return (rows < self.max_rows and
                x.numel() // max(1, rows) >= self.min_group_elements)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, *) -> (N, C, *)."""
        if self.uses_split_stats(x):
            return group_norm_split_stats(x, self.num_groups, self.weight,
                                          self.bias, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias,
                            self.eps)
