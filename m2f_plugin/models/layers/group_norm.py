"""GroupNorm whose statistics are reduced by the whole GPU at inference.

PyTorch's CUDA GroupNorm computes each (image, group)'s mean and variance in
one thread block. The pixel decoder's stride-4 maps at batch 1 have 32 groups
of up to a million elements each (1024x2048 input: 8 x 256 x 512), so 32 of
the H100's 132 SMs stream them: 390-440 us per call where reading the map
once takes ~50 us (profile of run 8, ``docs/bench/profile_after``).
``torch.var_mean`` over the same rows splits each row across many blocks.
"""
from __future__ import annotations

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
    # per (image, channel): out = x * scale + shift
    scale = rstd[:, :, None] * weight.view(num_groups, -1)  # (N, G, C/G)
    shift = bias.view(num_groups, -1) - mean[:, :, None] * scale
    trailing = (1, ) * (x.dim() - 2)
    return torch.addcmul(shift.view(n, c, *trailing), x,
                         scale.view(n, c, *trailing))


class ParallelStatsGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state-dict keys) that uses
    ``group_norm_split_stats`` where PyTorch's kernel is slow: float32 CUDA
    input without autograd (inference) and groups of at least
    ``min_group_elements`` elements. Elsewhere (training, CPU, half
    precision, tracing and ONNX export) it is ``nn.GroupNorm``.

    ``split_devices`` (a class attribute, ``('cuda',)``) names the device
    types that take the split path; the tests add ``'cpu'``.

    Args:
        num_groups, num_channels, eps, affine: As ``nn.GroupNorm``.
        min_group_elements: Smallest group (C/G x H x W elements) that takes
            the split path: below it, the native kernel's one block per group
            already fills the GPU and costs fewer launches (~5 instead of 2).
    """

    split_devices = ('cuda', )

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True,
                 min_group_elements: int = 1 << 18) -> None:
        super().__init__(num_groups, num_channels, eps, affine)
        self.min_group_elements = min_group_elements

    def uses_split_stats(self, x: Tensor) -> bool:
        """Whether ``forward(x)`` takes the split-statistics path."""
        if (x.device.type not in self.split_devices or x.dtype != torch.float32 or not self.affine
                or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or
                                        self.weight.requires_grad):
            return False
        group = x.numel() // max(1, x.shape[0] * self.num_groups)
        return group >= self.min_group_elements

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, *) -> (N, C, *)."""
        if self.uses_split_stats(x):
            return group_norm_split_stats(x, self.num_groups, self.weight,
                                          self.bias, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias,
                            self.eps)
