"""Batched pairwise match costs between Q predictions and G targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['class_cost', 'sigmoid_bce_cost', 'dice_cost']


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


def sigmoid_bce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE over points for every (prediction, target) pair.

    Args:
        logits: (B, Q, P) mask logits at the sampled points.
        targets: (B, G, P) in {0, 1}.

    Returns:
        (B, Q, G).
    """
    logits, targets = logits.float(), targets.float()
    pos = F.softplus(-logits)  # BCE against 1
    neg = F.softplus(logits)  # BCE against 0
    cost = torch.einsum('bqp,bgp->bqg', pos, targets) + torch.einsum(
        'bqp,bgp->bqg', neg, 1 - targets)
    return cost / logits.shape[-1]


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
    numerator = 2 * torch.einsum('bqp,bgp->bqg', p, t)
    denominator = p.sum(-1)[:, :, None] + t.sum(-1)[:, None, :]
    return 1 - (numerator + eps) / (denominator + eps)
