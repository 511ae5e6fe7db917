"""mmcv/mmdet transformer building blocks of the built-in head, read.

Each ``read_*`` reads one sub-config of the built-in layout with the defaults
of the mmcv/mmdet class it configures, refuses what ours cannot honour
exactly, and returns the numbers our modules take.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from .reader import MISSING, Reader

__all__ = ['BUILTIN_FFN', 'no_init_cfg', 'read_attention', 'read_batch_first',
           'read_embed_dims', 'read_ffn', 'read_layer_norm', 'read_relu',
           'read_sine_encoding']

# the built-in's FFN defaults (encoder and decoder layers alike)
BUILTIN_FFN = dict(embed_dims=256, feedforward_channels=1024, num_fcs=2,
                   ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))


def no_init_cfg(r: Reader) -> None:
    """A sub-module ``init_cfg`` must be None."""
    r.expect('init_cfg', None, [None],
             'delete it (our modules initialise as the built-in; checkpoints '
             'load over it)')


def read_relu(r: Reader, key: str, default: dict) -> None:
    """An ``act_cfg`` at ``key``: ReLU (in place or not)."""
    act = r.sub(key, default)
    act.expect('type', 'ReLU', ['ReLU'], "ours use ReLU; set type='ReLU'")
    act.get('inplace', True)  # in-place or not: the same numbers
    act.finish()


def read_layer_norm(r: Reader, key: str) -> None:
    """A ``norm_cfg`` at ``key``: LayerNorm without options."""
    norm = r.sub(key, dict(type='LN'))
    norm.expect('type', 'LN', ['LN'], "ours use LayerNorm; set type='LN'")
    norm.finish()


def read_embed_dims(r: Reader, default: int, feat_channels: int) -> None:
    """``embed_dims`` must equal the head's ``feat_channels``."""
    r.expect('embed_dims', default, [feat_channels],
             f'the built-in head needs it equal to feat_channels='
             f'{feat_channels}; set it so')


def read_ffn(r: Reader, feat_channels: int) -> Tuple[int, float]:
    """mmcv ``FFN`` -> (hidden channels, dropout)."""
    read_embed_dims(r, 256, feat_channels)
    dims = r.get('feedforward_channels', 1024)
    r.expect('num_fcs', 2, [2], 'ours has two layers; set num_fcs=2')
    read_relu(r, 'act_cfg', dict(type='ReLU', inplace=True))
    drop = r.get('ffn_drop', 0.0)
    _zero_dropout_layer(r, None)
    r.expect('add_identity', True, [True],
             'ours adds the residual; set add_identity=True')
    r.expect('layer_scale_init_value', 0.0, [0.0, 0],
             'ours has no layer scale; delete it')
    no_init_cfg(r)
    r.finish()
    return dims, drop


def _zero_dropout_layer(r: Reader, default: Optional[dict]) -> None:
    # ours has no dropout on the residual branch
    layer = r.get('dropout_layer', default)
    if layer is not None and layer.get('drop_prob', 0.0) != 0:
        r.fail(f'{r.name("dropout_layer")}={layer!r} cannot be honoured '
               'exactly (ours has no dropout there); delete it')


def read_batch_first(r: Reader) -> None:
    """``batch_first`` must be True (the built-in asserts it)."""
    r.expect('batch_first', True, [True],
             'the built-in asserts batch_first=True; set it')


def read_attention(r: Reader, feat_channels: int) -> Tuple[int, float]:
    """mmcv ``MultiheadAttention`` -> (heads, attention dropout)."""
    read_embed_dims(r, MISSING, feat_channels)
    heads = r.get('num_heads')
    drop = r.get('attn_drop', 0.0)
    if r.has('dropout'):  # deprecated: attn_drop and dropout_layer both
        drop = r.expect('dropout', 0.0, [0.0, 0],
                        'it also drops the attention output, which ours does '
                        'not; use attn_drop')
    r.expect('proj_drop', 0.0, [0.0, 0],
             'ours has no dropout after the output projection; set 0')
    _zero_dropout_layer(r, dict(type='Dropout', drop_prob=0.0))
    read_batch_first(r)
    no_init_cfg(r)
    r.finish()
    return heads, drop


def read_sine_encoding(r: Reader, feat_channels: int) -> None:
    """mmdet ``SinePositionalEncoding``: must be ours (normalised, default
    constants, ``feat_channels / 2`` features per axis)."""
    r.expect('num_feats', MISSING, [feat_channels // 2],
             f'ours encodes feat_channels / 2 = {feat_channels // 2} '
             'features per axis; set it so')
    r.expect('normalize', False, [True],
             'ours is the normalised encoding; set normalize=True')
    r.expect('temperature', 10000, [10000], 'delete it')
    r.expect('scale', 2 * math.pi, [2 * math.pi], 'delete it')
    r.expect('eps', 1e-6, [1e-6], 'delete it')
    r.expect('offset', 0.0, [0.0, 0], 'delete it')
    no_init_cfg(r)
    r.finish()
