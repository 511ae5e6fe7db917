"""Segmentors."""
from .m2f_encoder_decoder import M2FEncoderDecoder

__all__ = ['M2FEncoderDecoder']
