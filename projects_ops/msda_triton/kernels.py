"""Triton kernels for multi-scale deformable attention (MSDA).

Semantics are those of mmcv's ``multi_scale_deformable_attn_pytorch``
(``F.grid_sample`` with ``mode='bilinear'``, ``padding_mode='zeros'``,
``align_corners=False`` per level, then a weighted sum over levels and points).

Tensor layouts (all contiguous, element strides):

* value: (B, N_v, heads, C_h), any of float32 / float16 / bfloat16.
* spatial_shapes: (L, 2) integer, (H, W) per level.
* level_start_index: (L,) integer, first row of each level in N_v.
* sampling_locations: (B, N_q, heads, L, P, 2), (x, y) in [0, 1] for "inside".
* attention_weights: (B, N_q, heads, L, P).
* output: (B, N_q, heads * C_h) in the dtype of value.

Grid (both kernels): ``(cdiv(N_q, BLOCK_Q), heads, B)``; a program owns a
block of BLOCK_Q queries of one head in one image. For every (level, point) it
loads one location and one weight per query, computes the four bilinear
corners in float32, gathers the four (BLOCK_Q, C_h) value tiles (each row is
C_h contiguous channels, so the loads are vectorised along channels) and
accumulates in float32.

The backward kernel recomputes the gathers; the gradients of the locations
and weights of a (query, head, level, point) belong to one program and are
stored directly, the gradient of value is scattered with (relaxed) atomic adds
into a float32 buffer.

A pixel coordinate is ``loc * size - 0.5`` (``align_corners=False``); a corner
outside the map reads zero and receives nothing (zero padding). The
coordinates are clamped to ``[-2, size + 1]`` before ``floor``: beyond that all
four corners are outside anyway, so the result and its gradient are unchanged,
and the float -> int conversion never overflows. A corner is also dropped if
its row is not below N_v, so inconsistent ``spatial_shapes`` can never read or
write out of bounds.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


# ``tl.zeros`` / ``tl.sum`` are themselves ``@triton.jit`` functions: if
# ``triton`` was imported before ``TRITON_INTERPRET=1`` was set (torch._dynamo
# imports it), they are compiled-mode functions that the interpreter cannot
# call. The kernels therefore use the builtins ``tl.full`` and ``tl.reduce``;
# the interpreter sums with numpy when the combiner is Triton's own
# ``_sum_combine`` (the one ``tl.sum`` uses), else falls back to ``_add``.
_SUM_COMBINE = getattr(tl.standard, '_sum_combine', _add)


@triton.jit
def _row_sum(x):
    """(BLOCK_Q, BLOCK_C) float32 -> (BLOCK_Q,): sum over channels."""
    return tl.reduce(x, 1, _SUM_COMBINE)


@triton.jit
def _corner_rows(y, x, height, width, start, n_v):
    """Row (in N_v) of corner (y, x) of each query and whether it is inside.

    Args:
        y, x: (BLOCK_Q,) int32 pixel indices.
        height, width, start: int32 scalars of the level.
        n_v: number of value rows per image.

    Returns:
        (row, inside): (BLOCK_Q,) int32 row (0 where outside) and bool mask.
    """
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    row = start + y * width + x
    inside = inside & (row < n_v)
    row = tl.where(inside, row, 0)
    return row, inside


@triton.jit
def _bilinear(loc_ptr, offs_lp, qmask, height, width, start, n_v):
    """Load (x, y) of one (level, point) and compute its bilinear corners.

    Args:
        loc_ptr: sampling_locations base pointer.
        offs_lp: (BLOCK_Q,) int64 element offset of the (level, point) pair in
            attention_weights, i.e.
            ``((b * N_q + q) * heads + h) * L * P + lvl * P + p``.
        qmask: (BLOCK_Q,) valid queries.
        height, width, start: int32 scalars of the level.
        n_v: value rows per image.

    Returns:
        Rows and inside masks of the corners (y0, x0), (y0, x1), (y1, x0),
        (y1, x1) and the fractional parts (fy, fx) of the pixel coordinates.
    """
    hf = height.to(tl.float32)
    wf = width.to(tl.float32)
    lx = tl.load(loc_ptr + offs_lp * 2, mask=qmask, other=0.0).to(tl.float32)
    ly = tl.load(loc_ptr + offs_lp * 2 + 1, mask=qmask, other=0.0).to(tl.float32)
    # pixel coordinates, align_corners=False; clamp keeps floor() -> int safe
    h_im = tl.minimum(tl.maximum(ly * hf - 0.5, -2.0), hf + 1.0)
    w_im = tl.minimum(tl.maximum(lx * wf - 0.5, -2.0), wf + 1.0)
    y0f = tl.floor(h_im)
    x0f = tl.floor(w_im)
    fy = h_im - y0f
    fx = w_im - x0f
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    r00, m00 = _corner_rows(y0, x0, height, width, start, n_v)
    r01, m01 = _corner_rows(y0, x0 + 1, height, width, start, n_v)
    r10, m10 = _corner_rows(y0 + 1, x0, height, width, start, n_v)
    r11, m11 = _corner_rows(y0 + 1, x0 + 1, height, width, start, n_v)
    return r00, m00, r01, m01, r10, m10, r11, m11, fy, fx


@triton.jit
def _gather(v_base, row, inside, qmask, row_stride, offs_c, cmask):
    """Load value rows ``v_base + row * row_stride + c`` as a float32 tile.

    Returns:
        (BLOCK_Q, BLOCK_C) float32, zero for outside corners / padded lanes.
    """
    ptrs = v_base + (row * row_stride)[:, None] + offs_c[None, :]
    mask = (inside & qmask)[:, None] & cmask[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _scatter(gv_base, row, inside, qmask, row_stride, offs_c, cmask, val):
    """Atomically add a (BLOCK_Q, BLOCK_C) float32 tile to value-grad rows."""
    ptrs = gv_base + (row * row_stride)[:, None] + offs_c[None, :]
    mask = (inside & qmask)[:, None] & cmask[None, :]
    tl.atomic_add(ptrs, val, mask=mask, sem='relaxed')


@triton.jit
def _fwd_point(acc, v_base, loc_ptr, attw_ptr, offs_lp, qmask, height, width,
               start, n_v, row_stride, offs_c, cmask):
    """acc += a * bilinear sample, for one (level, point) of BLOCK_Q queries."""
    a = tl.load(attw_ptr + offs_lp, mask=qmask, other=0.0).to(tl.float32)
    r00, m00, r01, m01, r10, m10, r11, m11, fy, fx = _bilinear(
        loc_ptr, offs_lp, qmask, height, width, start, n_v)
    gy = 1.0 - fy
    gx = 1.0 - fx
    v00 = _gather(v_base, r00, m00, qmask, row_stride, offs_c, cmask)
    v01 = _gather(v_base, r01, m01, qmask, row_stride, offs_c, cmask)
    v10 = _gather(v_base, r10, m10, qmask, row_stride, offs_c, cmask)
    v11 = _gather(v_base, r11, m11, qmask, row_stride, offs_c, cmask)
    acc += (a * gy * gx)[:, None] * v00 + (a * gy * fx)[:, None] * v01 \
        + (a * fy * gx)[:, None] * v10 + (a * fy * fx)[:, None] * v11
    return acc


@triton.jit
def _bwd_point(go, v_base, gv_base, loc_ptr, attw_ptr, grad_loc_ptr,
               grad_attw_ptr, offs_lp, qmask, height, width, start, n_v,
               row_stride, offs_c, cmask,
               GRAD_VALUE: tl.constexpr, GRAD_LOC_ATTW: tl.constexpr):
    """Gradients of one (level, point) of BLOCK_Q queries (see bwd kernel)."""
    a = tl.load(attw_ptr + offs_lp, mask=qmask, other=0.0).to(tl.float32)
    r00, m00, r01, m01, r10, m10, r11, m11, fy, fx = _bilinear(
        loc_ptr, offs_lp, qmask, height, width, start, n_v)
    gy = 1.0 - fy
    gx = 1.0 - fx
    if GRAD_LOC_ATTW:
        # Everything below is linear in the corner values, so only the four
        # dot products s_k = <grad_out, v_k> are needed: each gathered tile
        # is reduced at once and never held with the others (fewer live
        # registers, more programs per SM).
        s00 = _row_sum(go * _gather(v_base, r00, m00, qmask, row_stride,
                                    offs_c, cmask))
        s01 = _row_sum(go * _gather(v_base, r01, m01, qmask, row_stride,
                                    offs_c, cmask))
        s10 = _row_sum(go * _gather(v_base, r10, m10, qmask, row_stride,
                                    offs_c, cmask))
        s11 = _row_sum(go * _gather(v_base, r11, m11, qmask, row_stride,
                                    offs_c, cmask))
        g_a = gy * (gx * s00 + fx * s01) + fy * (gx * s10 + fx * s11)
        # d/d h_im and d/d w_im of the sample; d h_im / d y = H, d w_im / d x = W
        g_y = (gx * (s10 - s00) + fx * (s11 - s01)) * a * height.to(tl.float32)
        g_x = (gy * (s01 - s00) + fy * (s11 - s10)) * a * width.to(tl.float32)
        tl.store(grad_attw_ptr + offs_lp,
                 g_a.to(grad_attw_ptr.dtype.element_ty), mask=qmask)
        tl.store(grad_loc_ptr + offs_lp * 2,
                 g_x.to(grad_loc_ptr.dtype.element_ty), mask=qmask)
        tl.store(grad_loc_ptr + offs_lp * 2 + 1,
                 g_y.to(grad_loc_ptr.dtype.element_ty), mask=qmask)
    if GRAD_VALUE:
        _scatter(gv_base, r00, m00, qmask, row_stride, offs_c, cmask,
                 (a * gy * gx)[:, None] * go)
        _scatter(gv_base, r01, m01, qmask, row_stride, offs_c, cmask,
                 (a * gy * fx)[:, None] * go)
        _scatter(gv_base, r10, m10, qmask, row_stride, offs_c, cmask,
                 (a * fy * gx)[:, None] * go)
        _scatter(gv_base, r11, m11, qmask, row_stride, offs_c, cmask,
                 (a * fy * fx)[:, None] * go)


@triton.jit
def _level(shapes_ptr, start_ptr, lvl):
    """(H, W, first row) of level ``lvl`` as int32 scalars."""
    height = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
    width = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
    start = tl.load(start_ptr + lvl).to(tl.int32)
    return height, width, start


@triton.jit
def msda_fwd_kernel(value_ptr, shapes_ptr, start_ptr, loc_ptr, attw_ptr, out_ptr,
                    n_q, n_v,
                    HEADS: tl.constexpr, C_H: tl.constexpr, L: tl.constexpr,
                    P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
                    UNROLL: tl.constexpr):
    """Forward: out[b, q, h*C_h + c] = sum_{l,p} a * bilinear(value_l)[c].

    Grid ``(cdiv(N_q, BLOCK_Q), heads, B)``; BLOCK_C = next_pow2(C_H).
    Levels are unrolled; points too if UNROLL (more loads in flight, more
    registers), else a loop.
    """
    pid_q = tl.program_id(0)
    head = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qmask = offs_q < n_q
    offs_c = tl.arange(0, BLOCK_C)
    cmask = offs_c < C_H
    row_stride = HEADS * C_H
    v_base = value_ptr + b * n_v * row_stride + head * C_H
    # flat (b, q, head) index, int64: offsets into locations / weights
    bqh = (b * n_q + offs_q) * HEADS + head
    acc = tl.full((BLOCK_Q, BLOCK_C), 0.0, dtype=tl.float32)
    for lvl in tl.static_range(L):
        height, width, start = _level(shapes_ptr, start_ptr, lvl)
        if UNROLL:
            for pt in tl.static_range(P):
                acc = _fwd_point(acc, v_base, loc_ptr, attw_ptr,
                                 bqh * (L * P) + (lvl * P + pt), qmask, height,
                                 width, start, n_v, row_stride, offs_c, cmask)
        else:
            for pt in range(P):
                acc = _fwd_point(acc, v_base, loc_ptr, attw_ptr,
                                 bqh * (L * P) + (lvl * P + pt), qmask, height,
                                 width, start, n_v, row_stride, offs_c, cmask)
    out_ptrs = out_ptr + (b * n_q + offs_q)[:, None] * row_stride \
        + head * C_H + offs_c[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty),
             mask=qmask[:, None] & cmask[None, :])


@triton.jit
def msda_bwd_kernel(value_ptr, shapes_ptr, start_ptr, loc_ptr, attw_ptr,
                    grad_out_ptr, grad_value_ptr, grad_loc_ptr, grad_attw_ptr,
                    n_q, n_v,
                    HEADS: tl.constexpr, C_H: tl.constexpr, L: tl.constexpr,
                    P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
                    UNROLL: tl.constexpr, GRAD_VALUE: tl.constexpr,
                    GRAD_LOC_ATTW: tl.constexpr):
    """Backward of :func:`msda_fwd_kernel`.

    * grad_value (B, N_v, heads, C_h) float32, zero-initialised: atomic adds of
      ``a * w_corner * grad_out`` at the four corners (if GRAD_VALUE).
    * grad_loc (B, N_q, heads, L, P, 2) and grad_attw (B, N_q, heads, L, P):
      stored once per (query, head, level, point) (if GRAD_LOC_ATTW).

    Grid ``(cdiv(N_q, BLOCK_Q), heads, B)``.
    """
    pid_q = tl.program_id(0)
    head = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qmask = offs_q < n_q
    offs_c = tl.arange(0, BLOCK_C)
    cmask = offs_c < C_H
    row_stride = HEADS * C_H
    v_off = b * n_v * row_stride + head * C_H
    v_base = value_ptr + v_off
    gv_base = grad_value_ptr + v_off
    bqh = (b * n_q + offs_q) * HEADS + head
    go_ptrs = grad_out_ptr + (b * n_q + offs_q)[:, None] * row_stride \
        + head * C_H + offs_c[None, :]
    go = tl.load(go_ptrs, mask=qmask[:, None] & cmask[None, :],
                 other=0.0).to(tl.float32)
    for lvl in tl.static_range(L):
        height, width, start = _level(shapes_ptr, start_ptr, lvl)
        if UNROLL:
            for pt in tl.static_range(P):
                _bwd_point(go, v_base, gv_base, loc_ptr, attw_ptr, grad_loc_ptr,
                           grad_attw_ptr, bqh * (L * P) + (lvl * P + pt), qmask,
                           height, width, start, n_v, row_stride, offs_c, cmask,
                           GRAD_VALUE, GRAD_LOC_ATTW)
        else:
            for pt in range(P):
                _bwd_point(go, v_base, gv_base, loc_ptr, attw_ptr, grad_loc_ptr,
                           grad_attw_ptr, bqh * (L * P) + (lvl * P + pt), qmask,
                           height, width, start, n_v, row_stride, offs_c, cmask,
                           GRAD_VALUE, GRAD_LOC_ATTW)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= ``n`` (Triton block sizes must be powers of 2)."""
    return triton.next_power_of_2(n)
