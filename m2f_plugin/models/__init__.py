"""Mask2Former's modules; importing registers them in mmseg's registries."""
from .backbones import M2FResNet
from .decoder import M2FMaskedTransformerDecoder
from .heads import M2FHead
from .losses import M2FClassLoss, M2FPointBCELoss, M2FPointDiceLoss
from .matcher import M2FHungarianMatcher
from .pixel_decoder import M2FPixelDecoder
from .segmentors import M2FEncoderDecoder

__all__ = ['M2FClassLoss', 'M2FEncoderDecoder', 'M2FHead', 'M2FHungarianMatcher',
           'M2FMaskedTransformerDecoder', 'M2FPixelDecoder', 'M2FPointBCELoss',
           'M2FPointDiceLoss', 'M2FResNet']
