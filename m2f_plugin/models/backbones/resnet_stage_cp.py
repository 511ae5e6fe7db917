"""mmseg's ResNet with activation checkpointing for chosen stages only.

mmseg's ``ResNet(with_cp=True)`` recomputes every block. The early stages hold
most of the activations for the least compute: at 512x512 the stride-4 stage
(``layer1``) of ResNet-50 saves ~160 MB per image, a third of the backbone's,
and costs ~1/6 of its forward FLOPs to recompute. ``cp_stages=(0,)`` checkpoints just that stage.
"""
from __future__ import annotations

from typing import Sequence

from mmseg.models.backbones import ResNet
from mmseg.registry import MODELS

__all__ = ['M2FResNet']


@MODELS.register_module()
class M2FResNet(ResNet):
    """``ResNet`` whose blocks in ``cp_stages`` recompute in the backward pass.

    Everything else is mmseg's ``ResNet``; the state-dict keys are the same,
    so its checkpoints load unchanged. The chosen blocks use mmseg's own
    ``with_cp`` path (``torch.utils.checkpoint``), which re-runs their
    BatchNorm forward: in training mode the running statistics are updated
    twice per step for those blocks, as with ``ResNet(with_cp=True)``.

    Args:
        cp_stages: Indices (0-based) of the stages to checkpoint.
        **kwargs: Passed to ``ResNet`` (``with_cp`` must stay False: it would
            checkpoint every stage).
    """

    def __init__(self, cp_stages: Sequence[int] = (), **kwargs) -> None:
        if kwargs.get('with_cp'):
            raise ValueError('M2FResNet: with_cp=True checkpoints every stage;'
                             ' use cp_stages to choose, or mmseg ResNet')
        super().__init__(**kwargs)
        self.cp_stages = tuple(cp_stages)
        for i in self.cp_stages:
            if not 0 <= i < len(self.res_layers):
                raise ValueError(
                    f'M2FResNet: cp_stages has {i}, but this ResNet has '
                    f'stages 0..{len(self.res_layers) - 1}')
            for block in getattr(self, self.res_layers[i]):
                block.with_cp = True
