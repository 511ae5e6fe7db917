"""Checkpoint converters into m2f_plugin's key layout."""
from .hf_config import (
    HFConfigDerivation,
    UnsupportedHFConfig,
    derive_from_hf_config,
)
from .hf_config_file import build_derived_config, format_config_file
from .hf_keys import (
    HFConversionReport,
    convert_hf_checkpoint,
    convert_hf_state_dict,
    is_hf_mask2former,
    load_hf_checkpoint,
    verify_against_model,
)
from .mmdet_keys import (
    MMDET_HEAD_PREFIX,
    convert_mmdet_state_dict,
    is_mmdet_mask2former,
)
from .mmseg_keys import (
    ConversionReport,
    convert_mmseg_state_dict,
    is_mmseg_mask2former,
    mmseg_head_key_to_ours,
)

__all__ = ['ConversionReport', 'HFConfigDerivation', 'HFConversionReport',
           'MMDET_HEAD_PREFIX', 'UnsupportedHFConfig', 'build_derived_config',
           'convert_hf_checkpoint', 'convert_hf_state_dict',
           'convert_mmdet_state_dict', 'convert_mmseg_state_dict',
           'derive_from_hf_config', 'format_config_file', 'is_hf_mask2former',
           'is_mmdet_mask2former', 'is_mmseg_mask2former',
           'load_hf_checkpoint', 'mmseg_head_key_to_ours',
           'verify_against_model']
