"""The batched loss-path kernels equal the straightforward implementations.

``sample_class_indicator`` (4 corners at once, budgeted chunks) is compared
bit for bit with a loop over corners; ``mask_costs`` (one product for BCE
and Dice) with the three-einsum formulas; the matcher (all sets' targets
sampled at once) with costs computed set by set.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from m2f_plugin.models.matcher import M2FHungarianMatcher
from m2f_plugin.models.matcher.match_costs import (
    class_cost,
    dice_cost,
    mask_costs,
    sigmoid_bce_cost,
)
from m2f_plugin.ops.mask_sample import sample_class_indicator
from m2f_plugin.ops.point_sample import point_sample, uncertain_point_coords
from m2f_plugin.structures import Predictions, sem_seg_to_masks
from tests.helpers import fixed_points, make_label_maps


def _loop_indicator(sem_seg, img_idx, classes, coords, chunk=64):
    """Reference ``sample_class_indicator``: a Python loop over corners."""
    if coords.shape[0] > chunk:
        return torch.cat([
            _loop_indicator(sem_seg, i, c, xy, chunk)
            for i, c, xy in zip(img_idx.split(chunk), classes.split(chunk),
                                coords.split(chunk))
        ])
    _, h, w = sem_seg.shape
    coords = coords.float()
    x = coords[..., 0] * w - 0.5
    y = coords[..., 1] * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    flat = sem_seg.flatten(1)
    rows = img_idx[:, None]
    cls = classes[:, None]
    out = torch.zeros_like(x)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        label = flat[rows, yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)]
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        out = out + weight * ((label == cls) & inside)
    return out


def _loop_costs(logits, targets, eps=1.0):
    """The previous BCE and Dice costs: three einsums."""
    x, t = logits.float(), targets.float()
    pos, neg = F.softplus(-x), F.softplus(x)
    bce = (torch.einsum('bqp,bgp->bqg', pos, t) +
           torch.einsum('bqp,bgp->bqg', neg, 1 - t)) / x.shape[-1]
    p = x.sigmoid()
    numerator = 2 * torch.einsum('bqp,bgp->bqg', p, t)
    denominator = p.sum(-1)[:, :, None] + t.sum(-1)[:, None, :]
    return bce, 1 - (numerator + eps) / (denominator + eps)


def _random_case(seed, n=150, p=97, h=13, w=17, batch=3):
    g = torch.Generator().manual_seed(seed)
    sem_seg = torch.randint(0, 5, (batch, h, w), generator=g)
    sem_seg[sem_seg == 4] = 255  # ignored pixels
    img_idx = torch.randint(0, batch, (n, ), generator=g)
    classes = torch.randint(-1, 6, (n, ), generator=g)  # -1: padding
    coords = torch.rand(n, p, 2, generator=g) * 1.3 - 0.15  # some outside
    # exactly on pixel centres, borders and half a pixel beyond them
    special = torch.tensor([0.0, 1.0, 0.5 / w, 1 - 0.5 / w, -0.5 / w,
                            1 + 0.5 / w, 0.5, -1.0, 2.0])
    k = special.numel()
    coords[:, :k, 0] = special
    coords[:, k:2 * k, 1] = special
    coords[:, 2 * k:3 * k] = special[:, None]
    return sem_seg, img_idx, classes, coords


@pytest.mark.parametrize('budget', [2**22, 97 * 4 * 7 + 3, 1])
@pytest.mark.parametrize('seed', [0, 1])
def test_indicator_bit_identical_to_corner_loop(seed, budget):
    sem_seg, img_idx, classes, coords = _random_case(seed)
    ref = _loop_indicator(sem_seg, img_idx, classes, coords)
    out = sample_class_indicator(sem_seg, img_idx, classes, coords, budget)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.equal(out, ref)
    assert ref.max() > 0.5 and (ref == 0).any()  # the case is not trivial


def test_indicator_non_square_and_narrow_label_dtype():
    sem_seg, img_idx, classes, coords = _random_case(2, h=5, w=23)
    ref = _loop_indicator(sem_seg, img_idx, classes, coords)
    out = sample_class_indicator(sem_seg.to(torch.uint8), img_idx,
                                 classes.clamp(min=0), coords)
    assert torch.equal(out, _loop_indicator(sem_seg, img_idx,
                                            classes.clamp(min=0), coords))
    assert not torch.equal(out, ref)  # the -1 rows did change


@pytest.mark.parametrize('budget', [2**22, 97 * 4 * 5])
def test_indicator_shared_points_equals_per_target(budget):
    """(N, G) classes: G targets read at row n's points, as N * G rows."""
    sem_seg, img_idx, _, coords = _random_case(3, n=6)
    grid = torch.randint(-1, 6, (6, 4),
                         generator=torch.Generator().manual_seed(4))
    out = sample_class_indicator(sem_seg, img_idx, grid, coords, budget)
    ref = _loop_indicator(sem_seg, img_idx.repeat_interleave(4),
                          grid.flatten(), coords.repeat_interleave(4, 0))
    assert out.shape == (6, 4, coords.shape[1])
    assert torch.equal(out, ref.view(6, 4, -1))


def test_indicator_empty():
    sem_seg = torch.zeros(1, 4, 4, dtype=torch.long)
    out = sample_class_indicator(sem_seg, torch.zeros(0, dtype=torch.long),
                                 torch.zeros(0, dtype=torch.long),
                                 torch.rand(0, 5, 2))
    assert out.shape == (0, 5)


