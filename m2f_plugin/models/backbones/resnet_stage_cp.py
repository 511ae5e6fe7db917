"""mmseg's ResNet with activation checkpointing for chosen stages only.

mmseg's ``ResNet(with_cp=True)`` recomputes every block. The early stages hold
most of the activations for the least compute: at 512x512 the stride-4 stage
(``layer1``) of ResNet-50 saves ~160 MB per image, a third of the backbone's,
and costs ~1/6 of its forward FLOPs to recompute. ``cp_stages=(0,)``
checkpoints just that stage.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from mmseg.models.backbones import ResNet
from mmseg.registry import MODELS
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ['M2FResNet']


@MODELS.register_module()
class M2FResNet(ResNet):
    """``ResNet`` whose blocks in ``cp_stages`` recompute in the backward pass.

    Everything else is mmseg's ``ResNet``; the state-dict keys are the same,
    so its checkpoints load unchanged. Each chosen block runs under
    ``torch.utils.checkpoint`` (non-reentrant, without saving the RNG state:
    a ResNet block draws no random numbers, and reading the CUDA RNG state is
    a host call that CUDA-graph capture refuses). The recomputation re-runs
    the blocks' BatchNorm forward: in training mode their running statistics
    are updated twice per step, as with mmseg's ``ResNet(with_cp=True)``.
    ``plugins`` that draw random numbers (dropout) must not sit in a
    checkpointed stage: their recomputation would draw new ones.

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

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> the maps of ``out_indices``, as ``ResNet``."""
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            res_layer = getattr(self, layer_name)
            # per block, as mmseg's with_cp, but in training mode rather than
            # on x.requires_grad: a frozen stem must not switch a stage off
            if i in self.cp_stages and self.training:
                for block in res_layer:
                    x = checkpoint(block, x, use_reentrant=False,
                                   preserve_rng_state=False)
            else:
                x = res_layer(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
