"""Mixed precision: bf16 steps stay finite; matcher and losses stay float32."""
from __future__ import annotations

import copy

import pytest
import torch

from m2f_plugin.models.losses import set_criterion
from m2f_plugin.models.matcher import hungarian_matcher
from tests.helpers import build_tiny_segmentor, make_label_maps, seg_data_samples


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(2, 3, 64, 64, generator=g)
    return imgs, seg_data_samples(make_label_maps(2, 64, 64, 6, seed=seed))


def _total(losses) -> torch.Tensor:
    return sum(v for k, v in losses.items() if 'loss' in k)


def test_bf16_first_loss_close_to_fp32_and_steps_finite():
    model = build_tiny_segmentor()
    model.train()
    imgs, samples = _batch()
    ref_model = copy.deepcopy(model)
    torch.manual_seed(5)
    fp32 = _total(ref_model.loss(imgs, samples)).item()
    torch.manual_seed(5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bf16 = _total(model.loss(imgs, samples)).item()
    # bf16 keeps ~3 significant digits; matching may flip on near-ties
    assert abs(bf16 - fp32) / fp32 < 0.03, (bf16, fp32)

    # (mmengine's AmpOptimWrapper refuses the CPU; autocast is what it does)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for step in range(3):
        imgs, samples = _batch(step)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = _total(model.loss(imgs, samples))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    for p in model.parameters():
        assert torch.isfinite(p).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_matcher_and_losses_compute_in_float32_under_autocast(
        dtype, monkeypatch):
    model = build_tiny_segmentor()
    model.train()
    seen = {'cost_inputs': [], 'cost_out': [], 'loss_inputs': [],
            'head_out': []}

    real_cost = hungarian_matcher.mask_costs

    def spy_cost(logits, targets):
        out = real_cost(logits, targets)
        seen['cost_out'] += [o.dtype for o in out]
        return out

    real_point_sample = hungarian_matcher.point_sample

    def spy_point_sample(masks, coords):
        seen['cost_inputs'].append(masks.dtype)
        return real_point_sample(masks, coords)

    monkeypatch.setattr(hungarian_matcher, 'mask_costs', spy_cost)
    monkeypatch.setattr(hungarian_matcher, 'point_sample', spy_point_sample)
    head = model.decode_head
    for loss in (head.criterion.loss_cls, head.criterion.loss_mask,
                 head.criterion.loss_dice):
        real = loss.forward

        def spy(*args, _real=real, **kwargs):
            seen['loss_inputs'].extend(
                a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point())
            out = _real(*args, **kwargs)
            seen['loss_inputs'].append(out.dtype)
            return out

        monkeypatch.setattr(loss, 'forward', spy)
    real_criterion = set_criterion.SetCriterion.forward

    def spy_criterion(self, predictions, targets):
        seen['head_out'] += [t.dtype for t in predictions.class_logits +
                             predictions.mask_embeds]
        return real_criterion(self, predictions, targets)

    monkeypatch.setattr(set_criterion.SetCriterion, 'forward', spy_criterion)

    imgs, samples = _batch()
    with torch.autocast('cpu', dtype=dtype):
        losses = model.loss(imgs, samples)
    # the premise: the head really ran in half precision
    assert dtype in seen['head_out']
    assert set(seen['cost_inputs']) == {torch.float32}
    assert set(seen['cost_out']) == {torch.float32}
    assert set(seen['loss_inputs']) == {torch.float32}
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert all(torch.isfinite(v) for v in losses.values())