class _CountOps(TorchDispatchMode):
    """Counts ATen compute ops (~ kernel launches on a GPU; views left out)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in (
                'empty', 'new_empty'):
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_indicator_ops_per_chunk():
    """~18 ops per chunk of any size (was ~90 per 64 targets)."""
    sem_seg, img_idx, classes, coords = _random_case(0, n=64, p=256)
    with _CountOps() as one:
        sample_class_indicator(sem_seg, img_idx, classes, coords)
    with _CountOps() as four:  # 4 chunks of 16 rows
        sample_class_indicator(sem_seg, img_idx, classes, coords,
                               16 * 256 * 4)
    with _CountOps() as old:
        _loop_indicator(sem_seg, img_idx, classes, coords)
    per_chunk = (len(four.ops) - len(one.ops)) / 3
    assert per_chunk <= 20, (per_chunk, four.ops)
    assert len(one.ops) <= 30 < 80 <= len(old.ops), (one.ops, old.ops)


def test_mask_costs_match_three_products():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 300) * 4
    targets = (torch.rand(2, 5, 300) > 0.6).float()
    targets[:, :, :10] = 0.5  # soft targets at border points
    bce, dice = mask_costs(logits, targets)
    ref_bce, ref_dice = _loop_costs(logits, targets)
    assert bce.dtype == dice.dtype == torch.float32
    assert (bce - ref_bce).abs().max() < 2e-5
    assert (dice - ref_dice).abs().max() < 1e-6
    assert torch.allclose(sigmoid_bce_cost(logits, targets), bce, atol=1e-6)
    assert torch.allclose(dice_cost(logits, targets), dice, atol=1e-6)


def test_mask_costs_float32_from_half_under_autocast():
    logits = (torch.randn(2, 3, 64) * 1000).half()
    targets = (torch.rand(2, 4, 64) > 0.5).half()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bce, dice = mask_costs(logits, targets)
    ref_bce, ref_dice = _loop_costs(logits, targets)
    assert bce.dtype == dice.dtype == torch.float32
    assert torch.isfinite(bce).all() and torch.isfinite(dice).all()
    # |x| ~ 1000: the single product cancels x t against softplus(x)
    assert ((bce - ref_bce).abs() / ref_bce.abs().clamp(min=1)).max() < 1e-5
    assert (dice - ref_dice).abs().max() < 1e-6


def _per_set_matcher_costs(matcher, all_cls, all_masks, targets, points):
    """The per-set construction: points, targets and costs set by set."""
    out = []
    for s, (cls_logits, mask_logits) in enumerate(zip(all_cls, all_masks)):
        batch = mask_logits.shape[0]
        coords = points[s * batch:(s + 1) * batch]
        pred = point_sample(mask_logits.float(), coords)
        g = targets.labels.shape[1]
        gt = _loop_indicator(
            targets.sem_seg, torch.arange(batch).repeat_interleave(g),
            targets.labels.flatten(),
            coords.repeat_interleave(g, dim=0)).view(batch, g, -1)
        bce, dice = _loop_costs(pred, gt)
        out.append(matcher.cost_class * class_cost(cls_logits, targets.labels)
                   + matcher.cost_mask * bce + matcher.cost_dice * dice)
    return torch.stack(out)


def _predictions(all_cls, all_masks):
    """Predictions whose sets have exactly these mask logits."""
    b, _, h, w = all_masks[0].shape
    feats = torch.eye(h * w).view(1, h * w, h, w).expand(b, -1, -1, -1)
    return Predictions(list(all_cls), [m.flatten(2) for m in all_masks],
                       feats.contiguous())


def test_batched_matcher_costs_equal_per_set_costs():
    """All sets' costs at once equal the costs set by set, each set on its
    own rows of one draw of points."""
    matcher = M2FHungarianMatcher(num_points=200)
    draws = []

    def recording_draw(n, p, device):
        draws.append(torch.rand(n, p, 2, device=device))
        return draws[-1]

    matcher.draw_points = recording_draw
    targets = sem_seg_to_masks(make_label_maps(2, 24, 20, 6, seed=5), 6, 255)
    torch.manual_seed(0)
    all_cls = [torch.randn(2, 8, 7) for _ in range(3)]
    all_masks = [torch.randn(2, 8, 6, 5) * 3 for _ in range(3)]
    out = matcher.costs(_predictions(all_cls, all_masks), targets)
    assert len(draws) == 1 and draws[0].shape == (6, 200, 2)
    ref = _per_set_matcher_costs(matcher, all_cls, all_masks, targets,
                                 draws[0])
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-5
    assert not torch.equal(out[0], out[1])  # each set its own points


def test_uncertain_points_chunking_is_invisible():
    """With the same points for every mask, the chunk size changes
    nothing."""
    torch.manual_seed(0)
    logits = torch.randn(7, 1, 9, 11)
    ref = uncertain_point_coords(logits, 40, 3.0, 0.75, budget=1,
                                 draw_points=fixed_points)
    out = uncertain_point_coords(logits, 40, 3.0, 0.75,
                                 draw_points=fixed_points)
    assert out.shape == (7, 40, 2)
    assert torch.equal(out, ref)
    # the uncertain part: the 30 candidates with the smallest |logit|
    cand = fixed_points(1, 120)
    score = point_sample(logits[:1], cand)[0, 0].abs()
    chosen = cand[0, score.argsort()[:30]]
    assert torch.equal(out[0, :30].sort(0).values, chosen.sort(0).values)
    assert torch.equal(out[:, 30:], fixed_points(7, 10))


def test_uncertain_points_shapes_and_range():
    coords = uncertain_point_coords(torch.randn(5, 1, 8, 8), 33, 3.0, 0.75,
                                    budget=200)
    assert coords.shape == (5, 33, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    empty = uncertain_point_coords(torch.randn(0, 1, 8, 8), 33, 3.0, 0.75)
    assert empty.shape == (0, 33, 2)
