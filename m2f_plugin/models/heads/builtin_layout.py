"""The built-in ``Mask2FormerHead`` config layout, translated to our heads'.

A config of mmseg's or mmdet's built-in Mask2Former becomes ours by changing
the head's ``type`` only (``Mask2FormerHead`` -> ``M2FHead`` in mmseg,
``Mask2FormerHead`` -> ``M2FDetHead`` and ``MaskFormerFusionHead`` ->
``M2FFusionHead`` in mmdet): the heads' constructors pass their keyword
arguments through :func:`translate_builtin_head` when they are in the
built-in layout (:func:`is_builtin_layout`). The result is the same model:
the same hyper-parameters, a state dict the built-in's loads into (renamed
on load, ``m2f_plugin.converters``), the same outputs and losses. A setting
that the translation cannot honour exactly raises ``BuiltinLayoutError``
(a ``ValueError``) at build time, naming the key and the fix; a key that is
not a setting of the built-in head raises too, so nothing is dropped
silently. Each sub-config is read with the defaults of the class the
built-in builds from it (mmdet's and mmcv's signatures).

Translated (``path`` -> ours):

* ``in_channels``, ``feat_channels``, ``out_channels``, ``num_queries``,
  ``init_cfg``; mmseg: ``num_classes``, ``ignore_index``,
  ``align_corners`` (False); mmdet: ``num_things_classes``,
  ``num_stuff_classes``, ``train_cfg`` and ``test_cfg`` (kept: the detector
  passes them) -> the same keys.
* ``strides``, ``pixel_decoder.strides`` (the built-in reads only the
  latter) -> ``strides``.
* ``num_transformer_feat_level``, ``pixel_decoder.num_outs``,
  ``pixel_decoder.encoder.layer_cfg.self_attn_cfg.num_levels`` (all equal)
  -> ``pixel_decoder.num_levels``.
* ``pixel_decoder`` (``MSDeformAttnPixelDecoder``): ``norm_cfg`` (GN)
  ``num_groups`` -> ``num_groups``; ``encoder.num_layers`` ->
  ``num_layers``; ``encoder.layer_cfg.self_attn_cfg`` ``num_heads``,
  ``num_points``, ``dropout`` -> ``num_heads``, ``num_points``,
  ``dropout``; ``encoder.layer_cfg.ffn_cfg.feedforward_channels`` ->
  ``ffn_dims``. ``im2col_step`` is a kernel batching setting (the same
  numbers); it is accepted and our kernel's own is used.
* ``transformer_decoder`` (``Mask2FormerTransformerDecoder``, with or without
  a ``type``): ``num_layers`` -> ``num_layers``;
  ``layer_cfg.{self,cross}_attn_cfg.num_heads`` -> ``num_heads``;
  ``layer_cfg.{self,cross}_attn_cfg.attn_drop`` and
  ``layer_cfg.ffn_cfg.ffn_drop`` -> ``dropout``;
  ``layer_cfg.ffn_cfg.feedforward_channels`` -> ``ffn_dims``.
  ``return_intermediate`` is accepted (the built-in head never reads it).
* ``positional_encoding`` and ``pixel_decoder.positional_encoding``
  (``SinePositionalEncoding``): checked (ours is the normalised sine
  encoding with ``num_feats = feat_channels / 2``).
* ``loss_cls`` (mmdet ``CrossEntropyLoss``, softmax): ``class_weight``,
  ``loss_weight`` -> ``M2FClassLoss``.
  ``loss_mask`` (``CrossEntropyLoss``, ``use_sigmoid=True``):
  ``loss_weight`` -> ``M2FPointBCELoss``.
  ``loss_dice`` (``DiceLoss``, ``use_sigmoid``, ``activate``,
  ``naive_dice=True``): ``eps``, ``loss_weight`` -> ``M2FPointDiceLoss``.
* ``train_cfg``: ``num_points``, ``oversample_ratio``,
  ``importance_sample_ratio`` -> the same keys (``num_points`` also the
  matcher's); ``assigner`` (``HungarianAssigner``) ``match_costs``:
  ``ClassificationCost`` -> ``cost_class``, ``CrossEntropyLossCost``
  (``use_sigmoid=True``) -> ``cost_mask``, ``DiceCost`` (``pred_act=True``,
  ``naive_dice=True``, ``eps=1.0``) -> ``cost_dice`` (weights of a kind
  given twice add up, a kind not given weighs 0); ``sampler``
  (``MaskPseudoSampler``) is what our criterion does.
* Our own keys without a built-in counterpart pass through: mmseg
  ``predict_chunk``, ``min_masks_per_image`` (1 unless given: the
  built-in's loss normaliser); mmdet ``masks_at_input_size``,
  ``min_masks_per_image``, ``ignore_index``. A sub-config already in our layout (an ``M2F`` type)
  passes through as well.

Refused (``BuiltinLayoutError``, the message names the key and the fix):

* any key that is neither the built-in's nor one of the above, at any depth;
* ``enforce_decoder_input_project=True``; decoder or encoder ``embed_dims``
  other than ``feat_channels``; self- and cross-attention with different
  ``num_heads``;
* dropout ours cannot place the same way: attention ``proj_drop``, a non-zero
  ``dropout_layer`` or deprecated ``dropout`` in the decoder's attention,
  decoder attention and FFN dropout that differ, encoder attention and FFN
  dropout that differ;
* activations other than ReLU, norms other than GN (pixel decoder) and LN
  without options (transformer layers), ``num_fcs != 2``,
  ``add_identity=False``, ``batch_first=False``, ``value_proj_ratio != 1``,
  ``encoder.num_cp`` (activation checkpointing: use ours, ``with_cp``),
  sub-module ``init_cfg`` other than None, a positional encoding other than
  the normalised one with ``num_feats = feat_channels / 2`` and default
  ``temperature``/``scale``/``eps``/``offset``;
* losses: another type than ``CrossEntropyLoss``/``DiceLoss``, a
  ``reduction`` other than ``'mean'``, ``use_sigmoid=True`` (class loss) or
  False (mask losses), ``use_mask``, ``ignore_index``, ``avg_non_ignore``,
  a ``class_weight`` on a mask loss, a missing ``loss_cls.class_weight``
  (the built-in needs it too), ``activate=False``, ``naive_dice=False``;
* match costs other than the three above (``FocalLossCost``,
  ``BinaryFocalLossCost``, ``MaskFocalLossCost``, ``BBoxL1Cost``,
  ``IoUCost``, ...), ``CrossEntropyLossCost(use_sigmoid=False)``,
  ``DiceCost`` with ``pred_act=False``, ``naive_dice=False`` or
  ``eps != 1.0``; an assigner other than ``HungarianAssigner``; a sampler
  other than ``MaskPseudoSampler``;
* mmseg: ``align_corners=True`` (the built-in upsamples the masks with
  False and resizes the logits with True), a head-level ``test_cfg``,
  ``num_things_classes``/``num_stuff_classes`` (no effect on its head);
* ``strides`` and ``pixel_decoder.strides`` that differ.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

__all__ = ['BuiltinLayoutError', 'accepts_builtin_layout',
           'is_builtin_layout', 'matcher_from_assigner',
           'translate_builtin_head']

_MISSING = object()
_TOOLBOXES = ('mmseg', 'mmdet')
# keys only the built-in layout has (mmseg puts train_cfg in the head; mmdet's
# detector passes it to either layout)
_BUILTIN_MARKERS = {
    'mmseg': ('num_transformer_feat_level', 'enforce_decoder_input_project',
              'positional_encoding', 'train_cfg'),
    'mmdet': ('num_transformer_feat_level', 'enforce_decoder_input_project',
              'positional_encoding'),
}
# our keys without a built-in counterpart, accepted in the built-in layout
_OUR_EXTRAS = {
    'mmseg': ('predict_chunk', 'min_masks_per_image'),
    'mmdet': ('masks_at_input_size', 'min_masks_per_image', 'ignore_index'),
}
# mmdet's HungarianAssigner match costs -> our matcher's weights
_MATCH_COSTS = {'ClassificationCost': 'cost_class',
                'CrossEntropyLossCost': 'cost_mask',
                'DiceCost': 'cost_dice'}
_ALL_COST_WEIGHTS = ('cost_class', 'cost_mask', 'cost_dice')


class BuiltinLayoutError(ValueError):
    """A built-in ``Mask2FormerHead`` setting our heads cannot honour."""


def _bare(type_name: Any) -> Any:
    """``'mmdet.DiceCost'`` -> ``'DiceCost'`` (a registry scope dropped)."""
    if isinstance(type_name, str):
        return type_name.rsplit('.', 1)[-1]
    return type_name


class _Reader:
    """One config dict read key by key: defaults as the built-in's, every
    key accounted for (:meth:`finish` refuses the ones nobody read)."""

    def __init__(self, cfg: Optional[dict], path: str, head: str) -> None:
        self.cfg = dict(cfg or {})
        self.path = path
        self.head = head
        self.used: set = set()

    def name(self, key: str) -> str:
        return f'{self.path}.{key}' if self.path else key

    def has(self, key: str) -> bool:
        return key in self.cfg

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value (or ``default``); a missing key without default is an
        error, as in the built-in."""
        self.used.add(key)
        if key in self.cfg:
            return self.cfg[key]
        if default is _MISSING:
            self.fail(f'{self.name(key)} is required by the built-in head; '
                      'set it')
        return copy.deepcopy(default)

    def sub(self, key: str, default: Any = _MISSING) -> '_Reader':
        """A reader of the nested dict at ``key``."""
        return _Reader(self.get(key, default), self.name(key), self.head)

    def expect(self, key: str, default: Any, allowed: Iterable[Any],
               fix: str) -> Any:
        """The value, which must be one of ``allowed``."""
        value = self.get(key, default)
        if not any(value == a for a in allowed):
            self.fail(f'{self.name(key)}={value!r} cannot be honoured '
                      f'exactly; {fix}')
        return value

    def fail(self, message: str) -> None:
        raise BuiltinLayoutError(f'{self.head}: {message}')

    def finish(self) -> None:
        """Refuse every key that was not read."""
        unused = [k for k in self.cfg if k not in self.used]
        if unused:
            names = ', '.join(self.name(k) for k in unused)
            self.fail(f'{names}: not a setting of the built-in Mask2Former '
                      'head at this place, so it would have no effect; '
                      'delete it or move it where the built-in reads it')


