"""Autograd function and checked entry point of the Triton MSDA op.

Drop-in for mmcv's ``MultiScaleDeformableAttnFunction`` (without the
``im2col_step`` argument, which the Triton kernel does not need)::

    out = ms_deform_attn_triton(value, spatial_shapes, level_start_index,
                                sampling_locations, attention_weights)

Shapes:
    value: (B, N_v, heads, C_h) float32 / float16 / bfloat16.
    spatial_shapes: (L, 2) int64 (or int32), (H, W) per level.
    level_start_index: (L,) int64 (or int32).
    sampling_locations: (B, N_q, heads, L, P, 2) (x, y), [0, 1] inside.
    attention_weights: (B, N_q, heads, L, P).
    returns: (B, N_q, heads * C_h) in the dtype of ``value``.

``sampling_locations`` and ``attention_weights`` may have a floating dtype
other than ``value``'s (e.g. float32 locations with a float16 value, as under
autocast): the kernel reads each in its own dtype and computes in float32, so
locations are not rounded to a half type. Their gradients come back in their
own dtypes, ``value``'s gradient in ``value``'s dtype (accumulated in float32).

Tensors on the CPU run only under the Triton interpreter (``TRITON_INTERPRET=1``
set before ``triton`` is imported); that is for tests, not speed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .kernels import msda_bwd_kernel, msda_fwd_kernel, next_power_of_2

__all__ = ['MSDAConfig', 'TritonMSDAFunction', 'ms_deform_attn_triton']

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT_DTYPES = (torch.int64, torch.int32)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class MSDAConfig:
    """Launch parameters of both kernels.

    ``*_block_q``: queries per program (power of two); ``*_warps``: warps per
    program; ``*_unroll``: unroll the loop over points (more loads in flight,
    more registers) or keep it a loop.

    Defaults from ``bench.py --sweep`` on an H100 (Triton 3.6) at the pixel
    decoder's shapes: the forward within ~10 % of the best config for every
    dtype at B = 2 and 16 (unrolling it spills registers); the backward is
    bound by its atomics, all configs within ~5 %.
    """

    fwd_block_q: int = 64
    fwd_warps: int = 8
    fwd_unroll: bool = False
    bwd_block_q: int = 32
    bwd_warps: int = 4
    bwd_unroll: bool = False


DEFAULT_CONFIG = MSDAConfig()


def _is_interpreted() -> bool:
    """Whether our kernels were built by the Triton interpreter (CPU)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - layout of other triton versions
        return False
    return isinstance(msda_fwd_kernel, InterpretedFunction)


