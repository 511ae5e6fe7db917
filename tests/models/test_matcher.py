"""The matcher: costs as the paper defines them, optimal assignments."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from m2f_plugin.models.matcher import (
    M2FHungarianMatcher,
    class_cost,
    dice_cost,
    sigmoid_bce_cost,
)
from m2f_plugin.structures import (
    Predictions,
    instances_to_masks,
    panoptic_to_masks,
    sem_seg_to_masks,
)
from tests.helpers import fixed_points, make_label_maps


def _predictions(cls, masks) -> Predictions:
    """Predictions whose set s has mask logits ``masks[s]`` exactly: the
    features are the pixels one-hot, the embeddings the logits."""
    b, q, h, w = masks[0].shape
    feats = torch.eye(h * w, dtype=masks[0].dtype).view(1, h * w, h, w).expand(
        b, -1, -1, -1)
    return Predictions(list(cls), [m.flatten(2) for m in masks],
                       feats.contiguous())


def _reference_costs(cls, masks, gt_masks, labels, points, weights):
    """(B, Q, G) costs written out per image, query and target: the
    weighted sum of -p(class), mean BCE and Dice at the shared points, the
    targets sampled from their dense (B, G, H, W) masks."""
    w_cls, w_mask, w_dice = weights
    b, q = cls.shape[:2]
    g = labels.shape[1]
    out = torch.zeros(b, q, g)
    grid = (2 * points - 1)[:, :, None, :]  # (B, P, 1, 2)
    for i in range(b):
        pred = F.grid_sample(masks[i:i + 1].float(), grid[i:i + 1],
                             align_corners=False)[0, :, :, 0]  # (Q, P)
        for j in range(g):
            if labels[i, j] < 0:
                continue
            mask = gt_masks[i, j].float()[None, None]
            tgt = F.grid_sample(mask, grid[i:i + 1],
                                align_corners=False)[0, 0, :, 0]  # (P,)
            for k in range(q):
                x = pred[k]
                bce = F.binary_cross_entropy_with_logits(x, tgt)
                p = x.sigmoid()
                dice = 1 - (2 * (p * tgt).sum() + 1) / (p.sum() + tgt.sum() + 1)
                prob = cls[i, k].float().softmax(-1)[labels[i, j]]
                out[i, k, j] = -w_cls * prob + w_mask * bce + w_dice * dice
    return out


def _semantic_targets():
    return sem_seg_to_masks(make_label_maps(2, 12, 12, num_classes=4, seed=3),
                            4, 255)


def _panoptic_targets():
    """Image 0: two things and stuff; image 1: only stuff (classes 2, 3)."""
    sem = make_label_maps(2, 12, 12, num_classes=4, seed=3)
    things = torch.zeros(2, 12, 12, dtype=torch.bool)
    things[0, :5, :6] = things[1, 6:, 3:] = True
    sem[0][things[0] | things[1]] = 255
    return panoptic_to_masks([torch.tensor([0, 1]), torch.zeros(0).long()],
                             [things, things[:0]], sem, 2, 2)


def _instance_targets():
    """Image 0: three overlapping instances; image 1: one."""
    masks = torch.zeros(3, 12, 12, dtype=torch.bool)
    masks[0, 2:9, 2:9] = masks[1, 5:12, 4:11] = masks[2, :, 6:] = True
    return instances_to_masks([torch.tensor([0, 3, 3]), torch.tensor([2])],
                              [masks, masks[2:]], 4)


TARGETS = dict(semantic=_semantic_targets, panoptic=_panoptic_targets,
               instance=_instance_targets)


@pytest.mark.parametrize('weights', [(2.0, 5.0, 5.0), (2.0, 1.0, 7.0)])
@pytest.mark.parametrize('fmt', TARGETS)
def test_costs_equal_the_written_out_definition(fmt, weights):
    """Each weight multiplies its own cost: unequal weights tell the class,
    BCE and Dice terms apart."""
    torch.manual_seed(0)
    w_cls, w_mask, w_dice = weights
    matcher = M2FHungarianMatcher(cost_class=w_cls, cost_mask=w_mask,
                                  cost_dice=w_dice, num_points=64)
    matcher.draw_points = fixed_points
    targets = TARGETS[fmt]()
    cls = [torch.randn(2, 5, 5) for _ in range(2)]
    masks = [torch.randn(2, 5, 12, 12) * 3 for _ in range(2)]
    costs = matcher.costs(_predictions(cls, masks), targets)
    assert costs.shape == (2, 2, 5, targets.labels.shape[1])
    points = fixed_points(2, 64)
    for s in range(2):
        want = _reference_costs(cls[s], masks[s], targets.masks,
                                targets.labels, points, weights)
        for b, n in enumerate(targets.num_gts):
            torch.testing.assert_close(costs[s, b, :, :n], want[b, :, :n],
                                       atol=1e-4, rtol=1e-4)


def test_finds_a_planted_assignment():
    """Query ``perm[g]`` predicts target g's class and mask almost exactly;
    every other query predicts nothing useful. The matcher must find
    exactly that assignment, in every set."""
    torch.manual_seed(1)
    matcher = M2FHungarianMatcher(num_points=128)
    label_maps = make_label_maps(2, 16, 16, num_classes=5, seed=4)
    targets = sem_seg_to_masks(label_maps, 5, 255)
    num_queries = 8
    planted = []
    cls = torch.zeros(2, num_queries, 6)
    masks = torch.full((2, num_queries, 16, 16), -4.0)
    for b, n in enumerate(targets.num_gts):
        perm = torch.randperm(num_queries)[:n]
        planted.append(perm)
        for g in range(n):
            label = targets.labels[b, g]
            cls[b, perm[g], label] = 10.0
            masks[b, perm[g]] = torch.where(label_maps[b] == label, 20.0,
                                            -20.0)
    preds = _predictions([cls, cls.clone()], [masks, masks.clone()])
    matches = matcher(preds, targets)
    assert len(matches) == 2
    for b_idx, q_idx, g_idx in matches:
        for b, n in enumerate(targets.num_gts):
            sel = b_idx == b
            got = dict(zip(g_idx[sel].tolist(), q_idx[sel].tolist()))
            assert got == {g: planted[b][g].item() for g in range(n)}


def _weight_sensitive_inputs():
    """Two 16 x 16 images with two targets each, and 6 queries per image.
    For every target, one query is confident but spills beyond the target
    (low Dice cost, high BCE cost) and one is exactly right but unsure,
    logits +-1 (the reverse); both predict the target's class equally;
    the other queries are noise. Which of the two wins depends on the BCE
    and Dice weights.

    Returns targets, class logits (B, Q, K + 1), mask logits (B, Q, H, W)
    and per image {target: query} for the spilling and the unsure queries.
    """
    g = torch.Generator().manual_seed(5)
    boxes = [[(0, 8, 0, 6), (9, 16, 8, 16)], [(2, 10, 9, 15), (11, 16, 0, 9)]]
    spills = [[(0, 8, 6, 8), (9, 16, 5, 8)], [(2, 10, 6, 9), (7, 11, 0, 9)]]
    labels = [torch.tensor([1, 3]), torch.tensor([3, 0])]
    gt = torch.zeros(2, 2, 16, 16, dtype=torch.bool)
    cls = torch.randn(2, 6, 5, generator=g)
    masks = torch.randn(2, 6, 16, 16, generator=g) * 2
    spilling, unsure = [], []
    for b in range(2):
        order = torch.randperm(6, generator=g).tolist()
        spilling.append({0: order[0], 1: order[1]})
        unsure.append({0: order[2], 1: order[3]})
        for t, ((y0, y1, x0, x1), (v0, v1, u0, u1)) in enumerate(
                zip(boxes[b], spills[b])):
            gt[b, t, y0:y1, x0:x1] = True
            spill = gt[b, t].clone()
            spill[v0:v1, u0:u1] = True
            q_spill, q_unsure = spilling[b][t], unsure[b][t]
            masks[b, q_spill] = torch.where(spill, 10.0, -10.0)
            masks[b, q_unsure] = torch.where(gt[b, t], 1.0, -1.0)
            row = torch.randn(5, generator=g)
            row[labels[b][t]] += 2.0
            cls[b, q_spill] = row
            cls[b, q_unsure] = row
    targets = instances_to_masks(labels, [gt[0], gt[1]], 4)
    return targets, cls, masks, spilling, unsure


def test_unequal_weights_give_the_assignment_of_independent_costs():
    """Weights class 2, BCE 1, Dice 7: the matcher assigns as SciPy does on
    the costs written out independently (``_reference_costs``); with the
    BCE and Dice weights swapped that assignment differs, so a matcher
    that mixes the two weights up assigns the other queries."""
    weights = (2.0, 1.0, 7.0)
    matcher = M2FHungarianMatcher(*weights, num_points=256)
    matcher.draw_points = fixed_points
    targets, cls, masks, spilling, unsure = _weight_sensitive_inputs()
    assert targets.num_gts == [2, 2]
    (b_idx, q_idx, g_idx), = matcher(_predictions([cls], [masks]), targets)
    points = fixed_points(2, 256)

    def assignment(w, b):
        cost = _reference_costs(cls, masks, targets.masks, targets.labels,
                                points, w)[b, :, :2]
        rows, cols = linear_sum_assignment(cost.numpy())
        return dict(zip(cols.tolist(), rows.tolist()))

    for b in range(2):
        sel = b_idx == b
        got = dict(zip(g_idx[sel].tolist(), q_idx[sel].tolist()))
        assert got == assignment(weights, b) == spilling[b]
        # the premise: the weights decide it
        assert assignment((2.0, 7.0, 1.0), b) == unsure[b]


def _brute_force(cost: torch.Tensor) -> float:
    """Minimum total cost of assigning every column to a distinct row."""
    q, g = cost.shape
    return min(sum(cost[r, c].item() for c, r in enumerate(rows))
               for rows in itertools.permutations(range(q), g))


def test_assignment_is_optimal_for_its_costs():
    torch.manual_seed(0)
    matcher = M2FHungarianMatcher(num_points=256)
    matcher.draw_points = fixed_points
    for trial in range(4):
        labels = make_label_maps(2, 24, 24, num_classes=4, seed=trial)
        targets = sem_seg_to_masks(labels, num_classes=4, ignore_index=255)
        preds = _predictions([torch.randn(2, 6, 5)],
                             [torch.randn(2, 6, 6, 6)])
        costs = matcher.costs(preds, targets)[0]
        (b_idx, q_idx, g_idx), = matcher(preds, targets)
        for b, n in enumerate(targets.num_gts):
            sel = b_idx == b
            assert sorted(g_idx[sel].tolist()) == list(range(n))
            assert len(set(q_idx[sel].tolist())) == n  # one query per target
            found = costs[b, q_idx[sel], g_idx[sel]].sum().item()
            assert abs(found - _brute_force(costs[b, :, :n])) < 1e-5


def test_cost_functions_against_direct_formulas():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 50)
    targets = (torch.rand(2, 4, 50) > 0.5).float()
    bce = sigmoid_bce_cost(logits, targets)
    dice = dice_cost(logits, targets)
    for b, q, g in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        x, t = logits[b, q], targets[b, g]
        ref = F.binary_cross_entropy_with_logits(x, t)
        assert torch.allclose(bce[b, q, g], ref, atol=1e-6)
        p = x.sigmoid()
        ref_dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        assert torch.allclose(dice[b, q, g], ref_dice, atol=1e-6)
    cls = torch.randn(2, 3, 6)
    labels = torch.tensor([[1, 4, -1], [0, 2, 5]])
    cost = class_cost(cls, labels)
    assert torch.allclose(cost[1, 2, 2], -cls[1, 2].softmax(-1)[5])


def test_costs_are_float32_and_finite_from_half_inputs():
    """fp16 logits that would overflow in half precision give finite
    float32 costs (checked before any clamping) and a full matching."""
    matcher = M2FHungarianMatcher(num_points=64)
    labels = make_label_maps(2, 16, 16, num_classes=3)
    targets = sem_seg_to_masks(labels, 3, 255)
    cls = (torch.randn(2, 5, 4) * 100).half()
    masks = (torch.randn(2, 5, 8, 8) * 1000).half()
    preds = _predictions([cls], [masks])
    cost = matcher.costs(preds, targets)
    assert cost.dtype == torch.float32
    assert torch.isfinite(cost).all()
    matches = matcher(preds, targets)
    assert matches[0][0].numel() == sum(targets.num_gts)


def test_no_targets_gives_empty_matches():
    matcher = M2FHungarianMatcher(num_points=16)
    targets = sem_seg_to_masks(torch.full((2, 8, 8), 255), 3, 255)
    preds = _predictions([torch.randn(2, 4, 4)] * 3,
                         [torch.randn(2, 4, 8, 8)] * 3)
    matches = matcher(preds, targets)
    assert len(matches) == 3
    assert all(t.numel() == 0 for m in matches for t in m)


@pytest.mark.perf
@pytest.mark.parametrize('fmt', TARGETS)
def test_one_host_transfer_for_all_sets(monkeypatch, fmt):
    """Budget: the costs of all prediction sets and images cross to the
    host in one ``.cpu()``, whatever the targets' format."""
    matcher = M2FHungarianMatcher(num_points=32)
    targets = TARGETS[fmt]()
    batch = targets.labels.shape[0]
    calls = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return real_cpu(self, *args, **kwargs)

    preds = _predictions([torch.randn(batch, 5, 5) for _ in range(4)],
                         [torch.randn(batch, 5, 8, 8) for _ in range(4)])
    monkeypatch.setattr(torch.Tensor, 'cpu', counting_cpu)
    matches = matcher(preds, targets)
    assert len(calls) == 1 and calls[0][:2] == (4, batch)
    assert all(m[0].numel() == targets.total for m in matches)
