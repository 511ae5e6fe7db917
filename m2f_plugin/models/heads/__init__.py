"""The decode head (mmseg interface) and the query prediction heads."""
from .m2f_head import M2FHead, semantic_logits
from .prediction_head import MaskClassPredictor

__all__ = ['M2FHead', 'MaskClassPredictor', 'semantic_logits']
