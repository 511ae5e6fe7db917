"""Stage 2: the masked-attention transformer decoder and its predictor."""
from .attention import MultiheadAttention
from .attention_mask import attend_mask_from_embeddings, features_at
from .decoder_layer import MaskedDecoderLayer
from .masked_transformer_decoder import M2FMaskedTransformerDecoder
from .predictor import MaskClassPredictor

__all__ = ['M2FMaskedTransformerDecoder', 'MaskClassPredictor',
           'MaskedDecoderLayer', 'MultiheadAttention',
           'attend_mask_from_embeddings', 'features_at']
