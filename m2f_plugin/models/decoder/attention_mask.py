"""Masked attention: where each query may look, from its previous mask."""
from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ['attend_mask_from_logits']


def attend_mask_from_logits(mask_logits: Tensor,
                            size: Tuple[int, int]) -> Tensor:
    """Positions each query may attend to at the next layer.

    The previous mask prediction is resized to the memory's level; a query may
    attend where ``sigmoid >= 0.5``. A query whose mask is empty there would
    attend nowhere (a NaN softmax), so it attends everywhere instead.

    Args:
        mask_logits: (B, Q, H, W) mask logits.
        size: (H_l, W_l) of the memory level.

    Returns:
        bool (B, Q, H_l * W_l), detached; True = may attend.
    """
    resized = F.interpolate(mask_logits.detach(), size, mode='bilinear',
                            align_corners=False)
    attend = (resized.sigmoid() >= 0.5).flatten(2)  # (B, Q, H_l*W_l)
    empty = ~attend.any(-1, keepdim=True)
    return attend | empty
