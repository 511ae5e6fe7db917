"""Map mmdet 3.x built-in Mask2Former detector keys to m2f_plugin's.

mmseg's built-in head subclasses mmdet's ``Mask2FormerHead``, so the head's
keys are the same in both toolboxes and the rules are ``mmseg_keys``'; only
the head's prefix differs (``panoptic_head.`` in mmdet's ``Mask2Former``
detector, ``decode_head.`` in mmseg's ``EncoderDecoder``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Tuple

from torch import Tensor

from .mmseg_keys import (
    ConversionReport,
    convert_mmseg_state_dict,
    is_mmseg_mask2former,
)

__all__ = ['MMDET_HEAD_PREFIX', 'convert_mmdet_state_dict',
           'is_mmdet_mask2former']

MMDET_HEAD_PREFIX = 'panoptic_head.'


def is_mmdet_mask2former(state_dict: Mapping[str, Tensor],
                         head_prefix: str = MMDET_HEAD_PREFIX) -> bool:
    """True if the keys look like mmdet's built-in ``Mask2FormerHead``."""
    return is_mmseg_mask2former(state_dict, head_prefix)


def convert_mmdet_state_dict(state_dict: Mapping[str, Tensor],
                             head_prefix: str = MMDET_HEAD_PREFIX
                             ) -> Tuple['OrderedDict[str, Tensor]',
                                        ConversionReport]:
    """Convert a built-in mmdet ``Mask2Former`` detector state dict to ours
    (a detector whose ``panoptic_head`` is ``M2FDetHead``).

    Args:
        state_dict: The model's state dict (``checkpoint['state_dict']``).
        head_prefix: Prefix of the panoptic head's keys.

    Returns:
        The converted state dict and a report of mapped/kept/unmapped keys
        (backbone and other keys outside the head are kept as they are).

    Raises:
        ValueError: the state dict is not a built-in Mask2Former detector.
    """
    if not is_mmdet_mask2former(state_dict, head_prefix):
        raise ValueError(
            f'not an mmdet Mask2Former state dict: no key starts with '
            f'{head_prefix}pixel_decoder.input_convs. Pass the model state '
            f"dict (a checkpoint's 'state_dict') of mmdet's mask2former_* "
            'configs, or set head_prefix to its head\'s prefix.')
    return convert_mmseg_state_dict(state_dict, head_prefix)