def _check_inputs(value: Tensor, spatial_shapes: Tensor,
                  level_start_index: Tensor, sampling_locations: Tensor,
                  attention_weights: Tensor) -> None:
    """Raise ``TypeError`` / ``ValueError`` with a clear message on bad input.

    Checks dtypes, ranks, the agreement of B, heads, L and P, and the device.
    Does not read ``spatial_shapes`` (that would sync the GPU): the kernels
    themselves never touch rows at or beyond N_v.
    """
    for name, t in (('value', value), ('sampling_locations', sampling_locations),
                    ('attention_weights', attention_weights)):
        if not isinstance(t, Tensor):
            raise TypeError(f'{name} must be a torch.Tensor, got {type(t)}')
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f'{name} must be float32, float16 or bfloat16, '
                            f'got {t.dtype}')
    for name, t in (('spatial_shapes', spatial_shapes),
                    ('level_start_index', level_start_index)):
        if not isinstance(t, Tensor):
            raise TypeError(f'{name} must be a torch.Tensor, got {type(t)}')
        if t.dtype not in _INT_DTYPES:
            raise TypeError(f'{name} must be int64 or int32, got {t.dtype}')
    if value.dim() != 4:
        raise ValueError('value must be (B, N_v, heads, C_h), got shape '
                         f'{tuple(value.shape)}')
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError('sampling_locations must be (B, N_q, heads, L, P, 2), '
                         f'got shape {tuple(sampling_locations.shape)}')
    bs, n_v, heads, c_h = value.shape
    b2, n_q, h2, levels, points, _ = sampling_locations.shape
    if (b2, h2) != (bs, heads):
        raise ValueError(
            f'sampling_locations {tuple(sampling_locations.shape)} does not '
            f'match value {tuple(value.shape)} in batch or heads')
    if tuple(attention_weights.shape) != (bs, n_q, heads, levels, points):
        raise ValueError(
            'attention_weights must be (B, N_q, heads, L, P) = '
            f'{(bs, n_q, heads, levels, points)}, got '
            f'{tuple(attention_weights.shape)}')
    if tuple(spatial_shapes.shape) != (levels, 2):
        raise ValueError(f'spatial_shapes must be (L, 2) = ({levels}, 2), got '
                         f'{tuple(spatial_shapes.shape)}')
    if tuple(level_start_index.shape) != (levels,):
        raise ValueError(f'level_start_index must be (L,) = ({levels},), got '
                         f'{tuple(level_start_index.shape)}')
    if c_h < 1 or levels < 1 or points < 1 or heads < 1:
        raise ValueError('C_h, heads, L and P must be positive, got '
                         f'C_h={c_h}, heads={heads}, L={levels}, P={points}')
    if n_v * heads * c_h > _INT32_MAX:
        raise ValueError(f'N_v * heads * C_h = {n_v * heads * c_h} per image '
                         'exceeds int32 indexing of the kernel')
    devices = {t.device for t in (value, sampling_locations, attention_weights)}
    if len(devices) != 1:
        raise ValueError('value, sampling_locations and attention_weights must '
                         f'be on one device, got {sorted(map(str, devices))}')
    if not value.is_cuda and not (value.device.type == 'cpu'
                                  and _is_interpreted()):
        raise RuntimeError(
            f'ms_deform_attn_triton needs CUDA tensors, got {value.device}; '
            'CPU tensors run only under the Triton interpreter '
            '(TRITON_INTERPRET=1 set before triton is imported)')


def _launch_fwd(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor,
                config: MSDAConfig) -> Tensor:
    """Run the forward kernel on contiguous, checked inputs.

    Returns (B, N_q, heads * C_h) in ``value.dtype``.
    """
    bs, n_v, heads, c_h = value.shape
    _, n_q, _, levels, points, _ = sampling_locations.shape
    out = value.new_empty((bs, n_q, heads * c_h))
    if out.numel() == 0:
        return out
    if n_v == 0:
        return out.zero_()
    grid = (triton.cdiv(n_q, config.fwd_block_q), heads, bs)
    msda_fwd_kernel[grid](
        value, spatial_shapes, level_start_index, sampling_locations,
        attention_weights, out, n_q, n_v,
        HEADS=heads, C_H=c_h, L=levels, P=points, BLOCK_Q=config.fwd_block_q,
        BLOCK_C=next_power_of_2(c_h), UNROLL=config.fwd_unroll,
        num_warps=config.fwd_warps)
    return out


def _launch_bwd(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor,
                grad_out: Tensor, need_value: bool, need_loc_attw: bool,
                config: MSDAConfig) -> Tuple[Optional[Tensor], Optional[Tensor],
                                             Optional[Tensor]]:
    """Run the backward kernel.

    Returns:
        grad_value (value's shape and dtype), grad_sampling_locations,
        grad_attention_weights (their inputs' shapes and dtypes); ``None``
        for those not asked for.
    """
    bs, n_v, heads, c_h = value.shape
    _, n_q, _, levels, points, _ = sampling_locations.shape
    launch = bs * n_q * heads > 0 and n_v > 0 and (need_value or need_loc_attw)
    if need_value:
        # float32 accumulation buffer; for a float32 value it is the result
        grad_value_acc = torch.zeros(value.shape, dtype=torch.float32,
                                     device=value.device)
    else:
        grad_value_acc = value  # never written (GRAD_VALUE=False)
    if need_loc_attw:
        # the kernel writes every element once: no memset unless it won't run
        alloc = torch.empty_like if launch else torch.zeros_like
        grad_loc = alloc(sampling_locations)
        grad_attw = alloc(attention_weights)
    else:
        grad_loc, grad_attw = sampling_locations, attention_weights  # unused
    if launch:
        grid = (triton.cdiv(n_q, config.bwd_block_q), heads, bs)
        msda_bwd_kernel[grid](
            value, spatial_shapes, level_start_index, sampling_locations,
            attention_weights, grad_out, grad_value_acc, grad_loc, grad_attw,
            n_q, n_v,
            HEADS=heads, C_H=c_h, L=levels, P=points, BLOCK_Q=config.bwd_block_q,
            BLOCK_C=next_power_of_2(c_h), UNROLL=config.bwd_unroll,
            GRAD_VALUE=need_value,
            GRAD_LOC_ATTW=need_loc_attw, num_warps=config.bwd_warps)
    grad_value = grad_value_acc.to(value.dtype) if need_value else None
    if not need_loc_attw:
        grad_loc = grad_attw = None
    return grad_value, grad_loc, grad_attw


