"""Peak memory of the eager part of a graphed training step on the CPU: the
matcher, the losses and their backward into the decoders' outputs.

Under ``cuda_graph_train`` these are the only activations outside the
graphs' pool; their ops are the same on CPU and GPU (no deformable attention
in them), so the CPU allocator's trace gives their size. The decoders run
once without gradients; their outputs become leaves; the profiler's memory
timeline of one eager part is replayed to find the peak of live tensors
created in it (above its inputs) and the largest of them.

    python scripts/cpu_loss_memory.py --batch 2     # 512x512, R50 config
"""
from __future__ import annotations

import argparse
import collections

import torch
from cpu_memory_peak import created_tensors_peak  # scripts/, beside this

from m2f_plugin.models.layers.mask_logits import MaskLogitSets
from m2f_plugin.tools.benchmark import build, make_batch


def main() -> None:
    """Print the peak and the largest live tensors at the peak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build('ours', 150, False).train()
    images, samples = make_batch(args.batch, (args.size, args.size), 150,
                                 'cpu')
    head = model.decode_head
    with torch.no_grad():
        feats = head._transform_inputs(model.backbone(images))
        mask_features, memories = head.pixel_decoder(feats)
        cls, sets = head.transformer_decoder(memories, mask_features,
                                             lazy_masks=True)
    cls = [c.detach().requires_grad_() for c in cls]
    embeds = [e.detach().requires_grad_() for e in sets.embeds]
    features = sets.features.detach().requires_grad_()
    leaves = cls + embeds + [features]

    def eager_part() -> None:
        losses = head._loss_of(cls, MaskLogitSets(embeds, features), samples)
        sum(v for k, v in losses.items() if 'loss' in k).backward()

    eager_part()  # warm-up
    for t in leaves:
        t.grad = None
    peak, at_peak = created_tensors_peak(eager_part)
    outputs = sum(t.numel() * t.element_size() for t in leaves)
    print(f'batch {args.batch}, {args.size}x{args.size}: eager part peaks at '
          f'{peak / 2**20:.1f} MB above its inputs (the decoders\' outputs: '
          f'{outputs / 2**20:.1f} MB)')
    count = collections.Counter(at_peak.values())
    for size, n in sorted(count.items(), key=lambda kv: -kv[0] * kv[1])[:8]:
        print(f'  {n:3d} x {size / 2**20:8.2f} MB')


if __name__ == '__main__':
    main()
