"""The deformable-attention kernels as ``torch.library`` custom ops."""
import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from m2f_plugin.ops.msda import MSDA_KERNELS, msda_mmcv

SHAPES = ((6, 5), (3, 4), (2, 2))


def _inputs(batch=2, heads=2, channels=4, points=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    spatial = torch.tensor(SHAPES)
    sizes = spatial.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    n_v = int(sizes.sum())
    value = torch.randn(batch, n_v, heads, channels, generator=g, dtype=dtype)
    loc = torch.rand(batch, 7, heads, len(SHAPES), points, 2, generator=g,
                     dtype=dtype)
    w = torch.rand(batch, 7, heads, len(SHAPES), points, generator=g,
                   dtype=dtype).softmax(-1)
    return value, spatial, start, loc, w


@pytest.mark.parametrize('impl', sorted(MSDA_KERNELS))
def test_every_impl_equals_the_reference_on_cpu(impl):
    value, spatial, start, loc, w = _inputs()
    want = multi_scale_deformable_attn_pytorch(value, spatial, loc, w)
    torch.testing.assert_close(
        MSDA_KERNELS[impl](value, spatial, start, loc, w, 64), want)


def test_mmcv_op_registration_passes_opcheck():
    """Schema, fake (shape) implementation, autograd registration and
    dispatch of ``m2f::msda_mmcv``, checked by PyTorch's own ``opcheck``."""
    value, spatial, start, loc, w = _inputs(dtype=torch.float64)
    args = (value.requires_grad_(), spatial, start, loc.requires_grad_(),
            w.requires_grad_(), 64)
    torch.library.opcheck(torch.ops.m2f.msda_mmcv.default, args)


def test_mmcv_op_gradients_equal_the_reference():
    value, spatial, start, loc, w = _inputs(dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (value, loc, w)]
    out = msda_mmcv(leaves[0], spatial, start, leaves[1], leaves[2], 64)
    grads = torch.autograd.grad(out.square().sum(), leaves)
    ref_leaves = [t.clone().requires_grad_() for t in (value, loc, w)]
    ref = multi_scale_deformable_attn_pytorch(ref_leaves[0], spatial,
                                              ref_leaves[1], ref_leaves[2])
    ref_grads = torch.autograd.grad(ref.square().sum(), ref_leaves)
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_compiled_graph_keeps_the_op_without_breaks():
    """``fullgraph=True`` fails on any graph break: the op is one node."""
    value, spatial, start, loc, w = _inputs()

    def fn(v, lc, wt):
        return (msda_mmcv(v * 2, spatial, start, lc, wt, 64) + 1).sum()

    compiled = torch.compile(fn, fullgraph=True)
    torch.testing.assert_close(compiled(value, loc, w), fn(value, loc, w))