# the built-in's FFN defaults (encoder and decoder layers alike)
_BUILTIN_FFN = dict(embed_dims=256, feedforward_channels=1024, num_fcs=2,
                    ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True))


# -- detection ---------------------------------------------------------------
def _is_ours(cfg: Any) -> bool:
    return isinstance(cfg, dict) and str(_bare(cfg.get('type', ''))
                                         ).startswith('M2F')


def _builtin_pixel_decoder(cfg: Any) -> bool:
    return isinstance(cfg, dict) and not _is_ours(cfg) and (
        'encoder' in cfg or 'type' not in cfg
        or _bare(cfg['type']) == 'MSDeformAttnPixelDecoder')


def _builtin_transformer_decoder(cfg: Any) -> bool:
    return isinstance(cfg, dict) and not _is_ours(cfg)


def _builtin_loss(cfg: Any) -> bool:
    return isinstance(cfg, dict) and not _is_ours(cfg)


def is_builtin_layout(kwargs: dict, toolbox: str) -> bool:
    """Whether a head's keyword arguments follow the built-in
    ``Mask2FormerHead``'s layout (by its keys and sub-config types)."""
    if any(k in kwargs for k in _BUILTIN_MARKERS[toolbox]):
        return True
    return (_builtin_pixel_decoder(kwargs.get('pixel_decoder'))
            or _builtin_transformer_decoder(kwargs.get('transformer_decoder'))
            or any(_builtin_loss(kwargs.get(k))
                   for k in ('loss_cls', 'loss_mask', 'loss_dice')))


