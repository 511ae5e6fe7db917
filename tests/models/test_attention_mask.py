"""Attention masks from level-size logits equal those from full-size logits.

Bilinear resizing and the mask product commute, so the decoder makes each
layer's mask from ``embed @ resize(features)`` instead of resizing the
(B, Q, H, W) logits. Only rounding differs: pixels whose logit is within
rounding of 0 may flip.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from m2f_plugin.models.transformer_decoder import (
    attend_mask_from_embeddings,
    features_at,
)
from tests.helpers import feats, tiny_head


def attend_mask_from_logits(mask_logits: torch.Tensor,
                            size: Tuple[int, int]) -> torch.Tensor:
    """The paper's construction (reference): resize the previous set's
    full-size logits to the level, attend where sigmoid >= 0.5, and
    everywhere for a query whose mask is empty there."""
    resized = F.interpolate(mask_logits, size, mode='bilinear',
                            align_corners=False).flatten(2)
    attend = resized.sigmoid() >= 0.5
    return attend | ~attend.any(-1, keepdim=True)


def test_level_logits_commute_with_resizing():
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 9, 16, generator=g)
    features = torch.randn(2, 16, 40, 56, generator=g)
    full = torch.einsum('bqc,bchw->bqhw', embed, features)
    for size in ((5, 7), (10, 14), (20, 28), (40, 56), (13, 9)):
        want = attend_mask_from_logits(full, size)
        got = attend_mask_from_embeddings(embed, features_at(features, size))
        assert got.shape == want.shape == (2, 9, size[0] * size[1])
        level = torch.nn.functional.interpolate(
            full, size, mode='bilinear', align_corners=False).flatten(2)
        clear = level.abs() > 1e-4  # away from the threshold: exact
        assert torch.equal(got[clear], want[clear])
        assert (got != want).float().mean() < 1e-3


def test_empty_masks_attend_everywhere():
    embed = torch.zeros(1, 2, 4)
    embed[0, 1] = -1.0  # query 1: every logit negative
    features = torch.ones(1, 4, 8, 8)
    attend = attend_mask_from_embeddings(embed, features_at(features, (4, 4)))
    assert attend.all()  # query 0: logit 0 -> sigmoid 0.5 -> attends


def test_decoder_masks_are_the_previous_sets_masks_at_level_size():
    """Every layer's attention mask equals the one made from the previous
    set's full logits (the reference construction), up to near-ties."""
    head = tiny_head(transformer_decoder=dict(
        type='M2FMaskedTransformerDecoder', num_layers=6, num_heads=4,
        ffn_dims=64)).eval()
    seen = []
    for layer in head.transformer_decoder.layers:
        layer.register_forward_pre_hook(
            lambda m, args: seen.append(args[4].clone()))
    with torch.no_grad():
        preds = head.prediction_sets(feats(2, 128, 96))
    sizes = [m.shape[-2:] for m in
             head.pixel_decoder(head._transform_inputs(feats(2, 128, 96)))[1]]
    assert len(seen) == 6 and preds.num_sets == 7
    for i, attend in enumerate(seen):
        want = attend_mask_from_logits(preds.mask_logits(i),
                                       tuple(sizes[i % 3]))
        assert (attend != want).float().mean() < 1e-3, i
