"""Utilities: the stack check, checkpoint loading on modern torch and the
filters of known-harmless third-party warnings."""
from .checkpoint_compat import allow_mmengine_checkpoints, mmengine_checkpoint_globals
from .owned_folder import FolderNotOursError
from .version_check import SUPPORTED, check_openmmlab_stack
from .warning_filters import install_warning_filters

__all__ = [
    'FolderNotOursError', 'SUPPORTED', 'allow_mmengine_checkpoints', 'check_openmmlab_stack',
    'install_warning_filters', 'mmengine_checkpoint_globals'
]
