"""Batched pairwise match costs between Q predictions and G targets.

The BCE and Dice costs are (B, Q, P) x (B, P, G) products with a long
reduction (P = 12544 points) and a tiny output. Both are computed from one
product per prediction set (``mask_costs``), through ``splitk_bmm`` so that
the reduction is split across the GPU instead of running on a handful of
thread blocks. The formulas are the losses' (``ops.mask_losses``).
Everything is float32: half precision overflows the costs.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ...ops.mask_losses import dice_from_sums, sigmoid_bce_from_product
from ...ops.mask_products import splitk_bmm

__all__ = ['class_cost', 'sigmoid_bce_cost', 'dice_cost', 'mask_costs']


def class_cost(cls_logits: Tensor, labels: Tensor) -> Tensor:
    """``-softmax(cls)[label]``.

    Args:
        cls_logits: (B, Q, K + 1).
        labels: (B, G) long, padding -1.

    Returns:
        (B, Q, G).
    """
    prob = cls_logits.float().softmax(-1)
    index = labels.clamp(min=0)[:, None, :].expand(-1, prob.shape[1], -1)
    return -prob.gather(2, index)


def _product(rows: Tensor, targets: Tensor) -> Tensor:
    """``rows @ targets^T`` in float32, reduction split on CUDA.

    Args:
        rows: (B, M, P) float32.
        targets: (B, G, P) float32.

    Returns:
        (B, M, G).
    """
    # float32 even under autocast: bmm would otherwise run in half precision
    with torch.autocast(rows.device.type, enabled=False):
        return splitk_bmm(rows, targets.transpose(1, 2))


def _pair_dice(p_dot_t: Tensor, p: Tensor, t: Tensor, eps: float) -> Tensor:
    """Dice of every pair: (B, Q, G) from ``p @ t^T``, p (B, Q, P) and
    t (B, G, P)."""
    return dice_from_sums(p_dot_t, p.sum(-1)[:, :, None],
                          t.sum(-1)[:, None, :], eps)


def mask_costs(logits: Tensor, targets: Tensor,
               eps: float = 1.0) -> Tuple[Tensor, Tensor]:
    """Sigmoid BCE and Dice costs together, from ONE (B, 2Q, P) product.

    ``[-x ; sigmoid(x)]`` is stacked along the query axis and multiplied once
    with the targets (instead of three products: two for BCE, one for Dice).

    Args:
        logits: (B, Q, P) mask logits at the sampled points.
        targets: (B, G, P) in [0, 1].
        eps: Dice smoothing.

    Returns:
        ``(bce, dice)``, each (B, Q, G) float32, as ``sigmoid_bce_cost`` and
        ``dice_cost``.
    """
    x, t = logits.float(), targets.float()
    b, q, p = x.shape
    rows = x.new_empty(b, 2 * q, p)
    torch.neg(x, out=rows[:, :q])
    prob = torch.sigmoid(x, out=rows[:, q:])
    prod = _product(rows, t)  # (B, 2Q, G)
    bce = sigmoid_bce_from_product(prod[:, :q], x)
    dice = _pair_dice(prod[:, q:], prob, t, eps)
    return bce, dice


def sigmoid_bce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE over points for every (prediction, target) pair.

    Args:
        logits: (B, Q, P) mask logits at the sampled points.
        targets: (B, G, P) in {0, 1}.

    Returns:
        (B, Q, G).
    """
    x, t = logits.float(), targets.float()
    return sigmoid_bce_from_product(_product(-x, t), x)


def dice_cost(logits: Tensor, targets: Tensor, eps: float = 1.0) -> Tensor:
    """``1 - (2|p t| + eps) / (|p| + |t| + eps)`` for every pair.

    Args:
        logits: (B, Q, P).
        targets: (B, G, P).
        eps: Smoothing.

    Returns:
        (B, Q, G).
    """
    p = logits.float().sigmoid()
    t = targets.float()
    return _pair_dice(_product(p, t), p, t, eps)
