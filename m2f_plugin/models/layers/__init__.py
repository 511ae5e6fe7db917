"""Building blocks shared by the pixel decoder and the transformer decoder."""
from .ffn import FFN
from .mask_logits import MaskLogitSets, mask_logits_product
from .mlp import MLP
from .msdeform_attn import MSDeformAttn, ms_deform_attn_core
from .point_sample import point_sample, sample_class_indicator
from .position_encoding import SinePositionEncoding2d
from .splitk_bmm import splitk_bmm

__all__ = ['FFN', 'MLP', 'MaskLogitSets', 'mask_logits_product', 'MSDeformAttn', 'SinePositionEncoding2d', 'point_sample', 'sample_class_indicator',
           'ms_deform_attn_core', 'splitk_bmm']
