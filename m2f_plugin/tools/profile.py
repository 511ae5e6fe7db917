"""Where a training step or an inference call spends its time and memory.

Runs ``torch.profiler`` over a few steps of ours or mmseg's built-in
Mask2Former (same model builder and synthetic batch as
``m2f_plugin.tools.benchmark``) and writes, per run, a text report with:

* host wall time, GPU kernel time and kernel launches per step (a step whose
  GPU time is far below its wall time is bound by the host; the wall time is
  taken under the profiler, which adds host overhead, so "% busy" is a lower
  bound);
* time per stage (backbone, pixel decoder, transformer decoder, criterion,
  backward, optimizer) from ``record_function`` labels;
* the top operators by GPU time and by host self time;
* memory after each stage of the forward and the peak (GPU only).

    python -m m2f_plugin.tools.profile --out prof/ --which ours builtin \
        --mode train --batch 2 8
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from .benchmark import build, make_batch, make_optimizer

# attribute paths labelled in the profile, whichever exist on the model
STAGES = ('backbone', 'decode_head.pixel_decoder',
          'decode_head.transformer_decoder', 'decode_head.criterion')


def _get(obj, path: str):
    for name in path.split('.'):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _label_stages(model, memory: Dict[str, float], device: str) -> None:
    """Wrap each stage's forward in a profiler label and log the allocated
    memory after it."""
    for path in STAGES:
        module = _get(model, path)
        if module is None:
            continue
        label = path.split('.')[-1]
        forward = module.forward

        @functools.wraps(forward)
        def wrapped(*args, _f=forward, _l=label, **kwargs):
            with record_function(f'stage::{_l}'):
                out = _f(*args, **kwargs)
            if device.startswith('cuda'):
                memory[_l] = torch.cuda.memory_allocated() / 2**20
            return out

        module.forward = wrapped


def _step_fn(model, mode: str, batch: int, size, num_classes: int,
             device: str, amp: Optional[str], which: str = 'ours',
             optim: str = 'plain') -> Callable[[], None]:
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    autocast = functools.partial(torch.autocast, device.split(':')[0],
                                 dtype=dtype or torch.float32,
                                 enabled=dtype is not None)
    if mode == 'infer':
        model.eval()
        h, w = size
        imgs = torch.randn(batch, 3, h, w, device=device)
        metas = [dict(img_shape=(h, w), ori_shape=(h, w),
                      pad_shape=(h, w))] * batch

        @torch.no_grad()
        def infer():
            with autocast():
                model.inference(imgs, metas).argmax(1)
        return infer
    model.train()
    opt = make_optimizer(model, which, optim)
    imgs, samples = make_batch(batch, size, num_classes, device)
    scaler = torch.amp.GradScaler(enabled=amp == 'fp16')

    def train():
        with autocast():
            losses = model.loss(imgs, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        opt.zero_grad(set_to_none=True)
        with record_function('stage::backward'):
            scaler.scale(loss).backward()
        with record_function('stage::optimizer'):
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            scaler.step(opt)
            scaler.update()
    return train


def profile_one(which: str, mode: str, batch: int, size, amp: Optional[str],
                device: str, steps: int, warmup: int, small: bool,
                optim: str = 'plain') -> Dict:
    """Profile ``steps`` steps after ``warmup``; returns numbers + text."""
    num_classes = 150
    model = build(which, num_classes, small).to(device)
    memory: Dict[str, float] = {}
    _label_stages(model, memory, device)
    step = _step_fn(model, mode, batch, size, num_classes, device, amp,
                    which, optim)
    cuda = device.startswith('cuda')
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / steps
    events = prof.events()
    # device-side events, without the stage labels' GPU-side copies
    kernels = [e for e in events
               if e.device_type == torch.autograd.DeviceType.CUDA and
               not e.name.startswith('stage::')]
    gpu_us = sum(e.time_range.elapsed_us() for e in kernels) / steps
    stages: Dict[str, Dict] = {}
    for e in prof.key_averages():
        # a label appears twice (host and device rows): keep the host one
        if e.key.startswith('stage::') and e.cpu_time_total > 0:
            stages[e.key[7:]] = dict(
                host_ms=e.cpu_time_total / 1e3 / steps,
                calls=e.count // steps)
    sort_gpu = 'device_time_total' if cuda else 'cpu_time_total'
    table_gpu = prof.key_averages().table(sort_by=sort_gpu, row_limit=30,
                                          max_name_column_width=70)
    table_cpu = prof.key_averages().table(sort_by='self_cpu_time_total',
                                          row_limit=25,
                                          max_name_column_width=70)
    out = dict(which=which, mode=mode, batch=batch, size=list(size),
               amp=amp or 'fp32', wall_ms=wall * 1e3, gpu_ms=gpu_us / 1e3,
               kernels_per_step=len(kernels) / steps, stages=stages)
    if cuda:
        out['memory_mb'] = dict(start=base, **memory,
                                peak=torch.cuda.max_memory_allocated() / 2**20)
    out['table_gpu'] = table_gpu
    out['table_cpu'] = table_cpu
    return out


def _report(r: Dict) -> str:
    lines = [f"== {r['which']} {r['mode']} b{r['batch']} {r['size']} "
             f"{r['amp']}",
             f"wall {r['wall_ms']:.1f} ms/step, GPU kernels {r['gpu_ms']:.1f} "
             f"ms/step ({100 * r['gpu_ms'] / r['wall_ms']:.0f}% busy), "
             f"{r['kernels_per_step']:.0f} kernels/step"]
    for k, v in r['stages'].items():
        lines.append(f"  stage {k:22s} host {v['host_ms']:8.1f} ms "
                     f"x{v['calls']}")
    if 'memory_mb' in r:
        lines.append('  memory MB: ' + ', '.join(
            f'{k} {v:.0f}' for k, v in r['memory_mb'].items()))
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: see the module docstring; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='profile')
    parser.add_argument('--which', nargs='*', default=['ours', 'builtin'])
    parser.add_argument('--mode', nargs='*', default=['train'],
                        choices=['train', 'infer'])
    parser.add_argument('--batch', nargs='*', type=int, default=[2])
    parser.add_argument('--size', nargs=2, type=int, default=None)
    parser.add_argument('--amp', nargs='*', default=['fp32'],
                        choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--smoke', action='store_true', help='tiny CPU run')
    parser.add_argument('--device', default=None)
    parser.add_argument('--optim', default='plain', choices=['plain', 'config'],
                        help='as in m2f_plugin.tools.benchmark')
    args = parser.parse_args(argv)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    size = tuple(args.size or ((64, 64) if args.smoke else (512, 512)))
    os.makedirs(args.out, exist_ok=True)
    summary = []
    for mode in args.mode:
        for which in args.which:
            for b in args.batch:
                for amp in args.amp:
                    tag = f'{which}_{mode}_b{b}_{amp}'
                    r = profile_one(which, mode, b, size,
                                    None if amp == 'fp32' else amp, device,
                                    args.steps, args.warmup, args.smoke,
                                    args.optim)
                    text = _report(r)
                    print(text, flush=True)
                    with open(osp.join(args.out, f'{tag}.txt'), 'w') as f:
                        f.write(text + '\n\nby GPU time\n' + r['table_gpu'] +
                                '\n\nby host self time\n' + r['table_cpu'])
                    summary.append({k: v for k, v in r.items()
                                    if not k.startswith('table')})
                    if device.startswith('cuda'):
                        torch.cuda.empty_cache()
    with open(osp.join(args.out, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