# -- building blocks ---------------------------------------------------------
def _no_init_cfg(r: _Reader) -> None:
    r.expect('init_cfg', None, [None],
             'delete it (our modules initialise as the built-in; checkpoints '
             'load over it)')


def _relu(r: _Reader, key: str, default: dict) -> None:
    act = r.sub(key, default)
    act.expect('type', 'ReLU', ['ReLU'], "ours use ReLU; set type='ReLU'")
    act.get('inplace', True)  # in-place or not: the same numbers
    act.finish()


def _layer_norm(r: _Reader, key: str) -> None:
    norm = r.sub(key, dict(type='LN'))
    norm.expect('type', 'LN', ['LN'], "ours use LayerNorm; set type='LN'")
    norm.finish()


def _embed_dims(r: _Reader, default: int, feat_channels: int) -> None:
    r.expect('embed_dims', default, [feat_channels],
             f'the built-in head needs it equal to feat_channels='
             f'{feat_channels}; set it so')


def _ffn(r: _Reader, feat_channels: int) -> Tuple[int, float]:
    """mmcv ``FFN`` -> (hidden channels, dropout)."""
    _embed_dims(r, 256, feat_channels)
    dims = r.get('feedforward_channels', 1024)
    r.expect('num_fcs', 2, [2], 'ours has two layers; set num_fcs=2')
    _relu(r, 'act_cfg', dict(type='ReLU', inplace=True))
    drop = r.get('ffn_drop', 0.0)
    _zero_dropout_layer(r, None)
    r.expect('add_identity', True, [True],
             'ours adds the residual; set add_identity=True')
    r.expect('layer_scale_init_value', 0.0, [0.0, 0],
             'ours has no layer scale; delete it')
    _no_init_cfg(r)
    r.finish()
    return dims, drop


