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

Modules: ``reader`` (reading a config key by key), ``layers`` (mmcv's
attention, FFN, norms and the positional encoding), ``decoders`` (the pixel
and transformer decoders), ``losses`` (losses, match costs, ``train_cfg``),
``toolbox`` (mmseg's and mmdet's head-level keys) and ``head`` (the
translation and the ``__init__`` decorator).
"""
from .head import (
    accepts_builtin_layout,
    is_builtin_layout,
    translate_builtin_head,
)
from .losses import matcher_from_assigner
from .reader import BuiltinLayoutError

__all__ = ['BuiltinLayoutError', 'accepts_builtin_layout',
           'is_builtin_layout', 'matcher_from_assigner',
           'translate_builtin_head']