class TritonMSDAFunction(torch.autograd.Function):
    """Multi-scale deformable attention, Triton forward and backward.

    ``apply(value, spatial_shapes, level_start_index, sampling_locations,
    attention_weights, config=None)``; inputs must already be checked and
    contiguous (use :func:`ms_deform_attn_triton`). Gradients flow to
    ``value``, ``sampling_locations`` and ``attention_weights``.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, value: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, sampling_locations: Tensor,
                attention_weights: Tensor,
                config: Optional[MSDAConfig] = None) -> Tensor:
        """(B, N_v, heads, C_h), ... -> (B, N_q, heads * C_h)."""
        config = config or DEFAULT_CONFIG
        ctx.config = config
        ctx.save_for_backward(value, spatial_shapes, level_start_index,
                              sampling_locations, attention_weights)
        return _launch_fwd(value, spatial_shapes, level_start_index,
                           sampling_locations, attention_weights, config)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple:
        """Gradients of value, sampling_locations and attention_weights."""
        (value, spatial_shapes, level_start_index, sampling_locations,
         attention_weights) = ctx.saved_tensors
        need_value = ctx.needs_input_grad[0]
        need_loc_attw = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        grad_value, grad_loc, grad_attw = _launch_bwd(
            value, spatial_shapes, level_start_index, sampling_locations,
            attention_weights, grad_out.contiguous(), need_value,
            need_loc_attw, ctx.config)
        return (grad_value, None, None,
                grad_loc if ctx.needs_input_grad[3] else None,
                grad_attw if ctx.needs_input_grad[4] else None, None)


def ms_deform_attn_triton(value: Tensor, spatial_shapes: Tensor,
                          level_start_index: Tensor, sampling_locations: Tensor,
                          attention_weights: Tensor,
                          config: Optional[MSDAConfig] = None) -> Tensor:
    """Multi-scale deformable attention with the Triton kernels.

    Same result as mmcv's ``multi_scale_deformable_attn_pytorch`` (and its
    CUDA op): bilinear sampling with ``align_corners=False`` and zero padding
    per level, weighted by ``attention_weights`` and summed over levels and
    points.

    Args:
        value: (B, N_v, heads, C_h) float32 / float16 / bfloat16.
        spatial_shapes: (L, 2) int64 or int32, (H, W) per level, with
            ``sum(H * W) == N_v`` (not checked on the GPU, to avoid a sync;
            rows >= N_v are never accessed whatever it holds).
        level_start_index: (L,) int64 or int32, first row of each level.
        sampling_locations: (B, N_q, heads, L, P, 2), (x, y) normalised to
            [0, 1]; points outside read zeros.
        attention_weights: (B, N_q, heads, L, P).
        config: Launch parameters; :data:`DEFAULT_CONFIG` when ``None``.

    Returns:
        (B, N_q, heads * C_h) in ``value.dtype``.

    Raises:
        TypeError: wrong tensor dtype or not a tensor.
        ValueError: inconsistent shapes or devices.
        RuntimeError: CPU tensors without the Triton interpreter.

    Non-contiguous inputs are made contiguous; ``spatial_shapes`` and
    ``level_start_index`` are moved to ``value``'s device if needed.
    """
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights)
    spatial_shapes = spatial_shapes.to(value.device).contiguous()
    level_start_index = level_start_index.to(value.device).contiguous()
    return TritonMSDAFunction.apply(
        value.contiguous(), spatial_shapes, level_start_index,
        sampling_locations.contiguous(), attention_weights.contiguous(), config)
