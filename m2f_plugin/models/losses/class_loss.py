"""Classification loss over K classes + "no object", class-weighted."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor, nn

__all__ = ['M2FClassLoss']


@MODELS.register_module()
class M2FClassLoss(nn.Module):
    """Weighted-mean cross-entropy; the last class is "no object".

    ``sum_i w[y_i] * CE_i / sum_i w[y_i]``, computed in float32.

    Args:
        num_classes: K; logits have K + 1 entries.
        no_object_weight: Weight of the "no object" class.
        class_weight: Optional full weight list of length K + 1 (overrides
            ``no_object_weight``).
        loss_weight: Multiplier.
    """

    def __init__(self, num_classes: int, no_object_weight: float = 0.1,
                 class_weight: Optional[Sequence[float]] = None,
                 loss_weight: float = 2.0) -> None:
        super().__init__()
        if class_weight is None:
            class_weight = [1.0] * num_classes + [no_object_weight]
        if len(class_weight) != num_classes + 1:
            raise ValueError(
                f'loss_cls.class_weight has {len(class_weight)} entries but '
                f'must have num_classes + 1 = {num_classes + 1} (one per class '
                f'plus "no object" last); e.g. class_weight=[1.0] * '
                f'{num_classes} + [0.1]')
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.register_buffer('class_weight',
                             torch.tensor(class_weight, dtype=torch.float32),
                             persistent=False)

    def forward(self, cls_logits: Tensor, targets: Tensor) -> Tensor:
        """Weighted mean over (B, Q), for each leading index.

        Args:
            cls_logits: ([S,] B, Q, K + 1).
            targets: ([S,] B, Q) in [0, K].

        Returns:
            ``()`` or ``(S,)``: one loss per prediction set.
        """
        ce = F.cross_entropy(cls_logits.float().flatten(0, -2),
                             targets.flatten(), weight=self.class_weight,
                             reduction='none').view(targets.shape)
        weight = self.class_weight[targets]
        return self.loss_weight * ce.flatten(-2).sum(-1) / weight.flatten(
            -2).sum(-1)
