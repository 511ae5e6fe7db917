"""The built-in head's pixel decoder and transformer decoder, read.

mmdet's ``MSDeformAttnPixelDecoder`` -> ``M2FPixelDecoder`` and
``Mask2FormerTransformerDecoder`` -> ``M2FMaskedTransformerDecoder``: the
same hyper-parameters, or a ``BuiltinLayoutError`` naming the key.
"""
from __future__ import annotations

from typing import Optional, Tuple

from .layers import (
    BUILTIN_FFN,
    no_init_cfg,
    read_attention,
    read_batch_first,
    read_embed_dims,
    read_ffn,
    read_layer_norm,
    read_relu,
    read_sine_encoding,
)
from .reader import Reader

__all__ = ['read_pixel_decoder', 'read_transformer_decoder']


def read_pixel_decoder(r: Reader, feat_channels: int, num_levels: int
                       ) -> Tuple[dict, Optional[list]]:
    """mmdet ``MSDeformAttnPixelDecoder`` -> ours, and its ``strides``."""
    r.expect('type', 'MSDeformAttnPixelDecoder',
             ['MSDeformAttnPixelDecoder', 'mmdet.MSDeformAttnPixelDecoder'],
             "set type='MSDeformAttnPixelDecoder' (or ours: "
             "type='M2FPixelDecoder')")
    r.get('in_channels', None)  # the head's replace them, in both
    r.get('feat_channels', None)
    r.get('out_channels', None)
    strides = r.get('strides', None)
    r.expect('num_outs', 3, [num_levels],
             f'it must equal num_transformer_feat_level={num_levels}')
    norm = r.sub('norm_cfg', dict(type='GN', num_groups=32))
    norm.expect('type', 'GN', ['GN'], "ours uses GroupNorm; set type='GN'")
    num_groups = norm.get('num_groups')
    norm.expect('requires_grad', True, [True],
                'ours trains the GroupNorm parameters; delete it')
    norm.finish()
    read_relu(r, 'act_cfg', dict(type='ReLU'))
    read_sine_encoding(r.sub('positional_encoding',
                             dict(num_feats=128, normalize=True)),
                       feat_channels)
    no_init_cfg(r)
    enc = r.sub('encoder')
    num_layers = enc.get('num_layers')
    enc.expect('num_cp', -1, [-1],
               'activation checkpointing: use our layout, '
               "pixel_decoder=dict(type='M2FPixelDecoder', with_cp=True)")
    no_init_cfg(enc)
    layer = enc.sub('layer_cfg')
    attn = layer.sub('self_attn_cfg',
                     dict(embed_dims=256, num_heads=8, dropout=0.0))
    read_embed_dims(attn, 256, feat_channels)
    heads = attn.get('num_heads', 8)
    attn.expect('num_levels', 4, [num_levels],
                f'it must equal num_transformer_feat_level={num_levels}')
    points = attn.get('num_points', 4)
    attn.get('im2col_step', 64)  # kernel batching: the same numbers
    attn_drop = attn.get('dropout', 0.1)
    read_batch_first(attn)
    attn.expect('norm_cfg', None, [None], 'delete it')
    attn.expect('value_proj_ratio', 1.0, [1.0, 1],
                'ours projects values to embed_dims; delete it')
    no_init_cfg(attn)
    attn.finish()
    ffn_dims, ffn_drop = read_ffn(layer.sub('ffn_cfg', BUILTIN_FFN),
                                  feat_channels)
    if attn_drop != ffn_drop:
        layer.fail(f'{layer.name("self_attn_cfg.dropout")}={attn_drop} and '
                   f'{layer.name("ffn_cfg.ffn_drop")}={ffn_drop} differ; ours '
                   'has one encoder dropout: set them equal')
    read_layer_norm(layer, 'norm_cfg')
    no_init_cfg(layer)
    layer.finish()
    enc.finish()
    r.finish()
    return dict(type='M2FPixelDecoder', num_levels=num_levels,
                num_layers=num_layers, num_heads=heads, num_points=points,
                ffn_dims=ffn_dims, dropout=attn_drop,
                num_groups=num_groups), strides


def read_transformer_decoder(r: Reader, feat_channels: int) -> dict:
    """mmdet ``Mask2FormerTransformerDecoder`` -> ours."""
    r.expect('type', None, [None, 'Mask2FormerTransformerDecoder',
                            'mmdet.Mask2FormerTransformerDecoder'],
             "delete type (the built-in head builds "
             "Mask2FormerTransformerDecoder), or use ours: "
             "type='M2FMaskedTransformerDecoder'")
    num_layers = r.get('num_layers')
    r.get('return_intermediate', True)  # never read by the built-in head
    read_layer_norm(r, 'post_norm_cfg')
    no_init_cfg(r)
    layer = r.sub('layer_cfg')
    default_attn = dict(embed_dims=256, num_heads=8, dropout=0.0,
                        batch_first=True)
    self_heads, self_drop = read_attention(
        layer.sub('self_attn_cfg', default_attn), feat_channels)
    cross_heads, cross_drop = read_attention(
        layer.sub('cross_attn_cfg', default_attn), feat_channels)
    ffn_dims, ffn_drop = read_ffn(layer.sub('ffn_cfg', BUILTIN_FFN),
                                  feat_channels)
    if self_heads != cross_heads:
        layer.fail(f'{layer.name("self_attn_cfg.num_heads")}={self_heads} '
                   f'and {layer.name("cross_attn_cfg.num_heads")}='
                   f'{cross_heads} differ; ours has one num_heads: set them '
                   'equal')
    if not self_drop == cross_drop == ffn_drop:
        layer.fail(f'attention dropout (self {self_drop}, cross {cross_drop})'
                   f' and {layer.name("ffn_cfg.ffn_drop")}={ffn_drop} differ;'
                   ' ours has one decoder dropout: set them equal')
    read_layer_norm(layer, 'norm_cfg')
    no_init_cfg(layer)
    layer.finish()
    r.finish()
    return dict(type='M2FMaskedTransformerDecoder', num_layers=num_layers,
                num_heads=self_heads, ffn_dims=ffn_dims, dropout=self_drop)
