"""Stage 2: the masked-attention transformer decoder."""
from .attention import MultiheadAttention
from .attention_mask import attend_mask_from_logits
from .decoder_layer import MaskedDecoderLayer
from .masked_transformer_decoder import M2FMaskedTransformerDecoder

__all__ = ['M2FMaskedTransformerDecoder', 'MaskedDecoderLayer',
           'MultiheadAttention', 'attend_mask_from_logits']
