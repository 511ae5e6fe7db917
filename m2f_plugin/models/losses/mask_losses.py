"""Point-sampled mask losses: sigmoid BCE and Dice (``ops.mask_losses``, the
matcher's forms), normalised by mask count."""
from __future__ import annotations

from mmseg.registry import MODELS
from torch import Tensor, nn

from ...ops.mask_losses import dice_loss, sigmoid_bce

__all__ = ['M2FPointBCELoss', 'M2FPointDiceLoss']


@MODELS.register_module()
class M2FPointBCELoss(nn.Module):
    """Sigmoid BCE averaged over points, summed over masks / ``num_masks``.

    Args:
        loss_weight: Multiplier.
    """

    def __init__(self, loss_weight: float = 5.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, targets: Tensor,
                num_masks: Tensor) -> Tensor:
        """Per leading index: logits, targets ([S,] M, P) -> () or (S,).

        ``num_masks`` is a scalar tensor (>= 1).
        """
        loss = sigmoid_bce(logits, targets)
        return self.loss_weight * loss.sum((-1, -2)) / (
            num_masks * logits.shape[-1])


@MODELS.register_module()
class M2FPointDiceLoss(nn.Module):
    """Dice ``1 - (2|p t| + eps) / (|p| + |t| + eps)`` summed / ``num_masks``.

    Args:
        eps: Smoothing, 1.0 as in Mask2Former.
        loss_weight: Multiplier.
    """

    def __init__(self, eps: float = 1.0, loss_weight: float = 5.0) -> None:
        super().__init__()
        self.eps = eps
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, targets: Tensor,
                num_masks: Tensor) -> Tensor:
        """Per leading index: logits, targets ([S,] M, P) -> () or (S,).

        ``num_masks`` is a scalar tensor (>= 1).
        """
        dice = dice_loss(logits, targets, self.eps)
        return self.loss_weight * dice.sum(-1) / num_masks
