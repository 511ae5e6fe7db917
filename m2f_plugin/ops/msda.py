"""Multi-scale deformable attention: the kernels as ``torch.library`` custom
ops, and ``MSDA_KERNELS``, the table the layer picks its kernel from.

Two compiled kernels compute the same sampling as mmcv's PyTorch reference
(``multi_scale_deformable_attn_pytorch``):

* ``m2f::msda_mmcv``: mmcv's CUDA op. It has no bfloat16 kernel and a slow
  float16 one, so it runs in float32 and returns the value's dtype.
* ``m2f::msda_triton``: our Triton kernels (``projects_ops.msda_triton``),
  native in float32 / float16 / bfloat16 with float32 accumulation.

As custom ops they have a fake (shape-only) implementation and a registered
backward, so ``torch.compile`` keeps them in its graph as one node instead of
breaking the graph at an opaque extension call. CPU tensors take the PyTorch
reference directly, under the caller's autocast (``MSDA_KERNELS``); the
ops' own CPU kernels run the reference too (the Triton one runs its kernels
in Triton's interpreter when ``TRITON_INTERPRET=1``, for tests).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Tuple

import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from torch import Tensor

__all__ = ['MSDA_KERNELS', 'msda_mmcv', 'msda_triton']

Grads = Tuple[Tensor, Tensor, Tensor]


def _reference(value: Tensor, spatial_shapes: Tensor, locations: Tensor,
               weights: Tensor) -> Tensor:
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes,
                                               locations, weights)


def _reference_backward(grad_out: Tensor, value: Tensor,
                        spatial_shapes: Tensor, locations: Tensor,
                        weights: Tensor) -> Grads:
    """Gradients of the PyTorch reference (``torch.func.vjp``: custom-op
    kernels run below autograd, which records nothing there)."""
    _, vjp = torch.func.vjp(
        lambda v, loc, w: _reference(v, spatial_shapes, loc, w), value,
        locations, weights)
    return vjp(grad_out.to(value.dtype))


def _fake_output(value: Tensor, locations: Tensor) -> Tensor:
    bs, _, heads, c_h = value.shape
    return value.new_empty(bs, locations.shape[1], heads * c_h)


def _fake_grads(value: Tensor, locations: Tensor, weights: Tensor) -> Grads:
    return (torch.empty_like(value), torch.empty_like(locations),
            torch.empty_like(weights))


# --- mmcv's CUDA op -------------------------------------------------------

@torch.library.custom_op('m2f::msda_mmcv', mutates_args=())
def msda_mmcv(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
              sampling_locations: Tensor, attention_weights: Tensor,
              im2col_step: int) -> Tensor:
    """Deformable sampling with mmcv's kernel (CUDA) or the reference (CPU).

    Args:
        value: (B, N_v, heads, C_h).
        spatial_shapes: (L, 2) int64, (H, W) per level.
        level_start_index: (L,) int64.
        sampling_locations: (B, N_q, heads, L, P, 2) in [0, 1], (x, y).
        attention_weights: (B, N_q, heads, L, P).
        im2col_step: mmcv's batch chunk.

    Returns:
        (B, N_q, heads * C_h) in the dtype of ``value``.
    """
    return _reference(value, spatial_shapes, sampling_locations,
                      attention_weights)


@msda_mmcv.register_kernel('cuda')
def _msda_mmcv_cuda(value, spatial_shapes, level_start_index,
                    sampling_locations, attention_weights, im2col_step):
    from mmcv.ops.multi_scale_deform_attn import ext_module
    out = ext_module.ms_deform_attn_forward(
        value.float().contiguous(), spatial_shapes, level_start_index,
        sampling_locations.float().contiguous(),
        attention_weights.float().contiguous(), im2col_step=im2col_step)
    return out.to(value.dtype)


@msda_mmcv.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights, im2col_step):
    return _fake_output(value, sampling_locations)


@torch.library.custom_op('m2f::msda_mmcv_backward', mutates_args=())
def _msda_mmcv_backward(grad_out: Tensor, value: Tensor,
                        spatial_shapes: Tensor, level_start_index: Tensor,
                        sampling_locations: Tensor, attention_weights: Tensor,
                        im2col_step: int) -> Grads:
    return _reference_backward(grad_out, value, spatial_shapes,
                               sampling_locations, attention_weights)


@_msda_mmcv_backward.register_kernel('cuda')
def _(grad_out, value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights, im2col_step):
    from mmcv.ops.multi_scale_deform_attn import ext_module
    v, loc, w = (t.float().contiguous()
                 for t in (value, sampling_locations, attention_weights))
    grads = [torch.zeros_like(v), torch.zeros_like(loc), torch.zeros_like(w)]
    ext_module.ms_deform_attn_backward(
        v, spatial_shapes, level_start_index, loc, w,
        grad_out.float().contiguous(), *grads, im2col_step=im2col_step)
    return (grads[0].to(value.dtype), grads[1].to(sampling_locations.dtype),
            grads[2].to(attention_weights.dtype))


@_msda_mmcv_backward.register_fake
def _(grad_out, value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights, im2col_step):
    return _fake_grads(value, sampling_locations, attention_weights)


def _setup_mmcv(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:5])
    ctx.im2col_step = inputs[5]


def _backward_mmcv(ctx, grad_out):
    value, shapes, starts, loc, w = ctx.saved_tensors
    g_value, g_loc, g_w = _msda_mmcv_backward(grad_out, value, shapes, starts,
                                              loc, w, ctx.im2col_step)
    return g_value, None, None, g_loc, g_w, None


msda_mmcv.register_autograd(_backward_mmcv, setup_context=_setup_mmcv)


# --- our Triton kernels ---------------------------------------------------

def _triton_interpret() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter."""
    return os.environ.get('TRITON_INTERPRET', '').strip().lower() in (
        '1', 'true', 'yes', 'on')


