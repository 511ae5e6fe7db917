"""Toolbox adapters of the core: the mmseg decode head."""
from .mmseg_head import M2FHead
from .semantic import semantic_logits

__all__ = ['M2FHead', 'semantic_logits']
