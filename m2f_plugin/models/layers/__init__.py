"""Building blocks shared by the pixel decoder and the transformer decoder."""
from .ffn import FFN
from .group_norm import ParallelStatsGroupNorm, group_norm_split_stats
from .mask_logits import MaskLogitSets, mask_logits_product
from .mlp import MLP
from .msdeform_attn import MSDeformAttn, ms_deform_attn_core
from .point_sample import point_sample, sample_class_indicator
from .position_encoding import SinePositionEncoding2d
from .splitk_bmm import splitk_bmm

__all__ = [
    'FFN', 'MLP', 'MaskLogitSets', 'MSDeformAttn', 'ParallelStatsGroupNorm',
    'SinePositionEncoding2d', 'group_norm_split_stats', 'mask_logits_product',
    'ms_deform_attn_core', 'point_sample', 'sample_class_indicator',
    'splitk_bmm'
]
