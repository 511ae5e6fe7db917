"""Checkpoint converters into m2f_plugin's key layout."""
from .mmseg_keys import (
                         ConversionReport,
                         convert_mmseg_state_dict,
                         is_mmseg_mask2former,
                         mmseg_head_key_to_ours,
)

__all__ = ['ConversionReport', 'convert_mmseg_state_dict',
           'is_mmseg_mask2former', 'mmseg_head_key_to_ours']
