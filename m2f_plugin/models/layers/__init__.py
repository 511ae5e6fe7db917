"""Building blocks shared by the pixel decoder and the transformer decoder."""
from .ffn import FFN
from .mlp import MLP
from .msdeform_attn import MSDeformAttn
from .position_encoding import SinePositionEncoding2d

__all__ = ['FFN', 'MLP', 'MSDeformAttn', 'SinePositionEncoding2d']