def _zero_dropout_layer(r: _Reader, default: Optional[dict]) -> None:
    layer = r.get('dropout_layer', default)
    if layer is not None and layer.get('drop_prob', 0.0) != 0:
        r.fail(f'{r.name("dropout_layer")}={layer!r} cannot be honoured '
               'exactly (ours has no dropout there); delete it')


def _batch_first(r: _Reader) -> None:
    r.expect('batch_first', True, [True],
             'the built-in asserts batch_first=True; set it')


def _attention(r: _Reader, feat_channels: int) -> Tuple[int, float]:
    """mmcv ``MultiheadAttention`` -> (heads, attention dropout)."""
    _embed_dims(r, _MISSING, feat_channels)
    heads = r.get('num_heads')
    drop = r.get('attn_drop', 0.0)
    if r.has('dropout'):  # deprecated: attn_drop and dropout_layer both
        drop = r.expect('dropout', 0.0, [0.0, 0],
                        'it also drops the attention output, which ours does '
                        'not; use attn_drop')
    r.expect('proj_drop', 0.0, [0.0, 0],
             'ours has no dropout after the output projection; set 0')
    _zero_dropout_layer(r, dict(type='Dropout', drop_prob=0.0))
    _batch_first(r)
    _no_init_cfg(r)
    r.finish()
    return heads, drop


