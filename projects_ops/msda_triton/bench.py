"""GPU benchmark and correctness check of the Triton MSDA op.

Run from the repository root (GPU machine)::

    PYTHONPATH=. python projects_ops/msda_triton/bench.py --out /tmp/msda.json
    PYTHONPATH=. python projects_ops/msda_triton/bench.py --check
    PYTHONPATH=. python projects_ops/msda_triton/bench.py --sweep --out s.json

Shapes are the pixel decoder's at a 512 x 512 input: levels 64x64, 32x32,
16x16 (strides 8/16/32, N_q = N_v = 5376), heads 8, C_h 32, L 3, P 4.

Timings: CUDA events around each call, after warm-up, L2 flushed before each
call (``--no-flush`` to keep it warm); the median of ``--iters``. With
``--graph`` each call is also captured as a CUDA graph and replayed: that is
the GPU time alone, since at B = 2 a slow host can take longer to issue the
launches than the GPU takes to run them. Baselines:
mmcv's CUDA op (float32 and float16; it has no bfloat16) when mmcv with its
compiled ops is importable, and the PyTorch ``grid_sample`` path (what
``impl='pytorch'`` runs) always. The "floor" is the bytes every op must move
at least once (inputs read, outputs written) over the peak bandwidth
(``--bw``, default 3.35 TB/s, H100 SXM).

``--check`` compares ours with mmcv's CUDA op in float32 (or, without mmcv,
with the PyTorch path in float64) on the same, already rounded inputs, output
and all three gradients, and exits 1 if an error is above its tolerance.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import platform
import statistics
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

try:
    from projects_ops.msda_triton.function import (
        DEFAULT_CONFIG,
        MSDAConfig,
        ms_deform_attn_triton,
    )
except ModuleNotFoundError:  # run as a script without PYTHONPATH=<repo root>
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
        __file__)))))
    from projects_ops.msda_triton.function import (
        DEFAULT_CONFIG,
        MSDAConfig,
        ms_deform_attn_triton,
    )

LEVELS = ((64, 64), (32, 32), (16, 16))
HEADS, C_H, POINTS = 8, 32, 4
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# tolerance on max|err| / max(1, max|ref|)
TOL = {'fp32': 1e-4, 'fp16': 5e-3, 'bf16': 3e-2}


def torch_reference(value: Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                    sampling_locations: Tensor,
                    attention_weights: Tensor) -> Tensor:
    """PyTorch MSDA, same maths as mmcv's ``multi_scale_deformable_attn_pytorch``.

    Args:
        value: (B, N_v, heads, C_h).
        spatial_shapes: L pairs (H, W).
        sampling_locations: (B, N_q, heads, L, P, 2).
        attention_weights: (B, N_q, heads, L, P).

    Returns:
        (B, N_q, heads * C_h).
    """
    bs, _, heads, c_h = value.shape
    _, n_q, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(bs * heads, c_h, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(bs * heads, 1, n_q,
                                                        levels * points)
    out = (torch.stack(sampled, -2).flatten(-2) * weights).sum(-1)
    return out.view(bs, heads * c_h, n_q).transpose(1, 2).contiguous()


def load_mmcv() -> Tuple[Optional[Callable], str]:
    """mmcv's CUDA op as ``f(value, shapes, start, loc, attw)``, or a reason."""
    try:
        from mmcv.ops.multi_scale_deform_attn import (
            MultiScaleDeformableAttnFunction,
        )
    except Exception as e:  # ImportError, or the compiled ext failing to load
        return None, f'mmcv CUDA op not importable: {e!r}'

    def mmcv_op(value, shapes, start, loc, attw):
        return MultiScaleDeformableAttnFunction.apply(value, shapes, start, loc,
                                                      attw, 64)
    return mmcv_op, 'ok'


def make_inputs(batch: int, dtype: torch.dtype, seed: int = 0,
                loc_dtype: Optional[torch.dtype] = None, wide: bool = False):
    """value, spatial_shapes, level_start_index, locations, weights (CUDA).

    Locations in [-0.05, 1.05] (some corners off the map), or with ``wide``
    in [-0.3, 1.3] with 10 % of them at +-1e4 (wholly off the map);
    softmaxed weights.
    """
    g = torch.Generator(device='cuda').manual_seed(seed)
    shapes = torch.tensor(LEVELS, dtype=torch.int64, device='cuda')
    sizes = shapes[:, 0] * shapes[:, 1]
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    n = int(sizes.sum())
    levels = len(LEVELS)
    value = torch.randn(batch, n, HEADS, C_H, device='cuda', generator=g)
    loc = torch.rand(batch, n, HEADS, levels, POINTS, 2, device='cuda',
                     generator=g) * 1.1 - 0.05
    if wide:
        loc = (loc + 0.05) / 1.1 * 1.6 - 0.3
        far = torch.rand(loc.shape, device='cuda', generator=g) < 0.1
        loc = torch.where(far, torch.sign(loc - 0.5) * 1e4, loc)
    attw = torch.randn(batch, n, HEADS, levels * POINTS, device='cuda',
                       generator=g).softmax(-1).view(batch, n, HEADS, levels,
                                                     POINTS)
    loc_dtype = loc_dtype or dtype
    return value.to(dtype), shapes, start, loc.to(loc_dtype), attw.to(loc_dtype)