def _triton_function():
    """``projects_ops.msda_triton.function``, imported at first use."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "msda_impl='triton' needs the 'triton' package (pip install "
            "triton; CUDA builds of PyTorch ship it); or use msda_impl="
            "'mmcv' / 'pytorch'") from e
    try:
        from projects_ops.msda_triton import function
    except ModuleNotFoundError as e:
        if e.name not in ('projects_ops', 'projects_ops.msda_triton'):
            raise
        raise ImportError(
            "msda_impl='triton' needs 'projects_ops' (at the root of the "
            'm2f_plugin repository) to be importable: run from the '
            'repository root or add it to PYTHONPATH') from e
    return function


def _triton_forward(value, spatial_shapes, level_start_index,
                    sampling_locations, attention_weights):
    fn = _triton_function()
    fn._check_inputs(value, spatial_shapes, level_start_index,
                     sampling_locations, attention_weights)
    return fn._launch_fwd(value.contiguous(), spatial_shapes.contiguous(),
                          level_start_index.contiguous(),
                          sampling_locations.contiguous(),
                          attention_weights.contiguous(), fn.DEFAULT_CONFIG)


def _triton_backward(grad_out, value, spatial_shapes, level_start_index,
                     sampling_locations, attention_weights):
    fn = _triton_function()
    return fn._launch_bwd(value.contiguous(), spatial_shapes.contiguous(),
                          level_start_index.contiguous(),
                          sampling_locations.contiguous(),
                          attention_weights.contiguous(),
                          grad_out.contiguous(), True, True,
                          fn.DEFAULT_CONFIG)


@torch.library.custom_op('m2f::msda_triton', mutates_args=())
def msda_triton(value: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, sampling_locations: Tensor,
                attention_weights: Tensor) -> Tensor:
    """Deformable sampling with our Triton kernels (CUDA; on CPU the
    reference, or the kernels in Triton's interpreter with
    ``TRITON_INTERPRET=1``). Shapes as ``msda_mmcv``."""
    if _triton_interpret():
        return _triton_forward(value, spatial_shapes, level_start_index,
                               sampling_locations, attention_weights)
    return _reference(value, spatial_shapes, sampling_locations,
                      attention_weights)


@msda_triton.register_kernel('cuda')
def _(value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights):
    return _triton_forward(value, spatial_shapes, level_start_index,
                           sampling_locations, attention_weights)


@msda_triton.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights):
    return _fake_output(value, sampling_locations)


@torch.library.custom_op('m2f::msda_triton_backward', mutates_args=())
def _msda_triton_backward(grad_out: Tensor, value: Tensor,
                          spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor,
                          attention_weights: Tensor) -> Grads:
    if _triton_interpret():
        return _triton_backward(grad_out, value, spatial_shapes,
                                level_start_index, sampling_locations,
                                attention_weights)
    return _reference_backward(grad_out, value, spatial_shapes,
                               sampling_locations, attention_weights)


@_msda_triton_backward.register_kernel('cuda')
def _(grad_out, value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights):
    return _triton_backward(grad_out, value, spatial_shapes,
                            level_start_index, sampling_locations,
                            attention_weights)


@_msda_triton_backward.register_fake
def _(grad_out, value, spatial_shapes, level_start_index, sampling_locations,
      attention_weights):
    return _fake_grads(value, sampling_locations, attention_weights)


def _setup_triton(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward_triton(ctx, grad_out):
    value, shapes, starts, loc, w = ctx.saved_tensors
    g_value, g_loc, g_w = _msda_triton_backward(grad_out, value, shapes,
                                                starts, loc, w)
    return g_value, None, None, g_loc, g_w


msda_triton.register_autograd(_backward_triton, setup_context=_setup_triton)


def _msda_pytorch(value: Tensor, spatial_shapes: Tensor,
                  level_start_index: Tensor, sampling_locations: Tensor,
                  attention_weights: Tensor, im2col_step: int) -> Tensor:
    return _reference(value, spatial_shapes, sampling_locations,
                      attention_weights)


def _msda_mmcv(value, spatial_shapes, level_start_index, sampling_locations,
               attention_weights, im2col_step):
    if not value.is_cuda:  # the reference, under the caller's autocast
        return _reference(value, spatial_shapes, sampling_locations,
                          attention_weights)
    return msda_mmcv(value, spatial_shapes, level_start_index,
                     sampling_locations, attention_weights, im2col_step)


def _msda_triton(value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights, im2col_step):
    if not (value.is_cuda or _triton_interpret()):
        return _reference(value, spatial_shapes, sampling_locations,
                          attention_weights)
    return msda_triton(value, spatial_shapes, level_start_index,
                       sampling_locations, attention_weights)


# impl name -> fn(value, shapes, starts, locations, weights, im2col_step)
MSDA_KERNELS: Dict[str, Callable[..., Tensor]] = {
    'mmcv': _msda_mmcv,
    'pytorch': _msda_pytorch,
    'triton': _msda_triton,
}
