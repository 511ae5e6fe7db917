"""Numeric primitives of the model, the bottom layer of the package.

Tensors in, tensors out: nothing here imports the rest of ``m2f_plugin``,
holds a registry or builds a module from a config (only torch, and mmcv for
the deformable-attention op; ``projects_ops``' Triton kernels are imported at
first use). ``structures`` and ``models`` build on them; see
``tests/test_layering.py`` for the rules.

* ``point_sample``: bilinear sampling of float maps at points, uniform and
  uncertainty-driven point choice.
* ``mask_sample``: the same sampling of binary masks kept as id maps or bool
  planes (targets), bit-identical to it.
* ``mask_products``: mask logits (the einsum), split-K products.
* ``mask_losses``: the sigmoid-BCE and Dice forms of matcher and losses.
* ``msda``: deformable-attention kernels as custom ops, ``MSDA_KERNELS``.
"""
from .mask_losses import (
    dice_from_sums,
    dice_loss,
    sigmoid_bce,
    sigmoid_bce_from_product,
)
from .mask_products import mask_logits, mask_logits_splitk_backward, splitk_bmm
from .mask_sample import (
    MASK_BORDER,
    pad_masks,
    sample_class_indicator,
    sample_masks,
)
from .msda import MSDA_KERNELS, msda_mmcv, msda_triton
from .point_sample import point_sample, uncertain_point_coords, uniform_points

__all__ = ['MASK_BORDER', 'MSDA_KERNELS', 'dice_from_sums', 'dice_loss',
           'mask_logits', 'mask_logits_splitk_backward', 'msda_mmcv',
           'msda_triton', 'pad_masks', 'point_sample', 'sample_class_indicator',
           'sample_masks', 'sigmoid_bce', 'sigmoid_bce_from_product',
           'splitk_bmm', 'uncertain_point_coords', 'uniform_points']
