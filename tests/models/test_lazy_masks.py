"""Training keeps mask logits as embeddings x features (``MaskLogitSets``).

The loss reads the same numbers as from the full (B, Q, H, W) sets, gets the
same gradients, and the forward + backward peak drops by about the sets' size.
"""
from __future__ import annotations

import pytest
import torch

from m2f_plugin.models.layers import MaskLogitSets
from tests.conftest import make_label_maps, seg_data_samples
from tests.models.test_head import feats, tiny_head


def _random_matches(num_sets, num_gts, num_queries, g):
    """Every set matches each image's targets once, to distinct queries."""
    matches = []
    for _ in range(num_sets):
        b, q, t = [], [], []
        for img, n in enumerate(num_gts):
            b += [img] * n
            q += torch.randperm(num_queries, generator=g)[:n].tolist()
            t += torch.randperm(n, generator=g).tolist()
        matches.append(tuple(torch.tensor(x) for x in (b, q, t)))
    return matches


def test_index_and_matched_equal_the_full_products_with_gradients():
    g = torch.Generator().manual_seed(0)
    embeds = [torch.randn(2, 7, 5, generator=g, requires_grad=True)
              for _ in range(3)]
    features = torch.randn(2, 5, 6, 4, generator=g, requires_grad=True)
    sets = MaskLogitSets(embeds, features)
    full = [torch.einsum('bqc,bchw->bqhw', e, features) for e in embeds]
    assert len(sets) == 3 and len(sets[1:]) == 2
    for s in range(3):
        torch.testing.assert_close(sets[s], full[s])

    matches = _random_matches(3, [4, 2], 7, g)
    ref = torch.cat([f[b, q] for f, (b, q, _) in zip(full, matches)])
    out = sets.matched(matches, num_targets=4)
    assert out.shape == (3 * 6, 6, 4)
    torch.testing.assert_close(out, ref)
    w = torch.randn(ref.shape, generator=g)
    ref_grads = torch.autograd.grad((ref * w).sum(), embeds + [features])
    grads = torch.autograd.grad((out * w).sum(), embeds + [features])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_bad_shapes_and_counts_are_refused():
    features = torch.randn(2, 5, 6, 4)
    with pytest.raises(ValueError, match=r'\(B=2, Q, C=5\)'):
        MaskLogitSets([torch.randn(2, 7, 4)], features)
    with pytest.raises(ValueError, match='at least one set'):
        MaskLogitSets([], features)
    sets = MaskLogitSets([torch.randn(2, 7, 5)] * 2, features)
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match='1 matches for 2 sets'):
        sets.matched([(empty, empty, empty)], 1)


def test_decoder_refuses_lazy_with_last_only():
    head = tiny_head()
    with pytest.raises(ValueError, match='exclude each other'):
        head(feats(), last_only=True, lazy_masks=True)


def _loss_and_grads(head, inputs, samples, lazy):
    """The head's loss with lazy or full mask sets, same random points."""
    head.zero_grad()
    torch.manual_seed(3)
    all_cls, all_masks = head(inputs, lazy_masks=lazy)
    assert isinstance(all_masks, MaskLogitSets) == lazy
    targets = head_targets(head, samples)
    losses = head.criterion(all_cls, all_masks, targets)
    sum(losses.values()).backward()
    return ({k: v.detach() for k, v in losses.items()},
            {n: p.grad.clone() for n, p in head.named_parameters()
             if p.grad is not None})


def head_targets(head, samples):
    from m2f_plugin.structures import sem_seg_to_masks
    return sem_seg_to_masks(head._stack_batch_gt(samples), head.num_classes,
                            head.ignore_index)


def test_lazy_loss_and_gradients_equal_the_full_sets():
    head = tiny_head().train()
    inputs = feats()
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    ref_losses, ref_grads = _loss_and_grads(head, inputs, samples, False)
    losses, grads = _loss_and_grads(head, inputs, samples, True)
    assert losses.keys() == ref_losses.keys() and len(losses) == 12
    for k in losses:
        torch.testing.assert_close(losses[k], ref_losses[k], rtol=1e-5,
                                   atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4,
                                   atol=1e-6)


def _peak_bytes(fn) -> int:
    """Peak of live CPU bytes allocated inside ``fn`` (profiler records)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        fn()
    events = sorted((e for e in p.profiler.kineto_results.events()
                     if e.name() == '[memory]'), key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def test_lazy_sets_lower_the_training_peak_by_about_their_size():
    # 100 queries on a 64 x 64 mask map: the 4 sets hold 2*100*4096*4 B each
    head = tiny_head(num_queries=100).train()
    inputs = feats(2, 256, 256)
    samples = seg_data_samples(make_label_maps(2, 256, 256, 5, seed=1))
    targets = head_targets(head, samples)

    def step(lazy):
        def run():
            torch.manual_seed(3)
            all_cls, all_masks = head(inputs, lazy_masks=lazy)
            losses = head.criterion(all_cls, all_masks, targets)
            del all_cls, all_masks
            sum(losses.values()).backward()
        return run

    step(False)()  # gradients allocated once, before either measurement
    full, lazy = _peak_bytes(step(False)), _peak_bytes(step(True))
    one_set = 2 * 100 * 64 * 64 * 4
    # the forward keeps 4 sets and the backward makes a dense gradient each;
    # measured: 8.9 MB lower (2.7 sets), 41.7 -> 33.3 MB
    assert full - lazy > 2 * one_set, (full / 2**20, lazy / 2**20)
