"""Probe where the Triton MSDA backward spends its time (GPU only).

Run from the repository root on the GPU machine::

    PYTHONPATH=. python scripts/gpu_msda_probe.py --out probe.json \
        [--before old_kernels.py] [--overhead]

1. Registers, spills and the atomic / load instruction forms (PTX) of the
   backward kernel at a few launch configs.
2. The backward alone (zero-fill, kernel, cast; ``function._launch_bwd``) at
   the pixel decoder's shapes, B = 2 and 16: all gradients, only the value
   gradient, only the location and weight gradients, and block sizes.
3. forward + backward through autograd as ``projects_ops/msda_triton/bench.py``
   times it: ours, ours with the kernels of ``--before`` (an older
   ``kernels.py``, for an A/B in one process) and mmcv's CUDA op.
4. ``--overhead`` (instead of 1-3): forward + backward of ours and mmcv as
   (a) eager calls timed with events, (b) the host time to issue one call,
   (c) one CUDA-graph replay (GPU time alone) and (d) the profiler's kernel
   times per call.

Timings: CUDA events, L2 flushed before each call, median of ``--iters``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch
import triton

from projects_ops.msda_triton import bench, function
from projects_ops.msda_triton.function import MSDAConfig, ms_deform_attn_triton
from projects_ops.msda_triton.kernels import next_power_of_2

# backward launch configs: (block_q, warps, unroll)
BWD_CONFIGS = ((32, 4, False), (16, 2, False), (32, 2, False), (16, 4, False),
               (64, 4, False), (64, 8, False), (32, 4, True))


@contextlib.contextmanager
def kernels_from(path: Optional[str]) -> Iterator[None]:
    """Run ``function``'s launches with the kernels of another kernels.py."""
    if path is None:
        yield
        return
    spec = importlib.util.spec_from_file_location('_msda_kernels_before', path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    saved = function.msda_fwd_kernel, function.msda_bwd_kernel
    function.msda_fwd_kernel = mod.msda_fwd_kernel
    function.msda_bwd_kernel = mod.msda_bwd_kernel
    try:
        yield
    finally:
        function.msda_fwd_kernel, function.msda_bwd_kernel = saved


def bwd_kernel_of(config: MSDAConfig, value, shapes, start, loc, attw,
                  grad_out):
    """Compile (and run once) the backward kernel; returns it, for its PTX."""
    bs, n_v, heads, c_h = value.shape
    n_q = loc.shape[1]
    acc = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
    grid = (triton.cdiv(n_q, config.bwd_block_q), heads, bs)
    return function.msda_bwd_kernel[grid](
        value, shapes, start, loc, attw, grad_out, acc, torch.empty_like(loc),
        torch.empty_like(attw), n_q, n_v, HEADS=heads, C_H=c_h,
        L=loc.shape[3], P=loc.shape[4], BLOCK_Q=config.bwd_block_q,
        BLOCK_C=next_power_of_2(c_h), UNROLL=config.bwd_unroll,
        GRAD_VALUE=True, GRAD_LOC_ATTW=True, num_warps=config.bwd_warps)


def ptx_summary(kernel) -> Dict[str, int]:
    """Counts of the atomic / load instruction forms, registers, spills."""
    ptx = kernel.asm['ptx']
    forms: Dict[str, int] = {}
    for pat in (r'atom\.global[\w.]*', r'red\.global[\w.]*',
                r'ld\.global[\w.]*'):
        for m in re.findall(pat, ptx):
            forms[m] = forms.get(m, 0) + 1
    forms['registers'] = getattr(kernel, 'n_regs', -1)
    forms['spills'] = getattr(kernel, 'n_spills', -1)
    return forms


def overhead(op: Callable, batch: int, iters: int,
             flush: bench.L2Flusher) -> Dict[str, object]:
    """Eager, host-issue, graph-replay and per-kernel times of fwd + bwd."""
    value, shapes, start, loc, attw = bench.make_inputs(batch, torch.float32)
    ins = [t.requires_grad_() for t in (value, loc, attw)]
    grad = torch.randn(batch, loc.shape[1], bench.HEADS * bench.C_H,
                       device='cuda')

    def step():
        for t in ins:
            t.grad = None
        op(ins[0], shapes, start, ins[1], ins[2]).backward(grad)

    res: Dict[str, object] = {}
    res['eager_ms'] = statistics.median(bench.time_ms(step, iters, 5, flush))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    res['host_issue_ms'] = (time.perf_counter() - t0) / iters * 1e3
    torch.cuda.synchronize()
    with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    kern = {}
    for e in prof.key_averages():
        t = getattr(e, 'self_device_time_total', 0) or 0
        if t > 0:
            kern[e.key[:60]] = t / 10 / 1e3  # ms per call
    res['kernels_ms'] = dict(sorted(kern.items(), key=lambda kv: -kv[1])[:8])
    res['kernel_sum_ms'] = sum(kern.values())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    for t in ins:
        t.grad = None
    with torch.cuda.graph(graph):
        op(ins[0], shapes, start, ins[1], ins[2]).backward(grad)
    res['graph_ms'] = statistics.median(
        bench.time_ms(graph.replay, iters, 3, flush))
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--batches', type=int, nargs='+', default=[2, 16])
    parser.add_argument('--before', help='an older kernels.py to compare with')
    parser.add_argument('--overhead', action='store_true',
                        help='only part 4')
    args = parser.parse_args()
    flush = bench.L2Flusher(True)
    out: Dict[str, object] = dict(device=torch.cuda.get_device_name(),
                                  triton=triton.__version__,
                                  torch=torch.__version__)
    mmcv_op, why = bench.load_mmcv()
    if mmcv_op is None:
        print('no mmcv:', why)
    tags = {'ours': None}
    if args.before:
        tags['before'] = args.before

    if args.overhead:
        res = {}
        for batch in args.batches:
            for tag, path in tags.items():
                with kernels_from(path):
                    res[f'{tag} b{batch}'] = r = overhead(
                        ms_deform_attn_triton, batch, args.iters, flush)
                print(tag, batch, json.dumps(r), flush=True)
            if mmcv_op is not None:
                res[f'mmcv b{batch}'] = r = overhead(mmcv_op, batch, args.iters,
                                                     flush)
                print('mmcv', batch, json.dumps(r), flush=True)
        out['overhead'] = res
    else:
        value, shapes, start, loc, attw = bench.make_inputs(2, torch.float32)
        grad = torch.randn(2, loc.shape[1], bench.HEADS * bench.C_H,
                           device='cuda')
        ptx = {}
        for tag, path in tags.items():
            with kernels_from(path):
                for bq, w, unroll in BWD_CONFIGS:
                    cfg = MSDAConfig(bwd_block_q=bq, bwd_warps=w,
                                     bwd_unroll=unroll)
                    key = f'{tag} bwd {bq}/{w}/{unroll}'
                    ptx[key] = ptx_summary(bwd_kernel_of(cfg, value, shapes,
                                                         start, loc, attw, grad))
                    print('PTX', key, ptx[key], flush=True)
        out['ptx'] = ptx

        rows: List[Dict] = []
        for batch in args.batches:
            value, shapes, start, loc, attw = bench.make_inputs(batch,
                                                                torch.float32)
            grad = torch.randn(batch, loc.shape[1], bench.HEADS * bench.C_H,
                               device='cuda')
            variants = [dict(need_value=False), dict(need_loc=False)] + [
                dict(bwd_block_q=bq, bwd_warps=w, bwd_unroll=u)
                for bq, w, u in BWD_CONFIGS]
            for tag, path in tags.items():
                with kernels_from(path):
                    for kw in variants:
                        kw = dict(kw)
                        need_value = kw.pop('need_value', True)
                        need_loc = kw.pop('need_loc', True)
                        cfg = MSDAConfig(**kw)
                        times = bench.time_ms(
                            lambda cfg=cfg, nv=need_value, nl=need_loc:
                            function._launch_bwd(value, shapes, start, loc,
                                                 attw, grad, nv, nl, cfg),
                            args.iters, 5, flush)
                        r = dict(tag=tag, part='bwd alone', batch=batch,
                                 need_value=need_value, need_loc=need_loc,
                                 **kw, median_ms=statistics.median(times),
                                 min_ms=min(times))
                        rows.append(r)
                        print(json.dumps(r), flush=True)
        ns = argparse.Namespace(iters=args.iters, warmup=5, bw=3.35e12)
        for batch in args.batches:
            for tag, path in tags.items():
                with kernels_from(path):
                    for r in bench.bench_one(tag, ms_deform_attn_triton, batch,
                                             'fp32', ns, flush):
                        rows.append(r)
                        print(json.dumps(r), flush=True)
            if mmcv_op is not None:
                for r in bench.bench_one('mmcv', mmcv_op, batch, 'fp32', ns,
                                         flush):
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        out['rows'] = rows
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
