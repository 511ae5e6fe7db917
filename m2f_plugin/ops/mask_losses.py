"""The sigmoid-BCE and Dice forms of the mask terms, defined once.

The matcher needs them for every (prediction, target) pair, (B, Q, G), from
products over the points; the losses for the matched pairs only, (..., M).
Both callers evaluate the same formulas from the same reductions:

* Dice: ``1 - (2 p.t + eps) / (|p| + |t| + eps)`` with ``p = sigmoid(x)``
  (``dice_from_sums``; the pairs' sums broadcast, the matches' align).
* sigmoid BCE: ``softplus(-x) t + softplus(x) (1 - t)``, per point
  (``sigmoid_bce``, torch's fused and stable kernel) or, summed over the
  points of every pair, ``sum softplus(x) - x.t`` (``sigmoid_bce_from_product``:
  one product instead of two).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ['dice_from_sums', 'dice_loss', 'sigmoid_bce',
           'sigmoid_bce_from_product']


def dice_from_sums(p_dot_t: Tensor, p_sum: Tensor, t_sum: Tensor,
                   eps: float) -> Tensor:
    """``1 - (2 p.t + eps) / (|p| + |t| + eps)`` from the reductions.

    Args:
        p_dot_t: ``sum_P p t``, e.g. (B, Q, G) or (..., M).
        p_sum: ``sum_P p``, broadcastable to ``p_dot_t`` (e.g. (B, Q, 1)).
        t_sum: ``sum_P t``, broadcastable to ``p_dot_t`` (e.g. (B, 1, G)).
        eps: Smoothing.

    Returns:
        The Dice loss, ``p_dot_t``'s shape.
    """
    numerator = 2 * p_dot_t
    denominator = p_sum + t_sum
    return 1 - (numerator + eps) / (denominator + eps)


def dice_loss(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """Dice of matched pairs: logits, targets (..., P) -> (..., ) float32."""
    p = logits.float().sigmoid()
    t = targets.float()
    return dice_from_sums((p * t).sum(-1), p.sum(-1), t.sum(-1), eps)


def sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-point sigmoid BCE of matched pairs: (..., P) -> (..., P) float32."""
    return F.binary_cross_entropy_with_logits(
        logits.float(), targets.float(), reduction='none')


def sigmoid_bce_from_product(neg_x_dot_t: Tensor, logits: Tensor) -> Tensor:
    """Mean sigmoid BCE over the points of every pair, from ``(-x) @ t^T``.

    ``softplus(-x) t + softplus(x) (1 - t) = softplus(x) - x t``, so the
    mean is ``(sum_p softplus(x) - x @ t^T) / P``.

    Args:
        neg_x_dot_t: (B, Q, G) ``(-x) @ t^T``.
        logits: (B, Q, P) float32 ``x``.

    Returns:
        (B, Q, G).
    """
    neg_sum = F.softplus(logits).sum(-1)  # (B, Q)
    return (neg_x_dot_t + neg_sum[..., None]) / logits.shape[-1]
