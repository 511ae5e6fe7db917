"""Triton multi-scale deformable attention against mmcv's PyTorch reference.

Without a GPU the kernels run in Triton's interpreter: ``TRITON_INTERPRET=1``
is set below before ``triton`` is imported (Triton reads it when a kernel is
decorated). With a GPU the compiled kernels run on CUDA tensors, and the
bfloat16 cases (meaningless in the interpreter, numpy has no bfloat16) run too.

The reference is ``multi_scale_deformable_attn_pytorch`` in float64 on the CPU,
fed the same (already rounded) inputs; its gradients come from autograd
through ``F.grid_sample``. Errors are measured as ``max|a - e|`` against
``tol * max(1, max|e|)``.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported

import pytest  # noqa: E402

pytest.importorskip('triton', reason='triton is not installed')

from mmcv.ops.multi_scale_deform_attn import (  # noqa: E402
    multi_scale_deformable_attn_pytorch,
)

from m2f_plugin.models.layers.msdeform_attn import MSDeformAttn  # noqa: E402
from projects_ops.msda_triton import (  # noqa: E402
    MSDAConfig,
    ms_deform_attn_triton,
)
from projects_ops.msda_triton.function import _is_interpreted  # noqa: E402

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
if DEVICE == 'cpu' and not _is_interpreted():
    pytest.skip('projects_ops.msda_triton was imported before TRITON_INTERPRET'
                '=1 was set, so its kernels cannot run on the CPU',
                allow_module_level=True)

needs_cuda = pytest.mark.skipif(
    DEVICE != 'cuda', reason='bfloat16 needs a GPU: the Triton interpreter '
    '(numpy) has no bfloat16')

# non-square levels, N_v = 30 + 12 + 4 = 46
SHAPES = ((6, 5), (3, 4), (2, 2))
# tolerance on max|err| / max(1, max|expected|), per input dtype
TOL = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
# several query blocks (7 queries / 4) with the points loop unrolled, and the
# default: one block (7 / 64 and 7 / 32), points in a loop
CONFIGS = {'block4': MSDAConfig(fwd_block_q=4, fwd_warps=1, fwd_unroll=True,
                                bwd_block_q=4, bwd_warps=1, bwd_unroll=True),
           'default': None}


def level_tensors(shapes=SHAPES, device=DEVICE):
    """spatial_shapes (L, 2) int64 and level_start_index (L,) int64."""
    spatial = torch.tensor(shapes, dtype=torch.int64, device=device)
    sizes = spatial[:, 0] * spatial[:, 1]
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial, start


def make_inputs(case: str, shapes=SHAPES, batch: int = 2, n_q: int = 7,
                heads: int = 2, c_h: int = 8, points: int = 2, seed: int = 0):
    """float64 CPU value (B, N_v, heads, C_h), locations (B, N_q, heads, L, P, 2)
    and softmaxed weights (B, N_q, heads, L, P).

    ``case``: ``'inside'`` locations in [0, 1]; ``'partly_out'`` in
    [-0.3, 1.3] (corners of border samples fall off the map); ``'far_out'``
    like partly_out with a third of the points far outside (whole sample
    zero; also 1e4 and -1e4 to exercise the kernel's clamp) and some exactly
    on the map edges 0 and 1.
    """
    g = torch.Generator().manual_seed(seed)
    n_v = sum(h * w for h, w in shapes)
    levels = len(shapes)
    value = torch.randn(batch, n_v, heads, c_h, generator=g, dtype=torch.float64)
    loc = torch.rand(batch, n_q, heads, levels, points, 2, generator=g,
                     dtype=torch.float64)
    if case in ('partly_out', 'far_out'):
        loc = loc * 1.6 - 0.3
    if case == 'far_out':
        far = torch.tensor([-0.9, 1.8, 1e4, -1e4, 0.0, 1.0], dtype=torch.float64)
        pick = torch.randint(0, len(far), loc.shape, generator=g)
        sel = torch.rand(loc.shape, generator=g) < 0.33
        loc = torch.where(sel, far[pick], loc)
    logits = torch.randn(batch, n_q, heads, levels * points, generator=g,
                         dtype=torch.float64)
    weights = logits.softmax(-1).view(batch, n_q, heads, levels, points)
    return value, loc, weights


def reference(value, shapes, loc, weights, grad_out):
    """mmcv's PyTorch path in float64 on the CPU: output and input grads."""
    spatial, _ = level_tensors(shapes, 'cpu')
    ins = [t.detach().cpu().double().requires_grad_() for t in
           (value, loc, weights)]
    out = multi_scale_deformable_attn_pytorch(ins[0], spatial, ins[1], ins[2])
    out.backward(grad_out.detach().cpu().double())
    return out.detach(), ins[0].grad, ins[1].grad, ins[2].grad


def run_triton(value, shapes, loc, weights, grad_out, config=None):
    """Our op on DEVICE: output and grads of value, locations, weights."""
    spatial, start = level_tensors(shapes)
    ins = [t.detach().to(DEVICE).requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn_triton(ins[0], spatial, start, ins[1], ins[2], config)
    out.backward(grad_out.to(DEVICE))
    return out.detach(), ins[0].grad, ins[1].grad, ins[2].grad


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|a - e| / max(1, max|e|), in float64 on the CPU."""
    actual = actual.detach().cpu().double()
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all()
    scale = max(1.0, expected.abs().max().item())
    return (actual - expected).abs().max().item() / scale


def check_all(got, want, dtypes, tol):
    """Compare (out, d value, d loc, d weights) and their dtypes."""
    names = ('output', 'grad_value', 'grad_sampling_locations',
             'grad_attention_weights')
    for name, a, e, dt in zip(names, got, want, dtypes):
        assert a.dtype == dt, (name, a.dtype, dt)
        err = rel_err(a, e)
        assert err <= tol, f'{name}: relative error {err:.3g} > {tol:.1g}'


@pytest.mark.parametrize('config', list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize('case', ['inside', 'partly_out', 'far_out'])
@pytest.mark.parametrize('dtype', [
    torch.float32, torch.float16,
    pytest.param(torch.bfloat16, marks=needs_cuda)],
    ids=['fp32', 'fp16', 'bf16'])
def test_matches_reference(dtype, case, config):
    """Output and all three gradients, every input in ``dtype``."""
    value, loc, weights = make_inputs(case)
    value, loc, weights = (t.to(dtype) for t in (value, loc, weights))
    grad_out = torch.randn(value.shape[0], loc.shape[1],
                           value.shape[2] * value.shape[3],
                           generator=torch.Generator().manual_seed(1)).to(dtype)
    got = run_triton(value, SHAPES, loc, weights, grad_out, CONFIGS[config])
    want = reference(value, SHAPES, loc, weights, grad_out)
    check_all(got, want, (dtype,) * 4, TOL[dtype])
    if case == 'far_out':
        # samples wholly off the map: no gradient at all for their location
        far = (loc.float().abs() > 100).any(-1).to(DEVICE)
        assert (got[2][far] == 0).all()


@pytest.mark.parametrize('dtype', [
    torch.float16, pytest.param(torch.bfloat16, marks=needs_cuda)],
    ids=['fp16', 'bf16'])
def test_mixed_dtypes(dtype):
    """Half value with float32 locations and weights (as under autocast):
    outputs in the value dtype, each gradient in its input's dtype; float32
    locations are not rounded to the half type."""
    value, loc, weights = make_inputs('partly_out', seed=3)
    value = value.to(dtype)
    loc, weights = loc.float(), weights.float()
    grad_out = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(4)
                           ).to(dtype)
    got = run_triton(value, SHAPES, loc, weights, grad_out)
    want = reference(value, SHAPES, loc, weights, grad_out)
    check_all(got, want, (dtype, dtype, torch.float32, torch.float32),
              TOL[dtype])


@pytest.mark.parametrize('shapes,c_h,points', [
    (((5, 7),), 6, 1),          # one level, C_h not a power of two, P = 1
    (((4, 4), (1, 3)), 16, 3),  # a 1-row level
])
def test_other_sizes(shapes, c_h, points):
    """Channel masking (C_h padded to the next power of two), L = 1, P = 1."""
    value, loc, weights = make_inputs('partly_out', shapes=shapes, c_h=c_h,
                                      points=points, n_q=9, heads=3, seed=5)
    value, loc, weights = (t.float() for t in (value, loc, weights))
    grad_out = torch.randn(2, 9, 3 * c_h,
                           generator=torch.Generator().manual_seed(6))
    got = run_triton(value, shapes, loc, weights, grad_out, CONFIGS['block4'])
    want = reference(value, shapes, loc, weights, grad_out)
    check_all(got, want, (torch.float32,) * 4, TOL[torch.float32])


def test_partial_requires_grad():
    """Only the asked-for gradients are computed, and they are right."""
    value, loc, weights = (t.float().to(DEVICE)
                           for t in make_inputs('partly_out', seed=7))
    spatial, start = level_tensors()
    grad_out = torch.randn(2, 7, 16, device=DEVICE)
    want = reference(value, SHAPES, loc, weights, grad_out)
    for which in (0, 1, 2):
        ins = [value.clone(), loc.clone(), weights.clone()]
        ins[which].requires_grad_()
        out = ms_deform_attn_triton(ins[0], spatial, start, ins[1], ins[2])
        out.backward(grad_out)
        assert rel_err(ins[which].grad, want[which + 1]) <= 1e-5
        assert all(t.grad is None for i, t in enumerate(ins) if i != which)


def test_non_contiguous_and_int32_levels():
    """Strided views and int32 level tensors give the same numbers."""
    value, loc, weights = (t.float() for t in make_inputs('partly_out', seed=8))
    grad_out = torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(9))
    want = reference(value, SHAPES, loc, weights, grad_out)
    # same values, non-contiguous memory
    v_nc = value.transpose(1, 2).contiguous().transpose(1, 2).to(DEVICE)
    l_nc = loc.permute(5, 0, 1, 2, 3, 4).contiguous().permute(
        1, 2, 3, 4, 5, 0).to(DEVICE)
    w_nc = weights.transpose(0, 1).contiguous().transpose(0, 1).to(DEVICE)
    assert not (v_nc.is_contiguous() or l_nc.is_contiguous()
                or w_nc.is_contiguous())
    ins = [t.requires_grad_() for t in (v_nc, l_nc, w_nc)]
    spatial, start = level_tensors()
    out = ms_deform_attn_triton(ins[0], spatial.int(), start.int(), ins[1],
                                ins[2])
    out.backward(grad_out.to(DEVICE))
    check_all((out, *(t.grad for t in ins)), want, (torch.float32,) * 4, 1e-5)


def test_empty_queries():
    """N_q = 0: empty output, zero-size gradients, no launch."""
    value, loc, weights = (t.float().to(DEVICE)
                           for t in make_inputs('inside', n_q=0))
    spatial, start = level_tensors()
    value.requires_grad_()
    out = ms_deform_attn_triton(value, spatial, start, loc, weights)
    assert out.shape == (2, 0, 16)
    out.sum().backward()
    assert value.grad.shape == value.shape and (value.grad == 0).all()


def test_rejects_bad_inputs():
    """Clear errors for wrong dtypes and inconsistent shapes."""
    value, loc, weights = (t.float().to(DEVICE) for t in make_inputs('inside'))
    spatial, start = level_tensors()
    with pytest.raises(TypeError, match='value must be float32'):
        ms_deform_attn_triton(value.double(), spatial, start, loc, weights)
    with pytest.raises(TypeError, match='spatial_shapes must be int64'):
        ms_deform_attn_triton(value, spatial.float(), start, loc, weights)
    with pytest.raises(ValueError, match='attention_weights must be'):
        ms_deform_attn_triton(value, spatial, start, loc, weights[..., :1])
    with pytest.raises(ValueError, match='sampling_locations must be'):
        ms_deform_attn_triton(value, spatial, start, loc[..., :1], weights)
    with pytest.raises(ValueError, match='batch or heads'):
        ms_deform_attn_triton(value[:1], spatial, start, loc, weights)
    with pytest.raises(ValueError, match=r'spatial_shapes must be \(L, 2\)'):
        ms_deform_attn_triton(value, spatial[:2], start, loc, weights)
    with pytest.raises(ValueError, match='value must be'):
        ms_deform_attn_triton(value[0], spatial, start, loc, weights)


def test_bad_spatial_shapes_stay_in_bounds():
    """spatial_shapes larger than N_v: rows >= N_v are skipped, not read."""
    value, loc, weights = (t.float().to(DEVICE) for t in make_inputs('inside'))
    spatial, start = level_tensors()
    spatial = spatial * 3  # claims far more rows than value has
    value.requires_grad_()
    out = ms_deform_attn_triton(value, spatial, start, loc, weights)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(value.grad).all()


def _layers(c=32, heads=2, levels=3, points=2):
    """A pytorch-impl and a triton-impl MSDeformAttn with the same weights."""
    torch.manual_seed(0)
    ref = MSDeformAttn(c, heads, levels, points, impl='pytorch')
    with torch.no_grad():  # non-trivial offsets and weights
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    tri = MSDeformAttn(c, heads, levels, points, impl='triton')
    tri.load_state_dict(ref.state_dict())
    return ref, tri


def _layer_inputs(c=32, batch=2, levels=3):
    g = torch.Generator().manual_seed(11)
    spatial, start = level_tensors(SHAPES, 'cpu')
    n = int((spatial[:, 0] * spatial[:, 1]).sum())
    query = torch.randn(batch, n, c, generator=g)
    pos = torch.randn(batch, n, c, generator=g)
    ref_pts = torch.rand(batch, n, levels, 2, generator=g)
    return query, pos, ref_pts, spatial, start


def _layer_run(layer, query, pos, ref_pts, spatial, start):
    q = query.clone().requires_grad_()
    r = ref_pts.clone().requires_grad_()
    layer.zero_grad()
    out = layer(q, pos, r, spatial, start)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return out.detach(), q.grad, r.grad, grads


def _spy_triton_op(monkeypatch) -> list:
    """Count the layer's launches of the Triton forward kernel (the
    ``m2f::msda_triton`` custom op looks the launcher up per call)."""
    import projects_ops.msda_triton.function as function
    calls = []
    real = function._launch_fwd

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)
    monkeypatch.setattr(function, '_launch_fwd', spy)
    return calls


@pytest.mark.skipif(DEVICE != 'cpu', reason='CPU interpreter path')
def test_layer_triton_matches_pytorch(monkeypatch):
    """MSDeformAttn(impl='triton') == impl='pytorch', forward and backward."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    calls = _spy_triton_op(monkeypatch)
    ref, tri = _layers()
    inputs = _layer_inputs()
    want = _layer_run(ref, *inputs)
    assert not calls
    got = _layer_run(tri, *inputs)
    assert calls == [torch.float32]
    for name, a, e in (('output', got[0], want[0]),
                       ('grad query', got[1], want[1]),
                       ('grad reference_points', got[2], want[2])):
        err = rel_err(a, e.double())
        assert err <= 1e-5, f'{name}: {err:.3g}'
    assert got[1].abs().max() > 0 and got[2].abs().max() > 0
    for name in want[3]:
        err = rel_err(got[3][name], want[3][name].double())
        assert err <= 1e-5, f'grad {name}: {err:.3g}'


@pytest.mark.skipif(DEVICE != 'cpu', reason='CPU fallback path')
def test_layer_triton_cpu_falls_back_without_interpreter(monkeypatch):
    """On CPU tensors without TRITON_INTERPRET, 'triton' is the pytorch path
    (bit for bit)."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    calls = _spy_triton_op(monkeypatch)
    ref, tri = _layers()
    inputs = _layer_inputs()
    want = _layer_run(ref, *inputs)
    got = _layer_run(tri, *inputs)
    assert not calls
    for a, e in zip(got[:3], want[:3]):
        assert torch.equal(a, e)


def test_layer_rejects_unknown_impl():
    with pytest.raises(ValueError,
                       match=r"one of \['mmcv', 'pytorch', 'triton'\]"):
        MSDeformAttn(32, 2, 3, 2, impl='cuda')


@pytest.mark.skipif(DEVICE != 'cuda', reason='needs a GPU')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16],
                         ids=['fp32', 'bf16'])
def test_layer_triton_cuda_autocast(dtype, monkeypatch):
    """On CUDA, impl='triton' under autocast keeps the value dtype and agrees
    with the float32 pytorch path."""
    calls = _spy_triton_op(monkeypatch)
    ref, tri = _layers()
    ref, tri = ref.cuda(), tri.cuda()
    query, pos, ref_pts, spatial, start = (t.cuda() for t in _layer_inputs())
    with torch.no_grad():
        want = ref(query, pos, ref_pts, spatial, start)
        with torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
            got = tri(query, pos, ref_pts, spatial, start)
    assert calls == [dtype]
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert rel_err(got.float(), want.double().cpu()) <= tol