def traffic_bytes(batch: int, dtype: torch.dtype, backward: bool) -> int:
    """Bytes read + written once: forward, or forward + backward."""
    n = sum(h * w for h, w in LEVELS)
    es = torch.empty((), dtype=dtype).element_size()
    v = batch * n * HEADS * C_H
    lp = batch * n * HEADS * len(LEVELS) * POINTS
    fwd = (v + 3 * lp + v) * es  # value, loc (2), attw in; output out
    if not backward:
        return fwd
    # value, loc, attw, grad_out in; grad_value, grad_loc, grad_attw out
    bwd = (2 * v + 3 * lp) * es + (v + 3 * lp) * es
    if dtype != torch.float32:
        bwd += v * 4 * 2  # float32 grad_value buffer written, read by the cast
    return fwd + bwd


def gather_bytes(batch: int, dtype: torch.dtype, backward: bool) -> int:
    """Bytes of the corner rows the kernels touch (4 per sample point; from
    L1 / L2 mostly): forward gathers, backward gathers them again and adds the
    same number of float32 rows atomically. For context next to the floor."""
    n = sum(h * w for h, w in LEVELS)
    es = torch.empty((), dtype=dtype).element_size()
    rows = batch * n * HEADS * len(LEVELS) * POINTS * 4
    fwd = rows * C_H * es
    return fwd if not backward else fwd + rows * C_H * (es + 4)


class L2Flusher:
    """Overwrites a buffer larger than L2 so every timed call starts cold."""

    def __init__(self, enabled: bool, size_mb: int = 256) -> None:
        self.buf = (torch.empty(size_mb * 2**20, dtype=torch.uint8, device='cuda')
                    if enabled else None)

    def __call__(self) -> None:
        if self.buf is not None:
            self.buf.zero_()


