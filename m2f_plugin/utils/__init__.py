"""Utilities: the stack check and checkpoint loading on modern torch."""
from .checkpoint_compat import allow_mmengine_checkpoints, mmengine_checkpoint_globals
from .version_check import SUPPORTED, check_openmmlab_stack

__all__ = [
    'SUPPORTED', 'allow_mmengine_checkpoints', 'check_openmmlab_stack',
    'mmengine_checkpoint_globals'
]
