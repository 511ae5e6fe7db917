"""Stage 1: the multi-scale deformable-attention pixel decoder."""
from .msdeform_encoder import MSDeformEncoder, MSDeformEncoderLayer
from .msdeform_pixel_decoder import M2FPixelDecoder

__all__ = ['M2FPixelDecoder', 'MSDeformEncoder', 'MSDeformEncoderLayer']