def _sine_encoding(r: _Reader, feat_channels: int) -> None:
    """mmdet ``SinePositionalEncoding``: must be ours (normalised, default
    constants, ``feat_channels / 2`` features per axis)."""
    r.expect('num_feats', _MISSING, [feat_channels // 2],
             f'ours encodes feat_channels / 2 = {feat_channels // 2} '
             'features per axis; set it so')
    r.expect('normalize', False, [True],
             'ours is the normalised encoding; set normalize=True')
    r.expect('temperature', 10000, [10000], 'delete it')
    r.expect('scale', _TWO_PI, [_TWO_PI], 'delete it')
    r.expect('eps', 1e-6, [1e-6], 'delete it')
    r.expect('offset', 0.0, [0.0, 0], 'delete it')
    _no_init_cfg(r)
    r.finish()


_TWO_PI = 2 * 3.141592653589793


def _pixel_decoder(r: _Reader, feat_channels: int, num_levels: int
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
    _relu(r, 'act_cfg', dict(type='ReLU'))
    _sine_encoding(r.sub('positional_encoding',
                         dict(num_feats=128, normalize=True)), feat_channels)
    _no_init_cfg(r)
    enc = r.sub('encoder')
    num_layers = enc.get('num_layers')
    enc.expect('num_cp', -1, [-1],
               'activation checkpointing: use our layout, '
               "pixel_decoder=dict(type='M2FPixelDecoder', with_cp=True)")
    _no_init_cfg(enc)
    layer = enc.sub('layer_cfg')
    attn = layer.sub('self_attn_cfg',
                     dict(embed_dims=256, num_heads=8, dropout=0.0))
    _embed_dims(attn, 256, feat_channels)
    heads = attn.get('num_heads', 8)
    attn.expect('num_levels', 4, [num_levels],
                f'it must equal num_transformer_feat_level={num_levels}')
    points = attn.get('num_points', 4)
    attn.get('im2col_step', 64)  # kernel batching: the same numbers
    attn_drop = attn.get('dropout', 0.1)
    _batch_first(attn)
    attn.expect('norm_cfg', None, [None], 'delete it')
    attn.expect('value_proj_ratio', 1.0, [1.0, 1],
                'ours projects values to embed_dims; delete it')
    _no_init_cfg(attn)
    attn.finish()
    ffn_dims, ffn_drop = _ffn(layer.sub('ffn_cfg', _BUILTIN_FFN), feat_channels)
    if attn_drop != ffn_drop:
        layer.fail(f'{layer.name("self_attn_cfg.dropout")}={attn_drop} and '
                   f'{layer.name("ffn_cfg.ffn_drop")}={ffn_drop} differ; ours '
                   'has one encoder dropout: set them equal')
    _layer_norm(layer, 'norm_cfg')
    _no_init_cfg(layer)
    layer.finish()
    enc.finish()
    r.finish()
    return dict(type='M2FPixelDecoder', num_levels=num_levels,
                num_layers=num_layers, num_heads=heads, num_points=points,
                ffn_dims=ffn_dims, dropout=attn_drop,
                num_groups=num_groups), strides


def _transformer_decoder(r: _Reader, feat_channels: int) -> dict:
    """mmdet ``Mask2FormerTransformerDecoder`` -> ours."""
    r.expect('type', None, [None, 'Mask2FormerTransformerDecoder',
                            'mmdet.Mask2FormerTransformerDecoder'],
             "delete type (the built-in head builds "
             "Mask2FormerTransformerDecoder), or use ours: "
             "type='M2FMaskedTransformerDecoder'")
    num_layers = r.get('num_layers')
    r.get('return_intermediate', True)  # never read by the built-in head
    _layer_norm(r, 'post_norm_cfg')
    _no_init_cfg(r)
    layer = r.sub('layer_cfg')
    default_attn = dict(embed_dims=256, num_heads=8, dropout=0.0,
                        batch_first=True)
    self_heads, self_drop = _attention(
        layer.sub('self_attn_cfg', default_attn), feat_channels)
    cross_heads, cross_drop = _attention(
        layer.sub('cross_attn_cfg', default_attn), feat_channels)
    ffn_dims, ffn_drop = _ffn(layer.sub('ffn_cfg', _BUILTIN_FFN), feat_channels)
    if self_heads != cross_heads:
        layer.fail(f'{layer.name("self_attn_cfg.num_heads")}={self_heads} '
                   f'and {layer.name("cross_attn_cfg.num_heads")}='
                   f'{cross_heads} differ; ours has one num_heads: set them '
                   'equal')
    if not self_drop == cross_drop == ffn_drop:
        layer.fail(f'attention dropout (self {self_drop}, cross {cross_drop})'
                   f' and {layer.name("ffn_cfg.ffn_drop")}={ffn_drop} differ;'
                   ' ours has one decoder dropout: set them equal')
    _layer_norm(layer, 'norm_cfg')
    _no_init_cfg(layer)
    layer.finish()
    r.finish()
    return dict(type='M2FMaskedTransformerDecoder', num_layers=num_layers,
                num_heads=self_heads, ffn_dims=ffn_dims, dropout=self_drop)


def _cross_entropy(r: _Reader, sigmoid: bool) -> None:
    """mmdet ``CrossEntropyLoss`` options shared by both uses."""
    r.expect('type', _MISSING, ['CrossEntropyLoss', 'mmdet.CrossEntropyLoss'],
             "set type='CrossEntropyLoss' as the built-in does, or ours")
    r.expect('use_sigmoid', False, [sigmoid],
             f'the built-in computes this loss with use_sigmoid={sigmoid}; '
             'set it so')
    r.expect('use_mask', False, [False], 'delete it')
    r.expect('reduction', 'mean', ['mean'],
             "the built-in averages it (avg_factor); set reduction='mean'")
    r.expect('ignore_index', None, [None], 'delete it')
    r.expect('avg_non_ignore', False, [False], 'delete it')


def _loss_cls(r: _Reader) -> dict:
    _cross_entropy(r, sigmoid=False)
    weight = r.get('class_weight', None)
    if weight is None:
        r.fail(f'{r.name("class_weight")} is required by the built-in head; '
               'set class_weight=[1.0] * num_classes + [0.1]')
    loss_weight = r.get('loss_weight', 1.0)
    r.finish()
    return dict(type='M2FClassLoss', class_weight=list(weight),
                loss_weight=loss_weight)


def _loss_mask(r: _Reader) -> dict:
    _cross_entropy(r, sigmoid=True)
    r.expect('class_weight', None, [None],
             'ours weighs every point alike; delete it')
    loss_weight = r.get('loss_weight', 1.0)
    r.finish()
    return dict(type='M2FPointBCELoss', loss_weight=loss_weight)


def _loss_dice(r: _Reader) -> dict:
    r.expect('type', _MISSING, ['DiceLoss', 'mmdet.DiceLoss'],
             "set type='DiceLoss' as the built-in does, or ours")
    r.expect('use_sigmoid', True, [True], 'set use_sigmoid=True')
    r.expect('activate', True, [True],
             'ours applies the sigmoid; set activate=True')
    r.expect('naive_dice', False, [True],
             'ours is the naive Dice (1 - (2|pt| + eps) / (|p| + |t| + eps));'
             ' set naive_dice=True')
    r.expect('reduction', 'mean', ['mean'],
             "the built-in averages it (avg_factor); set reduction='mean'")
    eps = r.get('eps', 1e-3)
    loss_weight = r.get('loss_weight', 1.0)
    r.finish()
    return dict(type='M2FPointDiceLoss', eps=eps, loss_weight=loss_weight)


def _match_cost(r: _Reader) -> Tuple[str, float]:
    """One mmdet match cost -> (our weight key, weight)."""
    kind = _bare(r.get('type'))
    if kind not in _MATCH_COSTS:
        r.fail(f'{r.name("type")}={r.cfg["type"]!r}: our matcher computes '
               'ClassificationCost, CrossEntropyLossCost(use_sigmoid=True) '
               'and DiceCost(pred_act=True, naive_dice=True, eps=1.0) only; '
               'remove it or replace it by one of those')
    weight = r.get('weight', 1.0)
    if kind == 'CrossEntropyLossCost':
        r.expect('use_sigmoid', True, [True], 'set use_sigmoid=True')
    elif kind == 'DiceCost':
        r.expect('pred_act', False, [True],
                 'ours applies the sigmoid; set pred_act=True')
        r.expect('naive_dice', True, [True], 'set naive_dice=True')
        r.expect('eps', 1e-3, [1.0],
                 "ours matches with the paper's eps=1.0; set eps=1.0")
    r.finish()
    return _MATCH_COSTS[kind], weight


def matcher_from_assigner(assigner: Optional[dict], num_points: int,
                          path: str = 'train_cfg.assigner',
                          head: str = 'M2FDetHead') -> dict:
    """mmdet's ``HungarianAssigner`` config -> ``M2FHungarianMatcher``'s.

    Every cost kind gets its weight (summed if given twice; 0 if absent);
    anything our matcher cannot compute raises ``BuiltinLayoutError``.
    None or an empty dict: our matcher's defaults.
    """
    matcher: Dict[str, Any] = dict(type='M2FHungarianMatcher',
                                   num_points=num_points)
    if not assigner:
        return matcher
    r = _Reader(assigner, path, head)
    r.expect('type', 'HungarianAssigner',
             ['HungarianAssigner', 'mmdet.HungarianAssigner'],
             "our matcher is the Hungarian one; set type='HungarianAssigner'")
    costs = r.get('match_costs')
    if isinstance(costs, dict):  # as HungarianAssigner accepts
        costs = [costs]
    weights = dict.fromkeys(_ALL_COST_WEIGHTS, 0.0)
    for i, cost in enumerate(costs):
        key, weight = _match_cost(_Reader(cost, f'{path}.match_costs[{i}]',
                                          head))
        weights[key] += weight
    r.finish()
    matcher.update(weights)
    return matcher


def _train_cfg(r: _Reader) -> dict:
    """Head ``train_cfg`` -> matcher and point-sampling keys."""
    num_points = r.get('num_points', 12544)
    out = dict(num_points=num_points,
               oversample_ratio=r.get('oversample_ratio', 3.0),
               importance_sample_ratio=r.get('importance_sample_ratio', 0.75))
    out['matcher'] = matcher_from_assigner(
        r.get('assigner'), num_points, r.name('assigner'), r.head)
    sampler = r.sub('sampler')
    sampler.expect('type', _MISSING,
                   ['MaskPseudoSampler', 'mmdet.MaskPseudoSampler'],
                   "our criterion takes every matched pair, as "
                   "MaskPseudoSampler; set type='MaskPseudoSampler'")
    sampler.finish()
    r.finish()
    return out


# -- the head ----------------------------------------------------------------
def translate_builtin_head(kwargs: dict, toolbox: str) -> dict:
    """Keyword arguments of the built-in ``Mask2FormerHead`` -> ours.

    Args:
        kwargs: The head's config in the built-in layout (``type`` ignored);
            for mmdet, with the ``train_cfg`` / ``test_cfg`` the detector
            adds.
        toolbox: ``'mmseg'`` (-> ``M2FHead``) or ``'mmdet'``
            (-> ``M2FDetHead``).

    Returns:
        Keyword arguments of our head, same model.

    Raises:
        BuiltinLayoutError: a setting that cannot be honoured exactly, or a
            key the built-in head does not have (named, with the fix).
    """
    if toolbox not in _TOOLBOXES:
        raise ValueError(f'toolbox must be one of {_TOOLBOXES}, got '
                         f'{toolbox!r}')
    head = ('M2FHead (mmseg Mask2FormerHead layout)' if toolbox == 'mmseg'
            else 'M2FDetHead (mmdet Mask2FormerHead layout)')
    r = _Reader(kwargs, '', head)
    r.get('type', None)
    out: Dict[str, Any] = {}
    for key in ('in_channels', 'feat_channels', 'out_channels', 'num_queries',
                'init_cfg') + _OUR_EXTRAS[toolbox]:
        if r.has(key):
            out[key] = r.get(key)
    feat = out.get('feat_channels', 256)
    if toolbox == 'mmseg':
        # the built-in's normaliser (mmdet's): an image without labelled
        # pixels counts one mask
        out.setdefault('min_masks_per_image', 1)
        out['num_classes'] = r.get('num_classes')
        out['ignore_index'] = r.get('ignore_index', 255)
        out['align_corners'] = r.expect(
            'align_corners', False, [False],
            'the built-in upsamples the masks with align_corners=False but '
            'resizes the logits with True, ours one way: set False')
        if r.get('test_cfg', None):
            r.fail('test_cfg in the head has no effect on the built-in '
                   "(the segmentor's model.test_cfg configures inference); "
                   'delete it')
        for key in ('num_things_classes', 'num_stuff_classes'):
            if r.has(key):
                r.fail(f'{key} has no effect on the mmseg head (num_classes '
                       'sets its classes); delete it')
    else:
        for key in ('num_things_classes', 'num_stuff_classes'):
            if r.has(key):
                out[key] = r.get(key)
        out['test_cfg'] = r.get('test_cfg', None)
    num_levels = r.get('num_transformer_feat_level', 3)
    r.expect('enforce_decoder_input_project', False, [False],
             'ours projects the decoder inputs only when the decoder width '
             'differs from feat_channels; set False')
    _sine_encoding(r.sub('positional_encoding',
                         dict(num_feats=128, normalize=True)), feat)

    strides = r.get('strides', None)
    pixel_decoder = r.get('pixel_decoder')
    if _builtin_pixel_decoder(pixel_decoder):
        out['pixel_decoder'], pd_strides = _pixel_decoder(
            _Reader(pixel_decoder, 'pixel_decoder', head), feat, num_levels)
        if pd_strides is not None and strides is not None and list(
                pd_strides) != list(strides):
            r.fail(f'strides={list(strides)} and pixel_decoder.strides='
                   f'{list(pd_strides)} differ (the built-in reads only the '
                   'pixel decoder\'s); set them equal')
        strides = pd_strides if pd_strides is not None else strides
    else:
        out['pixel_decoder'] = pixel_decoder
    if strides is not None:
        out['strides'] = list(strides)
    decoder = r.get('transformer_decoder')
    out['transformer_decoder'] = (
        _transformer_decoder(_Reader(decoder, 'transformer_decoder', head),
                             feat)
        if _builtin_transformer_decoder(decoder) else decoder)
    for key, translate in (('loss_cls', _loss_cls), ('loss_mask', _loss_mask),
                           ('loss_dice', _loss_dice)):
        if r.has(key):
            cfg = r.get(key)
            out[key] = (translate(_Reader(cfg, key, head))
                        if _builtin_loss(cfg) else cfg)
    train_cfg = r.get('train_cfg', None)
    if train_cfg:
        out.update(_train_cfg(_Reader(train_cfg, 'train_cfg', head)))
    if toolbox == 'mmdet':
        out['train_cfg'] = train_cfg
    r.finish()
    return out


def accepts_builtin_layout(toolbox: str) -> Callable[[Callable], Callable]:
    """Decorator of a head's ``__init__``: keyword arguments in the built-in
    layout are translated (:func:`translate_builtin_head`) first."""
    if toolbox not in _TOOLBOXES:
        raise ValueError(f'toolbox must be one of {_TOOLBOXES}, got '
                         f'{toolbox!r}')

    def decorate(init: Callable) -> Callable:
        @functools.wraps(init)
        def wrapper(self, *args, **kwargs) -> None:
            if is_builtin_layout(kwargs, toolbox):
                kwargs = translate_builtin_head(kwargs, toolbox)
            init(self, *args, **kwargs)
        return wrapper

    return decorate

