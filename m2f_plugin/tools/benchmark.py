"""Side-by-side benchmark: m2f_plugin vs mmseg 1.2.2's built-in Mask2Former.

Both are built from their R50 ADE20K configs (BN instead of SyncBN, random
weights, no downloads), fed the same synthetic ground truth (~15 classes per
crop), and timed in the same process: training step (median/min/max, peak
memory, step-0 losses), inference (fps, peak memory), and the deformable
attention op alone.

    python -m m2f_plugin.tools.benchmark --preset speed --out bench.json
    python -m m2f_plugin.tools.benchmark --smoke --out smoke.json    # CPU

Presets (``--preset``, see ``PRESETS``) are the published comparisons; they
run on any CUDA machine with the stack installed. Variants of ours are
config overrides (``--variant NAME:dotted.key=value;...``); the key
``compile`` compiles ``loss`` and ``inference`` with ``torch.compile`` in
the given mode (``compile='default'`` or ``'reduce-overhead'``).

Timings use ``torch.cuda.synchronize`` around each step; peak memory is
``torch.cuda.max_memory_allocated`` after a reset (GPU only).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

import torch

OURS_CFG = 'configs/mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
BUILTIN_CFG = 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], warmup: int, iters: int,
           device: str) -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out = dict(step_s=statistics.median(times), min_s=min(times),
               max_s=max(times))
    if device.startswith('cuda'):
        out['peak_mb'] = torch.cuda.max_memory_allocated() / 2**20
        # CUDA graphs reuse their pools without the allocator: only the
        # reserved peak sees those buffers
        out['reserved_mb'] = torch.cuda.max_memory_reserved() / 2**20
    return out


def _override(cfg, overrides: Optional[Dict[str, object]]) -> None:
    """Set dotted keys of a model config, e.g.
    ``{'decode_head.pixel_decoder.with_cp': True}``."""
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split('.')
        node = cfg
        for name in parents:
            node = node[name]
        node[last] = value


def parse_variant(text: str) -> Tuple[str, Dict[str, object]]:
    """``NAME:key=value;key=value`` -> (NAME, {key: value}); values are
    Python literals (``True``, ``'triton'``, ``3``)."""
    import ast
    name, sep, rest = text.partition(':')
    if not sep or not name or not rest:
        raise ValueError(f'--variant {text!r}: expected NAME:key=value[;...], '
                         "e.g. cp:decode_head.pixel_decoder.with_cp=True")
    overrides = {}
    for item in filter(None, rest.split(';')):
        key, eq, value = item.partition('=')
        if not eq:
            raise ValueError(f'--variant {text!r}: {item!r} has no "="')
        overrides[key.strip()] = ast.literal_eval(value.strip())
    return name, overrides


def load_config(which: str):
    """The full config of 'ours' (our R50 ADE20K config) or 'builtin'
    (mmseg's own, shipped in its package)."""
    import os.path as osp

    import mmseg
    from mmengine.config import Config
    if which == 'ours':
        from m2f_plugin.tools.demo import REPO
        path = osp.join(REPO, OURS_CFG)
        if not osp.exists(path):  # a wheel install: configs ship in .mim
            path = osp.join(osp.dirname(osp.dirname(__file__)), '.mim',
                            OURS_CFG)
        return Config.fromfile(path)
    return Config.fromfile(osp.join(osp.dirname(mmseg.__file__), '.mim',
                                    'configs', BUILTIN_CFG))


def make_optimizer(model: torch.nn.Module, which: str,
                   optim: str) -> torch.optim.Optimizer:
    """The optimizer a training step uses.

    ``'plain'``: one AdamW group with torch's default implementation (foreach
    on CUDA) on both sides. ``'config'``: what each side's
    own config builds through mmengine, i.e. what ``mim train`` runs: mmseg's
    default constructor (one group per parameter, foreach AdamW) for the
    built-in; ``M2FOptimWrapperConstructor`` (one group per option set) and
    fused AdamW for ours. Build it after the model is on its device."""
    if optim == 'plain':
        return torch.optim.AdamW(model.parameters(), lr=1e-4,
                                 weight_decay=0.05)
    if optim != 'config':
        raise ValueError(f"optim={optim!r}: expected 'plain' or 'config'")
    from mmengine.optim import build_optim_wrapper
    cfg = copy.deepcopy(load_config(which).optim_wrapper)
    return build_optim_wrapper(model, cfg).optimizer


def build(which: str, num_classes: int, small: bool,
          overrides: Optional[Dict[str, object]] = None):
    """Build 'ours' or 'builtin' (an EncoderDecoder), random init.

    ``overrides``: dotted model-config keys to set (see ``_override``)."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import m2f_plugin  # noqa: F401
    register_all_modules(init_default_scope=True)
    if which == 'builtin':
        import mmdet.models  # noqa: F401
    cfg = copy.deepcopy(load_config(which).model)
    cfg.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.backbone.init_cfg = None
    head = cfg.decode_head
    head.num_classes = num_classes
    if which == 'builtin':
        head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    if small:  # CPU smoke: fewer points
        if which == 'ours':
            head.num_points = head.matcher.num_points = 256
        else:
            head.train_cfg.num_points = 256
    overrides = dict(overrides or {})
    compile_mode = overrides.pop('compile', None)
    _override(cfg, overrides)
    model = MODELS.build(cfg)
    model.init_weights()
    if compile_mode is not None:
        # what mmengine's ``compile`` option does to the runner's step,
        # applied to the two entry points timed here
        model.loss = torch.compile(model.loss, mode=compile_mode)
        model.inference = torch.compile(model.inference, mode=compile_mode)
    return model


def make_batch(batch: int, size, num_classes: int, device: str, seed: int = 0):
    """Images and Voronoi label maps with ~15 classes per crop."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    h, w = size
    imgs = torch.randn(batch, 3, h, w, generator=g)
    samples = []
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    for _ in range(batch):
        centres = torch.rand(24, 2, generator=g) * torch.tensor([h, w])
        cls = torch.randperm(num_classes, generator=g)[:15]
        owner = ((yy[..., None] - centres[:, 0])**2 +
                 (xx[..., None] - centres[:, 1])**2).argmin(-1)
        label = cls[owner % 15]
        label[:h // 10] = 255
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                        pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=label[None].to(device))
        samples.append(s)
    return imgs.to(device), samples


def bench_train(model, batch: int, size, num_classes: int, device: str,
                amp: Optional[str], warmup: int, iters: int,
                which: str = 'ours', optim: str = 'plain') -> Dict:
    """Median/min/max step time, peak memory and step-0 losses of
    ``loss`` + backward + grad clipping + optimizer step (see
    ``make_optimizer`` for ``optim``)."""
    model = model.to(device).train()
    opt = make_optimizer(model, which, optim)
    imgs, samples = make_batch(batch, size, num_classes, device)
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler(enabled=amp == 'fp16' and
                                  device.startswith('cuda'))
    first: Dict[str, float] = {}

    def step():
        with torch.autocast(device.split(':')[0], dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            losses = model.loss(imgs, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        if not first:
            first.update({k: float(v.detach()) for k, v in losses.items()})
            first['loss'] = float(loss.detach())
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        scaler.step(opt)
        scaler.update()
        # after the step, as mmengine's OptimWrapper.update_params: the
        # gradients are not alive during the next forward
        opt.zero_grad(set_to_none=True)

    torch.manual_seed(0)
    out = _timed(step, warmup, iters, device)
    out['loss_step0'] = first['loss']
    return out


@torch.no_grad()
def bench_infer(model, batch: int, size, device: str, amp: Optional[str],
                warmup: int, iters: int) -> Dict:
    model = model.to(device).eval()
    h, w = size
    imgs = torch.randn(batch, 3, h, w, device=device)
    metas = [dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w))
             ] * batch
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(amp)

    def step():
        with torch.autocast(device.split(':')[0], dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            seg = model.inference(imgs, metas)
        seg.argmax(1)

    out = _timed(step, warmup, iters, device)
    out['img_per_s'] = batch / out['step_s']
    return out


def bench_msda(batch: int, device: str, dtype: torch.dtype, impls: List[str],
               warmup: int, iters: int, small: bool) -> Dict:
    from m2f_plugin.ops.msda import MSDA_KERNELS
    shapes = [(16, 16), (8, 8), (4, 4)] if small else [(64, 64), (32, 32),
                                                       (16, 16)]
    heads, ch, points = 8, 32, 4
    n = sum(h * w for h, w in shapes)
    spatial = torch.tensor(shapes, device=device)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    g = torch.Generator(device='cpu').manual_seed(0)
    value = torch.randn(batch, n, heads, ch, generator=g).to(device, dtype)
    loc = torch.rand(batch, n, heads, 3, points, 2, generator=g).to(device,
                                                                     dtype)
    attw = torch.rand(batch, n, heads, 3, points, generator=g)
    attw = (attw / attw.sum((-1, -2), keepdim=True)).to(device, dtype)
    res = {}
    for impl in impls:
        leaves = [t.clone().requires_grad_() for t in (value, loc, attw)]

        def fwd():
            return MSDA_KERNELS[impl](leaves[0], spatial, start, leaves[1],
                                      leaves[2], 64)

        def fwdbwd():
            fwd().sum().backward()

        try:
            f = _timed(fwd, warmup, iters, device)
            fb = _timed(fwdbwd, warmup, iters, device)
            res[impl] = dict(fwd_us=f['step_s'] * 1e6,
                             fwdbwd_us=fb['step_s'] * 1e6)
        except Exception as err:  # noqa: BLE001 - report, keep benchmarking
            res[impl] = dict(error=repr(err)[:300])
    # memory floor: read value/loc/weights, write output, once
    elem = torch.finfo(dtype).bits // 8
    bytes_fwd = elem * (value.numel() + loc.numel() + attw.numel() +
                        batch * n * heads * ch)
    res['bytes_fwd'] = bytes_fwd
    return res


_GRAPHED = ("type='M2FEncoderDecoder';decode_head.type='M2FGraphedHead';"
            'decode_head.cuda_graph_train=True;decode_head.cuda_graph=True')
# name -> arguments: the published comparisons, each one command (one
# AdamW group on both sides, as published; add ``--optim config`` for each
# side's own optimizer)
PRESETS: Dict[str, List[str]] = {
    # training step and inference, fp32 and AMP, against the built-in
    'speed': ['--only', 'train', 'infer', '--amp', 'fp32', 'bf16', 'fp16'],
    # memory recipes: activation checkpointing, with and without graphs
    'memory': ['--only', 'train', '--amp', 'fp32', '--variant', "lowmem:backbone.type='M2FResNet';"
               'backbone.cp_stages=(0, 1);decode_head.pixel_decoder.with_cp=True',
               '--variant', 'graphcp:' + _GRAPHED +
               ";backbone.type='M2FResNet';backbone.cp_stages=(0, 1);"
               'decode_head.pixel_decoder.with_cp=True;'
               'decode_head.transformer_decoder.with_cp=True'],
    # hand-written CUDA graphs against torch.compile (default and
    # reduce-overhead, which adds CUDA graphs)
    'graphs': ['--only', 'train', 'infer', '--amp', 'fp32',
               '--variant', 'graph:' + _GRAPHED,
               '--variant', "compile:compile='default'",
               '--variant', "compile_ro:compile='reduce-overhead'"],
    # the deformable-attention op alone: mmcv, Triton, PyTorch reference
    'op': ['--only', 'op', '--msda-impls', 'mmcv', 'triton', 'pytorch'],
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(argv) if argv is not None else None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--preset', choices=sorted(PRESETS))
    known, rest = pre.parse_known_args(argv)
    if known.preset:
        argv = PRESETS[known.preset] + rest
    else:
        argv = rest
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--preset', choices=sorted(PRESETS),
                        help='a published comparison (see PRESETS); further '
                        'arguments add to or override it')
    parser.add_argument('--out', default='benchmark.json')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny CPU run (tests)')
    parser.add_argument('--device', default=None)
    parser.add_argument('--only', nargs='*', default=None,
                        help='subset of: train infer op')
    parser.add_argument('--batches', nargs='*', type=int, default=[2, 8])
    parser.add_argument('--amp', nargs='*', default=['fp32', 'bf16', 'fp16'],
                        choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--infer-amp', nargs='*', default=['fp32'],
                        choices=['fp32', 'bf16', 'fp16'],
                        help='inference precisions (ours only beyond fp32)')
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--msda-impls', nargs='*', default=['mmcv', 'pytorch'])
    parser.add_argument('--ours-triton', action='store_true',
                        help="also time ours with msda_impl='triton'")
    parser.add_argument(
        '--variant', action='append', default=[],
        help="also time ours with config overrides: "
        "NAME:dotted.key=value;dotted.key=value, e.g. "
        "cp:decode_head.pixel_decoder.with_cp=True (repeatable)")
    parser.add_argument('--no-builtin', action='store_true',
                        help="time ours only")
    parser.add_argument(
        '--optim', default='plain', choices=['plain', 'config'],
        help="training's optimizer: 'plain' = one AdamW group on both sides; "
        "'config' = each side's own config (mmseg's one group per parameter; "
        'ours fused AdamW, one group per option set)')
    args = parser.parse_args(argv)
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    small = args.smoke
    num_classes = 150
    size = (64, 64) if small else (512, 512)
    iters, warmup = (2, 1) if small else (args.iters, args.warmup)
    batches = [2] if small else args.batches
    parts = args.only or ['train', 'infer', 'op']
    result: Dict = dict(device=torch.cuda.get_device_name()
                        if device.startswith('cuda') else 'cpu',
                        torch=torch.__version__, size=size,
                        optim=args.optim, results={})
    R = result['results']

    def record(key: str, fn: Callable[[], Dict]) -> None:
        try:
            R[key] = fn()
        except Exception as err:  # noqa: BLE001 - a failure is a result
            R[key] = dict(error=repr(err)[:300])
            traceback.print_exc()
        print(f'{key:40s} {json.dumps(R[key])}', flush=True)
        if device.startswith('cuda'):
            # only the model under test may sit on the GPU: peak memory is
            # max_memory_allocated, which would count the others' weights
            for m in models.values():
                m.to('cpu')
            gc.collect()  # anything cyclic that still holds GPU memory
            torch.cuda.empty_cache()

    from m2f_plugin.converters import convert_mmseg_state_dict
    extra = dict(parse_variant(v) for v in args.variant)
    if args.ours_triton:
        if 'triton' in extra:
            raise ValueError("--ours-triton adds a variant named 'triton'; "
                             'rename yours')
        extra['triton'] = {'decode_head.pixel_decoder.msda_impl': 'triton'}
    variants = ['builtin', 'ours'] + [f'ours_{n}' for n in extra]
    models = {w: build(w.split('_')[0], num_classes, small,
                       extra.get(w[len('ours_'):]))
              for w in variants}
    # same weights on every side: step-0 losses are comparable
    states = {'builtin': copy.deepcopy(models['builtin'].state_dict())}
    states['ours'] = convert_mmseg_state_dict(states['builtin'])[0]
    for name in extra:
        states[f'ours_{name}'] = states['ours']
    if args.no_builtin:
        variants.remove('builtin')
    if 'train' in parts:
        for b in batches:
            for amp in (['fp32'] if small else args.amp):
                for which in variants:
                    m = models[which]
                    m.load_state_dict(states[which])
                    record(f'train_{which}_b{b}_{amp}',
                           lambda m=m, b=b, a=amp, w=which: bench_train(
                               m, b, size, num_classes, device,
                               None if a == 'fp32' else a, warmup, iters,
                               w.split('_')[0], args.optim))
    if 'infer' in parts:
        sizes = [size] if small else [(512, 512), (1024, 2048)]
        for s in sizes:
            for amp in args.infer_amp:
                for which in variants:
                    if amp != 'fp32' and which == 'builtin':
                        continue  # mmcv's op: no bf16, slow fp16
                    models[which].load_state_dict(states[which])
                    record(f'infer_{which}_{s[0]}x{s[1]}_b1_{amp}',
                           lambda w=which, s=s, a=amp: bench_infer(
                               models[w], 1, s, device,
                               None if a == 'fp32' else a, warmup, iters))
    if 'op' in parts:
        for b in ([2] if small else [2, 16]):
            for dt in ([torch.float32] if small else
                       [torch.float32, torch.float16, torch.bfloat16]):
                record(f'msda_b{b}_{str(dt)[6:]}',
                       lambda b=b, dt=dt: bench_msda(
                           b, device, dt, args.msda_impls, warmup,
                           max(iters, 2 if small else 50), small))
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
