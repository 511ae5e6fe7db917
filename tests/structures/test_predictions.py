"""``Predictions`` keeps mask logits as embeddings x features.

Each consumer multiplies out what it reads; the losses read the same numbers
and get the same gradients as from the full (B, Q, H, W) sets, and the
training peak drops by about the sets' size.
"""
from __future__ import annotations

import pytest
import torch

from m2f_plugin.structures import Predictions, sem_seg_to_masks
from tests.helpers import (
    feats,
    fixed_points,
    make_label_maps,
    seg_data_samples,
    tiny_head,
    use_fixed_points,
)


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


def test_mask_logits_and_matched_equal_the_full_products_with_gradients():
    g = torch.Generator().manual_seed(0)
    embeds = [torch.randn(2, 7, 5, generator=g, requires_grad=True)
              for _ in range(3)]
    features = torch.randn(2, 5, 6, 4, generator=g, requires_grad=True)
    cls = [torch.randn(2, 7, 4, generator=g) for _ in range(3)]
    preds = Predictions(cls, embeds, features)
    full = [torch.einsum('bqc,bchw->bqhw', e, features) for e in embeds]
    assert preds.num_sets == 3
    for s in range(3):
        torch.testing.assert_close(preds.mask_logits(s), full[s])
    last_cls, last_masks = preds.last()
    assert last_cls is cls[-1]
    torch.testing.assert_close(last_masks, full[-1])

    matches = _random_matches(3, [4, 2], 7, g)
    ref = torch.cat([f[b, q] for f, (b, q, _) in zip(full, matches)])
    out = preds.matched_mask_logits(matches, num_targets=4)
    assert out.shape == (3 * 6, 6, 4)
    torch.testing.assert_close(out, ref)
    w = torch.randn(ref.shape, generator=g)
    ref_grads = torch.autograd.grad((ref * w).sum(), embeds + [features])
    grads = torch.autograd.grad((out * w).sum(), embeds + [features])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_bad_shapes_and_counts_are_refused():
    features = torch.randn(2, 5, 6, 4)
    cls = [torch.randn(2, 7, 3)]
    with pytest.raises(ValueError, match=r'\(B=2, Q, C=5\)'):
        Predictions(cls, [torch.randn(2, 7, 4)], features)
    with pytest.raises(ValueError, match='at least one'):
        Predictions([], [], features)
    with pytest.raises(ValueError, match='2 class sets and 1 mask sets'):
        Predictions(cls * 2, [torch.randn(2, 7, 5)], features)
    preds = Predictions(cls * 2, [torch.randn(2, 7, 5)] * 2, features)
    empty = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match='1 matches for 2 prediction sets'):
        preds.matched_mask_logits([(empty, empty, empty)], 1)


class FullSetPredictions(Predictions):
    """Reference: the matched masks indexed out of every set's full
    (B, Q, H, W) logits, as mmdet's criterion does."""

    def matched_mask_logits(self, matches, num_targets):
        full = [self.mask_logits(s) for s in range(self.num_sets)]
        return torch.cat([f[b, q] for f, (b, q, _) in zip(full, matches)])


def _loss_and_grads(head, inputs, samples, reference: bool):
    head.zero_grad()
    preds = head.prediction_sets(inputs)
    if reference:
        preds = FullSetPredictions(preds.class_logits, preds.mask_embeds,
                                   preds.mask_features)
    targets = sem_seg_to_masks(head._stack_batch_gt(samples),
                               head.num_classes, head.ignore_index)
    losses = head.losses(preds, targets)
    sum(losses.values()).backward()
    return ({k: v.detach() for k, v in losses.items()},
            {n: p.grad.clone() for n, p in head.named_parameters()
             if p.grad is not None})


def test_losses_and_gradients_equal_those_of_the_full_sets():
    head = tiny_head().train()
    use_fixed_points(head)
    inputs = feats()
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    ref_losses, ref_grads = _loss_and_grads(head, inputs, samples, True)
    losses, grads = _loss_and_grads(head, inputs, samples, False)
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


@pytest.mark.perf
def test_factored_sets_lower_the_training_peak_by_about_their_size():
    """Budget: at least two (B, Q, H, W) sets fewer at the peak than
    indexing the full sets (4 sets of 2 x 100 x 64 x 64 float32)."""
    head = tiny_head(num_queries=100).train()
    head.criterion.draw_points = head.criterion.matcher.draw_points = \
        fixed_points
    inputs = feats(2, 256, 256)
    samples = seg_data_samples(make_label_maps(2, 256, 256, 5, seed=1))
    targets = sem_seg_to_masks(head._stack_batch_gt(samples),
                               head.num_classes, head.ignore_index)

    def step(reference):
        def run():
            preds = head.prediction_sets(inputs)
            if reference:
                preds = FullSetPredictions(preds.class_logits,
                                           preds.mask_embeds,
                                           preds.mask_features)
            losses = head.losses(preds, targets)
            del preds
            sum(losses.values()).backward()
        return run

    step(True)()  # gradients allocated once, before either measurement
    full, factored = _peak_bytes(step(True)), _peak_bytes(step(False))
    one_set = 2 * 100 * 64 * 64 * 4
    assert full - factored > 2 * one_set, (full / 2**20, factored / 2**20)
