"""Mask2Former's modules; importing registers them in mmseg's registries.

Data flows backbone -> ``pixel_decoder`` -> ``transformer_decoder`` ->
``Predictions`` -> ``matcher`` -> ``losses``; ``mask2former.py`` runs that
chain and ``heads`` adapts it to a toolbox.
"""
from .backbones import M2FResNet
from .heads import M2FHead
from .losses import M2FClassLoss, M2FPointBCELoss, M2FPointDiceLoss
from .mask2former import Mask2Former
from .matcher import M2FHungarianMatcher
from .pixel_decoder import M2FPixelDecoder
from .transformer_decoder import M2FMaskedTransformerDecoder

__all__ = ['M2FClassLoss', 'M2FHead', 'M2FHungarianMatcher',
           'M2FMaskedTransformerDecoder', 'M2FPixelDecoder', 'M2FPointBCELoss',
           'M2FPointDiceLoss', 'M2FResNet', 'Mask2Former']
