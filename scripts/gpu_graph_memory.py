"""Where a graphed training step's memory goes (run on the GPU machine).

For each variant: peak allocated, peak reserved, and the size of the CUDA
graphs' private pools (from the allocator's snapshot) after a few steps.
"""
import gc
import os
import sys

import torch

from m2f_plugin.tools.benchmark import build, make_batch, parse_variant


def pools():
    sizes = {}
    for seg in torch.cuda.memory_snapshot():
        pid = tuple(seg.get('segment_pool_id', (0, 0)))
        d = sizes.setdefault(pid, [0, 0])
        d[0] += seg['total_size']
        d[1] += seg['allocated_size']
    return {k: (round(v[0] / 2**20), round(v[1] / 2**20))
            for k, v in sizes.items()}


def main(variants, batches):
    for text in variants:
        name, over = parse_variant(text)
        for b in batches:
            model = build('ours', 150, False, over).cuda().train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            imgs, samples = make_batch(b, (512, 512), 150, 'cuda')
            torch.cuda.reset_peak_memory_stats()
            for step in range(4):
                losses = model.loss(imgs, samples)
                sum(v for k, v in losses.items() if 'loss' in k).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if step == 1:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
            print(f'MEM {name} b{b}: peak_alloc {torch.cuda.max_memory_allocated() / 2**20:.0f} '
                  f'peak_reserved {torch.cuda.max_memory_reserved() / 2**20:.0f} '
                  f'now_alloc {torch.cuda.memory_allocated() / 2**20:.0f} pools(total,alloc) {pools()}',
                  flush=True)
            model.cpu()  # drops the graphs
            del model, opt, losses
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == '__main__':
    main(sys.argv[1:], [int(b) for b in os.environ.get('BATCHES', '2 8').split()])
