"""Host cost of one optimizer step (grad clipping + AdamW + zero_grad) for the
parameter groups each config builds, with tiny stand-in tensors.

Every parameter of the R50 model is replaced by an 8-element tensor in the
same group with the same options, so the arithmetic is negligible and what is
left is the per-group and per-tensor work on the host: Python loops, dispatch,
(on a GPU) kernel launches. Run on a CPU:

    python scripts/cpu_optimizer_host.py [--repeats 50]

Prints the median milliseconds per step and the number of aten ops per step
for: mmseg's grouping (one group per parameter) with foreach and with fused
AdamW, and M2FOptimWrapperConstructor's grouping with each. With
``--memory``, the real parameters instead, and the peak of the tensors the
step creates (its temporaries) from the profiler's memory timeline.
"""
from __future__ import annotations

import argparse
import collections
import copy
import statistics
import time

import torch
from cpu_memory_peak import created_tensors_peak  # scripts/, beside this
from mmengine.optim import build_optim_wrapper
from torch.utils._python_dispatch import TorchDispatchMode

from m2f_plugin.tools.benchmark import build, load_config


class _OpCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _stand_ins(groups):
    """Same groups and options, 8-element parameters."""
    return [dict({k: v for k, v in g.items()
                  if k not in ('params', 'foreach', 'fused', 'initial_lr')},
                 params=[torch.nn.Parameter(torch.zeros(8))
                         for _ in g['params']]) for g in groups]


def _measure(groups, repeats: int, **impl):
    opt = torch.optim.AdamW(groups, **impl)
    params = [p for g in opt.param_groups for p in g['params']]
    grads = [torch.ones_like(p) for p in params]

    def step():
        for p, g in zip(params, grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(params, 0.01)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    counter = _OpCount()
    with counter:
        step()
    return statistics.median(times) * 1e3, sum(counter.n.values()), len(
        opt.param_groups)


def _temporaries_mb(groups, **impl) -> float:
    """Peak MB of tensors created by one clip + step (real parameters; the
    gradients and AdamW state exist before it)."""
    opt = torch.optim.AdamW(groups, **impl)
    params = [p for g in opt.param_groups for p in g['params']]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    opt.step()  # creates the state
    def step() -> None:
        torch.nn.utils.clip_grad_norm_(params, 0.01)
        opt.step()

    peak, _ = created_tensors_peak(step)
    return peak / 2**20


def main() -> None:
    """Print the table; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--memory', action='store_true',
                        help="real parameters: the step's temporaries (MB)")
    args = parser.parse_args()
    model = build('ours', 150, False)
    cfg = load_config('ours').optim_wrapper
    mmseg_cfg = copy.deepcopy(cfg)
    mmseg_cfg.pop('constructor')  # mmengine's default: a group per parameter
    groupings = {
        'one group per parameter (mmseg)': build_optim_wrapper(
            model, mmseg_cfg).optimizer.param_groups,
        'M2FOptimWrapperConstructor': build_optim_wrapper(
            model, copy.deepcopy(cfg)).optimizer.param_groups,
    }
    if args.memory:
        print(f'{"grouping":34s} {"AdamW":8s} {"temporaries MB":>14s}')
        for name, groups in groupings.items():
            for impl in ('foreach', 'fused'):
                fresh = [dict(g, params=list(g['params'])) for g in groups]
                for g in fresh:
                    g.pop('initial_lr', None)
                    g.pop('foreach', None)
                    g.pop('fused', None)
                print(f'{name:34s} {impl:8s} '
                      f'{_temporaries_mb(fresh, **{impl: True}):14.1f}')
        return
    print(f'{"grouping":34s} {"AdamW":8s} {"groups":>6s} {"ms/step":>8s} '
          f'{"aten ops":>8s}')
    for name, groups in groupings.items():
        for impl in ('foreach', 'fused'):
            ms, ops, n = _measure(_stand_ins(groups), args.repeats,
                                  **{impl: True})
            print(f'{name:34s} {impl:8s} {n:6d} {ms:8.2f} {ops:8d}')


if __name__ == '__main__':
    main()
