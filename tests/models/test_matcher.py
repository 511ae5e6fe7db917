"""The matcher finds the optimal assignment, in float32, with one transfer."""
from __future__ import annotations

import itertools

import torch

from m2f_plugin.models.matcher import (
    M2FHungarianMatcher,
    class_cost,
    dice_cost,
    sigmoid_bce_cost,
)
from m2f_plugin.structures import sem_seg_to_masks
from tests.conftest import make_label_maps


def _brute_force(cost: torch.Tensor) -> float:
    """Minimum total cost of assigning every column to a distinct row."""
    q, g = cost.shape
    return min(sum(cost[r, c].item() for c, r in enumerate(rows))
               for rows in itertools.permutations(range(q), g))


def test_matches_brute_force_optimum():
    torch.manual_seed(0)
    matcher = M2FHungarianMatcher(num_points=256)
    for trial in range(5):
        labels = make_label_maps(2, 24, 24, num_classes=4, seed=trial)
        targets = sem_seg_to_masks(labels, num_classes=4, ignore_index=255)
        cls = torch.randn(2, 6, 5)
        masks = torch.randn(2, 6, 6, 6)
        torch.manual_seed(trial)
        costs = matcher.cost_matrix(cls, masks, targets)
        torch.manual_seed(trial)
        (b_idx, q_idx, g_idx), = matcher([cls], [masks], targets)
        for b, n in enumerate(targets.num_gts):
            sel = b_idx == b
            assert sel.sum().item() == n
            assert sorted(g_idx[sel].tolist()) == list(range(n))
            assert len(set(q_idx[sel].tolist())) == n  # one query per target
            found = costs[b, q_idx[sel], g_idx[sel]].sum().item()
            assert abs(found - _brute_force(costs[b, :, :n])) < 1e-5


def test_costs_against_direct_formulas():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 50)
    targets = (torch.rand(2, 4, 50) > 0.5).float()
    bce = sigmoid_bce_cost(logits, targets)
    dice = dice_cost(logits, targets)
    for b, q, g in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        x, t = logits[b, q], targets[b, g]
        ref = torch.nn.functional.binary_cross_entropy_with_logits(x, t)
        assert torch.allclose(bce[b, q, g], ref, atol=1e-6)
        p = x.sigmoid()
        ref_dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        assert torch.allclose(dice[b, q, g], ref_dice, atol=1e-6)
    cls = torch.randn(2, 3, 6)
    labels = torch.tensor([[1, 4, -1], [0, 2, 5]])
    cost = class_cost(cls, labels)
    assert torch.allclose(cost[1, 2, 2], -cls[1, 2].softmax(-1)[5])


def test_costs_are_float32_and_finite_from_half_inputs():
    """fp16 logits that would overflow in half precision still match."""
    matcher = M2FHungarianMatcher(num_points=64)
    labels = make_label_maps(2, 16, 16, num_classes=3)
    targets = sem_seg_to_masks(labels, 3, 255)
    cls = (torch.randn(2, 5, 4) * 100).half()
    masks = (torch.randn(2, 5, 8, 8) * 1000).half()
    cost = matcher.cost_matrix(cls, masks, targets)
    assert cost.dtype == torch.float32
    assert torch.isfinite(cost).all()
    matches = matcher([cls], [masks], targets)
    assert matches[0][0].numel() == sum(targets.num_gts)


def test_one_host_transfer_for_all_sets(monkeypatch):
    """Costs for all prediction sets and images cross to the host once."""
    matcher = M2FHungarianMatcher(num_points=32)
    targets = sem_seg_to_masks(make_label_maps(3, 16, 16, 4), 4, 255)
    calls = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'cpu', counting_cpu)
    cls = [torch.randn(3, 5, 5) for _ in range(4)]
    masks = [torch.randn(3, 5, 8, 8) for _ in range(4)]
    matcher(cls, masks, targets)
    assert len(calls) == 1 and calls[0][:2] == (4, 3)