def time_ms(fn: Callable[[], None], iters: int, warmup: int,
            flush: L2Flusher, setup: Callable[[], None] = lambda: None
            ) -> List[float]:
    """Milliseconds of each of ``iters`` calls of ``fn`` (CUDA events)."""
    for _ in range(warmup):
        setup()
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        setup()
        flush()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def graph_replay_ms(fn: Callable[[], None], iters: int, flush: L2Flusher,
                    setup: Callable[[], None] = lambda: None) -> float:
    """Median ms of replaying ``fn`` captured as one CUDA graph: the GPU time
    alone, without the host's launch overhead (which bounds eager calls at
    small sizes on a slow host)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            setup()
            fn()
    torch.cuda.current_stream().wait_stream(side)
    setup()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return statistics.median(time_ms(graph.replay, iters, 3, flush))


def bench_one(name: str, op: Callable, batch: int, dtype_name: str,
              args: argparse.Namespace, flush: L2Flusher) -> List[Dict]:
    """Forward and forward + backward timings of ``op`` at one setting.

    Eager calls timed with events (``median_ms``), and with ``args.graph``
    also one CUDA-graph replay of the same call (``graph_ms``).
    """
    dtype = DTYPES[dtype_name]
    value, shapes, start, loc, attw = make_inputs(batch, dtype)
    rows = []

    def fwd_call():
        with torch.no_grad():
            op(value, shapes, start, loc, attw)

    fwd = time_ms(fwd_call, args.iters, args.warmup, flush)
    graph = {}
    if getattr(args, 'graph', False):
        graph['fwd'] = graph_replay_ms(fwd_call, args.iters, flush)
    ins = [t.requires_grad_() for t in (value, loc, attw)]
    grad = torch.randn(batch, loc.shape[1], HEADS * C_H, device='cuda',
                       dtype=dtype)

    def clear():
        for t in ins:
            t.grad = None

    def step():
        op(ins[0], shapes, start, ins[1], ins[2]).backward(grad)

    fwd_bwd = time_ms(step, args.iters, args.warmup, flush, clear)
    if getattr(args, 'graph', False):
        graph['fwd+bwd'] = graph_replay_ms(step, args.iters, flush, clear)
    for mode, times in (('fwd', fwd), ('fwd+bwd', fwd_bwd)):
        med = statistics.median(times)
        floor_ms = traffic_bytes(batch, dtype, mode != 'fwd') / args.bw * 1e3
        rows.append(dict(impl=name, batch=batch, dtype=dtype_name, mode=mode,
                         median_ms=med, min_ms=min(times),
                         graph_ms=graph.get(mode),
                         floor_ms=floor_ms, x_floor=med / floor_ms,
                         gather_mb=gather_bytes(batch, dtype, mode != 'fwd')
                         / 2**20))
    return rows


def max_errors(got: Sequence[Tensor], want: Sequence[Tensor]) -> Dict[str, float]:
    """Scaled max errors of (out, d value, d loc, d attw)."""
    names = ('out', 'grad_value', 'grad_loc', 'grad_attw')
    errs = {}
    for name, a, e in zip(names, got, want):
        a, e = a.double(), e.double()
        errs[name] = ((a - e).abs().max() / e.abs().max().clamp_min(1)).item()
        errs[name + '_abs'] = (a - e).abs().max().item()
    return errs


def run_with_grads(op: Callable, value, shapes, start, loc, attw, grad):
    ins = [t.detach().clone().requires_grad_() for t in (value, loc, attw)]
    out = op(ins[0], shapes, start, ins[1], ins[2])
    out.backward(grad)
    return out.detach(), ins[0].grad, ins[1].grad, ins[2].grad


def check(batches: Sequence[int], mmcv_op: Optional[Callable]) -> bool:
    """Ours vs mmcv float32 (or PyTorch float64) at the real shapes."""
    ok = True
    for batch in batches:
        for dname, dtype in DTYPES.items():
            for loc_dtype, wide in ((None, False), (None, True),
                                    (torch.float32, False)):
                if loc_dtype is not None and dtype == torch.float32:
                    continue
                value, shapes, start, loc, attw = make_inputs(
                    batch, dtype, 1, loc_dtype, wide)
                grad = torch.randn(batch, loc.shape[1], HEADS * C_H,
                                   device='cuda').to(dtype)
                got = run_with_grads(ms_deform_attn_triton, value, shapes, start,
                                     loc, attw, grad)
                if mmcv_op is not None:
                    ref_name = 'mmcv fp32'
                    want = run_with_grads(mmcv_op, value.float(), shapes, start,
                                          loc.float(), attw.float(), grad.float())
                else:
                    ref_name = 'torch fp64'
                    want = run_with_grads(
                        lambda v, s, st, lo, a: torch_reference(v, LEVELS, lo, a),
                        value.double(), shapes, start, loc.double(),
                        attw.double(), grad.double())
                errs = max_errors(got, want)
                tag = dname + ('' if loc_dtype is None else '+fp32 loc/attw') \
                    + (' wide' if wide else '')
                bad = [k for k, v in errs.items()
                       if not k.endswith('_abs') and v > TOL[dname]]
                ok &= not bad
                print(f'check B={batch} {tag:22s} vs {ref_name}: ' + ' '.join(
                    f'{k}={v:.2e}' for k, v in errs.items())
                    + (f'  FAIL {bad}' if bad else '  ok'), flush=True)
    return ok


# (block_q, warps, unroll) candidates, timed on the kernels alone by --sweep
SWEEP_FWD = [(32, 2, False), (32, 4, False), (64, 4, False), (64, 8, False),
             (128, 8, False), (16, 2, True), (32, 4, True), (64, 8, True)]
SWEEP_BWD = [(16, 2, False), (32, 4, False), (64, 4, False), (64, 8, False),
             (16, 2, True), (16, 4, True), (32, 4, True), (32, 8, True)]


def sweep(args: argparse.Namespace, flush: L2Flusher) -> List[Dict]:
    """Time each launch config of the forward and the backward kernel alone."""
    from projects_ops.msda_triton.function import _launch_bwd, _launch_fwd
    rows = []
    for batch in args.batches:
        for dname in args.dtypes:
            dtype = DTYPES[dname]
            value, shapes, start, loc, attw = make_inputs(batch, dtype)
            grad = torch.randn(batch, loc.shape[1], HEADS * C_H, device='cuda',
                               dtype=dtype)
            for mode, cands in (('fwd', SWEEP_FWD), ('bwd', SWEEP_BWD)):
                for bq, warps, unroll in cands:
                    if mode == 'fwd':
                        cfg = MSDAConfig(fwd_block_q=bq, fwd_warps=warps,
                                         fwd_unroll=unroll)

                        def fn(cfg=cfg):
                            _launch_fwd(value, shapes, start, loc, attw, cfg)
                    else:
                        cfg = MSDAConfig(bwd_block_q=bq, bwd_warps=warps,
                                         bwd_unroll=unroll)

                        def fn(cfg=cfg):
                            _launch_bwd(value, shapes, start, loc, attw, grad,
                                        True, True, cfg)
                    times = time_ms(fn, args.iters, args.warmup, flush)
                    r = dict(impl='triton', batch=batch, dtype=dname, mode=mode,
                             block_q=bq, warps=warps, unroll=unroll,
                             median_ms=statistics.median(times),
                             min_ms=min(times))
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--check', action='store_true',
                        help='only check correctness vs mmcv / PyTorch')
    parser.add_argument('--sweep', action='store_true',
                        help='time the launch configs in SWEEP_FWD / SWEEP_BWD (ours only)')
    parser.add_argument('--batches', type=int, nargs='+', default=[2, 16])
    parser.add_argument('--dtypes', nargs='+', default=list(DTYPES),
                        choices=list(DTYPES))
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--bw', type=float, default=3.35e12,
                        help='peak bytes/s for the floor (H100 SXM 3.35e12)')
    parser.add_argument('--no-flush', action='store_true',
                        help='keep L2 warm between timed calls')
    parser.add_argument('--no-pytorch', action='store_true',
                        help='skip the grid_sample baseline')
    parser.add_argument('--graph', action='store_true',
                        help='also time each call replayed as a CUDA graph '
                        '(GPU time without host launch overhead)')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print('needs a CUDA GPU', file=sys.stderr)
        return 2
    import triton
    mmcv_op, mmcv_status = load_mmcv()
    if mmcv_op is not None:
        try:  # the op may import but lack CUDA kernels
            v, s, st, lo, a = make_inputs(1, torch.float32)
            mmcv_op(v, s, st, lo, a)
        except Exception as e:
            mmcv_op, mmcv_status = None, f'mmcv CUDA op failed: {e!r}'
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, python=platform.python_version(),
                mmcv=mmcv_status, levels=LEVELS, heads=HEADS, c_h=C_H,
                points=POINTS, iters=args.iters, flush=not args.no_flush,
                bw=args.bw, default_config=DEFAULT_CONFIG.__dict__)
    print(json.dumps(meta), flush=True)
    if args.check:
        return 0 if check(args.batches, mmcv_op) else 1

    flush = L2Flusher(not args.no_flush)
    rows: List[Dict] = []
    if args.sweep:
        rows = sweep(args, flush)
    else:
        impls: List[Tuple[str, Callable, Sequence[str]]] = [
            ('triton', ms_deform_attn_triton, args.dtypes)]
        if mmcv_op is not None:
            impls.append(('mmcv', mmcv_op,
                          [d for d in args.dtypes if d != 'bf16']))
        if not args.no_pytorch:
            impls.append(('pytorch',
                          lambda v, s, st, lo, a: torch_reference(v, LEVELS, lo, a),
                          args.dtypes))
        for name, op, dnames in impls:
            for batch in args.batches:
                for dname in dnames:
                    for r in bench_one(name, op, batch, dname, args, flush):
                        rows.append(r)
                        print(json.dumps(r), flush=True)
        by_key = {(r['impl'], r['batch'], r['dtype'], r['mode']): r for r in rows}
        print('\nimpl     B  dtype mode      median ms  floor ms  x floor  '
              'x mmcv(same dtype)  x mmcv(fp32)  graph ms  x mmcv graph')
        for r in rows:
            key = (r['batch'], r['dtype'], r['mode'])
            ref = by_key.get(('mmcv', *key))
            ref32 = by_key.get(('mmcv', r['batch'], 'fp32', r['mode']))
            r['speedup_vs_mmcv'] = ref['median_ms'] / r['median_ms'] if ref else None
            r['speedup_vs_mmcv_fp32'] = (ref32['median_ms'] / r['median_ms']
                                         if ref32 else None)
            r['graph_speedup_vs_mmcv'] = (
                ref['graph_ms'] / r['graph_ms']
                if ref and ref.get('graph_ms') and r.get('graph_ms') else None)

            def fmt(x):
                return f'{x:6.2f}' if x else '     -'
            print(f"{r['impl']:8s} {r['batch']:2d} {r['dtype']:5s} "
                  f"{r['mode']:8s} {r['median_ms']:9.3f} {r['floor_ms']:9.3f} "
                  f"{r['x_floor']:8.1f}  {fmt(r['speedup_vs_mmcv']):>18s}  "
                  f"{fmt(r['speedup_vs_mmcv_fp32']):>12s}  "
                  f"{r['graph_ms'] or 0:8.3f}  "
                  f"{fmt(r['graph_speedup_vs_mmcv']):>11s}")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(meta=meta, results=rows), f, indent=1)
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
