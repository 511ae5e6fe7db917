"""What the transformer decoder predicts: class logits and mask factors.

Every prediction set's mask logits are ``einsum('bqc,bchw->bqhw')`` of its
(B, Q, C) mask embeddings and the (B, C, H, W) mask features shared by all
sets. The (B, Q, H, W) product is large (52 MB a set at batch 8, 512x512
input) while its factors are small, so ``Predictions`` keeps the factors and
each consumer multiplies out what it reads: the matcher one set at a time,
the mask losses only the matched queries, inference only the last set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from ..ops.mask_products import mask_logits, mask_logits_splitk_backward

__all__ = ['Match', 'Predictions']

# (batch index, query index, target index), each (M,) long on the device
Match = Tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class Predictions:
    """S prediction sets of one batch (S = decoder layers + 1, last = final).

    Attributes:
        class_logits: S tensors (B, Q, K + 1); the last class is "no object".
        mask_embeds: S tensors (B, Q, C).
        mask_features: (B, C, H, W), stride 4, shared by all sets.
    """

    class_logits: List[Tensor]
    mask_embeds: List[Tensor]
    mask_features: Tensor

    def __post_init__(self) -> None:
        if not self.class_logits or len(self.class_logits) != len(
                self.mask_embeds):
            raise ValueError(
                f'Predictions: {len(self.class_logits)} class sets and '
                f'{len(self.mask_embeds)} mask sets; need one of each per '
                'prediction set, at least one')
        b, c = self.mask_features.shape[:2]
        for e in self.mask_embeds:
            if e.dim() != 3 or e.shape[0] != b or e.shape[2] != c:
                raise ValueError(
                    f'mask embeddings must be (B={b}, Q, C={c}) to match the '
                    f'mask features {tuple(self.mask_features.shape)}, got '
                    f'{tuple(e.shape)}')

    @property
    def num_sets(self) -> int:
        """S."""
        return len(self.class_logits)

    def mask_logits(self, index: int) -> Tensor:
        """Mask logits of set ``index`` (negative counts from the end),
        (B, Q, H, W): one product, with gradients if enabled."""
        return mask_logits(self.mask_embeds[index], self.mask_features)

    def as_lists(self) -> Tuple[List[Tensor], List[Tensor]]:
        """What the toolboxes' built-in heads return: S class logits
        (B, Q, K + 1) and S mask logits (B, Q, H, W), every set multiplied
        out (for ``mode='tensor'`` and code written for the built-ins)."""
        return (list(self.class_logits),
                [self.mask_logits(s) for s in range(self.num_sets)])

    def last(self) -> Tuple[Tensor, Tensor]:
        """The final set: class logits (B, Q, K + 1), mask logits
        (B, Q, H, W)."""
        return self.class_logits[-1], self.mask_logits(-1)

    def matched_mask_logits(self, matches: Sequence[Match],
                            num_targets: int) -> Tensor:
        """Logits of the matched queries, (M, H, W), set by set in match order.

        Row ``m`` is ``mask_logits(s)[b_m, q_m]`` for the ``m``-th match of
        set ``s``. The matched embeddings are scattered into a (B, S * G, C)
        block at slot ``s * G + g`` (every set matches each of an image's
        targets once, so slots never collide) and multiplied out in one
        product: S * G rows per image instead of S * Q.

        Args:
            matches: S ``(batch_idx, query_idx, target_idx)``, each (M_s,).
            num_targets: G, the padded target count (``target_idx < G``).
        """
        if len(matches) != self.num_sets:
            raise ValueError(f'{len(matches)} matches for {self.num_sets} '
                             'prediction sets')
        b, c = self.mask_features.shape[:2]
        slots = self.num_sets * num_targets
        b_idx = torch.cat([m[0] for m in matches])
        slot = torch.cat([m[2] + s * num_targets
                          for s, m in enumerate(matches)])
        chosen = torch.cat([e[m[0], m[1]]
                            for e, m in zip(self.mask_embeds, matches)])
        block = chosen.new_zeros(b, slots, c).index_put((b_idx, slot),
                                                        chosen)  # (B, S*G, C)
        # the losses backpropagate through this product: its embedding
        # gradient is a long reduction over pixels (see ops.mask_products)
        logits = mask_logits_splitk_backward(block, self.mask_features)
        return logits[b_idx, slot]
