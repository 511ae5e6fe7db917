"""Helpers for the converter tests: tiny random transformers Mask2Formers.

transformers is a test-only dependency; it is imported inside the helpers so
that importing this package never needs it. Nothing is downloaded: models are
built from config objects.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch

# Tiny transformers Mask2Former variants. Sizes: our pixel decoder (like HF's)
# uses GroupNorm(32), so feature_size is a multiple of 32. 'resnet50' also
# exercises feature_size != hidden_dim (decoder input projections) and
# mask_feature_size != feature_size. decoder_layers=5 -> 4 masked-attention
# layers, so the level cycle wraps (3 levels) and 5 prediction sets come out.
_HEAD: Dict[str, Any] = dict(
    feature_size=32, mask_feature_size=32, hidden_dim=32,
    encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=2,
    decoder_layers=5, num_attention_heads=4, num_queries=6,
    id2label={str(i): f'class_{i}' for i in range(5)})

BACKBONES: Dict[str, Dict[str, Any]] = {
    'swin': dict(
        backbone=dict(model_type='swin', embed_dim=16, depths=[2, 2, 2, 2],
                      num_heads=[1, 2, 2, 4], window_size=4,
                      drop_path_rate=0.0),
        head=dict()),
    'resnet50': dict(  # bottleneck [3, 4, 6, 3] = mmseg depth 50, base 8
        backbone=dict(model_type='resnet', embedding_size=16,
                      hidden_sizes=[32, 64, 128, 256], depths=[3, 4, 6, 3],
                      layer_type='bottleneck'),
        head=dict(hidden_dim=64, mask_feature_size=48)),
    'resnet18': dict(  # basic [2, 2, 2, 2] = mmseg depth 18, base 16
        backbone=dict(model_type='resnet', embedding_size=16,
                      hidden_sizes=[16, 32, 64, 128], depths=[2, 2, 2, 2],
                      layer_type='basic'),
        head=dict()),
}
OUT_FEATURES = ['stage1', 'stage2', 'stage3', 'stage4']


def tiny_hf_config(name: str, **overrides: Any):
    """A ``Mask2FormerConfig`` for one of :data:`BACKBONES`."""
    from transformers import Mask2FormerConfig, ResNetConfig, SwinConfig

    spec = copy.deepcopy(BACKBONES[name])
    bb = spec['backbone']
    cls = SwinConfig if bb.pop('model_type') == 'swin' else ResNetConfig
    backbone = cls(out_features=OUT_FEATURES, **bb)
    head = dict(_HEAD, **spec['head'])
    head.update(overrides)
    return Mask2FormerConfig(backbone_config=backbone, **head)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter and BN statistic.

    HF's init leaves many tensors constant (LayerNorm 1/0, zero relative
    position tables, zero offsets, BN mean 0 / var 1), under which a wrong
    permutation or a swapped norm would go unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
        if name.endswith('running_mean'):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith('running_var'):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def tiny_hf_model(name: str, seed: int = 0, **overrides: Any):
    """A randomised, eval-mode ``Mask2FormerForUniversalSegmentation``."""
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(
        tiny_hf_config(name, **overrides))
    return randomize_(model, seed).eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``."""
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def hf_prediction_sets(outputs) -> tuple:
    """All (class, mask) logits sets of an HF output, first to last."""
    aux = outputs.auxiliary_logits or []
    cls = [a['class_queries_logits'] for a in aux]
    masks = [a['masks_queries_logits'] for a in aux]
    return (cls + [outputs.class_queries_logits],
            masks + [outputs.masks_queries_logits])
