"""Map transformers' ``Mask2FormerForUniversalSegmentation`` weights to ours.

Source: a directory written by ``save_pretrained`` (``config.json`` plus
``model.safetensors`` / ``pytorch_model.bin``, sharded or not), or a bare
state dict. Both key layouts transformers has used are accepted: the one on
the Hub (``attention.self.query``, ``intermediate.dense``, what
``save_pretrained`` still writes) and transformers 5's in-memory one
(``swin.encoder...``, ``attention.q_proj``, ``mlp.fc1``).

Target: an mmseg ``EncoderDecoder`` with mmseg's ``SwinTransformer`` or
``ResNet`` as ``backbone`` and our ``M2FHead`` as ``decode_head``.

Besides renaming (rule tables below, one per part, regular expressions on the
key after the part's prefix), three tensors change layout:

* Swin attention: HF's separate ``query``/``key``/``value`` are concatenated
  into mmseg's fused ``qkv`` (rows q, k, v); the decoder's self-attention
  ``q_proj``/``k_proj``/``v_proj`` into our ``in_proj_weight``/``in_proj_bias``.
* Swin patch merging: HF concatenates the 2x2 neighbours as
  ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (row offset first, channel-minor);
  mmseg's ``PatchMerging`` uses ``nn.Unfold``, which yields channel-major
  ``c * 4 + (2 * dy + dx)``. ``reduction.weight`` columns and ``norm``
  parameters are permuted accordingly (as mmseg's ``swin2mmseg.py``).
* Swin ``relative_position_index``: not stored by transformers 5 (a
  non-persistent buffer); mmseg keeps it in its state dict, so it is generated
  (the table layout is the same; a stored HF index is checked against it).
"""
from __future__ import annotations

import json
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .hf_config import HFConfigDerivation, derive_from_hf_config

__all__ = ['HFCheckpoint', 'HFConversionReport', 'build_model',
           'convert_hf_checkpoint', 'convert_hf_state_dict',
           'is_hf_mask2former', 'load_hf_checkpoint',
           'mmseg_relative_position_index', 'verify_against_model']

Repl = Union[str, Callable[[re.Match, 'HFConversionContext'], str]]

# operations on a matched tensor
COPY = 'copy'
Q, K, V = 'q', 'k', 'v'  # slots of a fused q/k/v tensor
UNFOLD_REDUCTION = 'unfold_reduction'
UNFOLD_NORM = 'unfold_norm'
CHECK_INDEX = 'check_index'  # a stored relative_position_index
IGNORE = 'ignore'

HF_BACKBONE = 'model.pixel_level_module.encoder.'
HF_PIXEL_DECODER = 'model.pixel_level_module.decoder.'
HF_TRANSFORMER = 'model.transformer_module.'
OUR_BACKBONE = 'backbone.'
OUR_PIXEL_DECODER = 'decode_head.pixel_decoder.'
OUR_TRANSFORMER = 'decode_head.transformer_decoder.'

# keys that tell a transformers Mask2FormerForUniversalSegmentation apart
_SIGNATURE = HF_TRANSFORMER + 'decoder.mask_predictor.mask_embedder.0.0.weight'
_CLASS_HEAD = 'class_predictor.weight'

_BLOCK = r'^encoder\.layers\.(\d+)\.blocks\.(\d+)\.'
_OUR_BLOCK = r'stages.\1.blocks.\2.'

# After HF_BACKBONE and an optional 'swin.' (transformers 5 in-memory layout).
_SWIN_RULES: List[Tuple[str, Repl, str]] = [
    (r'^embeddings\.patch_embeddings\.projection\.(weight|bias)$',
     r'patch_embed.projection.\1', COPY),
    (r'^embeddings\.norm\.(weight|bias)$', r'patch_embed.norm.\1', COPY),
    (_BLOCK + r'layernorm_before\.(weight|bias)$', _OUR_BLOCK + r'norm1.\3',
     COPY),
    (_BLOCK + r'layernorm_after\.(weight|bias)$', _OUR_BLOCK + r'norm2.\3',
     COPY),
    (_BLOCK + r'attention\.(?:self\.query|q_proj)\.(weight|bias)$',
     _OUR_BLOCK + r'attn.w_msa.qkv.\3', Q),
    (_BLOCK + r'attention\.(?:self\.key|k_proj)\.(weight|bias)$',
     _OUR_BLOCK + r'attn.w_msa.qkv.\3', K),
    (_BLOCK + r'attention\.(?:self\.value|v_proj)\.(weight|bias)$',
     _OUR_BLOCK + r'attn.w_msa.qkv.\3', V),
    (_BLOCK + r'attention\.(?:output\.dense|o_proj)\.(weight|bias)$',
     _OUR_BLOCK + r'attn.w_msa.proj.\3', COPY),
    (_BLOCK + r'attention\.(?:self|relative_position_bias)\.'
     r'relative_position_bias_table$',
     _OUR_BLOCK + r'attn.w_msa.relative_position_bias_table', COPY),
    (_BLOCK + r'attention\.(?:self|relative_position_bias)\.'
     r'relative_position_index$',
     _OUR_BLOCK + r'attn.w_msa.relative_position_index', CHECK_INDEX),
    (_BLOCK + r'(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)$',
     _OUR_BLOCK + r'ffn.layers.0.0.\3', COPY),
    (_BLOCK + r'(?:output\.dense|mlp\.fc2)\.(weight|bias)$',
     _OUR_BLOCK + r'ffn.layers.1.\3', COPY),
    (r'^encoder\.layers\.(\d+)\.downsample\.reduction\.weight$',
     r'stages.\1.downsample.reduction.weight', UNFOLD_REDUCTION),
    (r'^encoder\.layers\.(\d+)\.downsample\.norm\.(weight|bias)$',
     r'stages.\1.downsample.norm.\2', UNFOLD_NORM),
    # SwinBackbone's per-stage output norms: stage1..4 -> norm0..3
    (r'^hidden_states_norms\.stage(\d+)\.(weight|bias)$',
     lambda m, ctx: f'norm{int(m[1]) - 1}.{m[2]}', COPY),
    # SwinModel's final norm: built, but SwinBackbone never applies it
    (r'^layernorm\.(weight|bias)$',
     'SwinModel final norm, never applied by SwinBackbone', IGNORE),
]

_STAGE = r'^encoder\.stages\.(\d+)\.layers\.(\d+)\.'


def _res_layer(m: re.Match) -> str:
    return f'layer{int(m[1]) + 1}.{m[2]}.'


_RESNET_RULES: List[Tuple[str, Repl, str]] = [
    (r'^embedder\.embedder\.convolution\.weight$', 'conv1.weight', COPY),
    (r'^embedder\.embedder\.normalization\.(\w+)$', r'bn1.\1', COPY),
    (_STAGE + r'shortcut\.convolution\.weight$',
     lambda m, ctx: _res_layer(m) + 'downsample.0.weight', COPY),
    (_STAGE + r'shortcut\.normalization\.(\w+)$',
     lambda m, ctx: _res_layer(m) + f'downsample.1.{m[3]}', COPY),
    (_STAGE + r'layer\.(\d+)\.convolution\.weight$',
     lambda m, ctx: _res_layer(m) + f'conv{int(m[3]) + 1}.weight', COPY),
    (_STAGE + r'layer\.(\d+)\.normalization\.(\w+)$',
     lambda m, ctx: _res_layer(m) + f'bn{int(m[3]) + 1}.{m[4]}', COPY),
]

_ENC = r'^encoder\.layers\.(\d+)\.'
# HF builds adapter_k/layer_k for backbone level k-1 (fine to coarse); ours
# index the FPN coarse to fine: lateral_convs[num_fpn - k].
_PIXEL_DECODER_RULES: List[Tuple[str, Repl, str]] = [
    (r'^input_projections\.(\d+)\.([01])\.(weight|bias)$',
     r'input_projs.\1.\2.\3', COPY),
    (r'^level_embed$', 'level_embed', COPY),
    (_ENC + r'self_attn\.(sampling_offsets|attention_weights|value_proj|'
     r'output_proj)\.(weight|bias)$', r'encoder.layers.\1.self_attn.\2.\3',
     COPY),
    (_ENC + r'self_attn_layer_norm\.(weight|bias)$',
     r'encoder.layers.\1.norm1.\2', COPY),
    (_ENC + r'(?:mlp\.)?fc1\.(weight|bias)$', r'encoder.layers.\1.ffn.fc1.\2',
     COPY),
    (_ENC + r'(?:mlp\.)?fc2\.(weight|bias)$', r'encoder.layers.\1.ffn.fc2.\2',
     COPY),
    (_ENC + r'final_layer_norm\.(weight|bias)$',
     r'encoder.layers.\1.norm2.\2', COPY),
    (r'^adapter_(\d+)\.([01])\.(weight|bias)$',
     lambda m, ctx: f'lateral_convs.{ctx.num_fpn - int(m[1])}.{m[2]}.{m[3]}',
     COPY),
    (r'^layer_(\d+)\.([01])\.(weight|bias)$',
     lambda m, ctx: f'output_convs.{ctx.num_fpn - int(m[1])}.{m[2]}.{m[3]}',
     COPY),
    (r'^mask_projection\.(weight|bias)$', r'mask_proj.\1', COPY),
]

_DEC = r'^decoder\.layers\.(\d+)\.'
# HF layer: cross_attn -> cross_attn_layer_norm -> self_attn ->
# self_attn_layer_norm -> fc1/fc2 -> final_layer_norm (post-norm), as ours:
# cross_attn -> norm1 -> self_attn -> norm2 -> ffn -> norm3.
_TRANSFORMER_RULES: List[Tuple[str, Repl, str]] = [
    (r'^queries_embedder\.weight$', 'query_embed.weight', COPY),
    (r'^queries_features\.weight$', 'query_feat.weight', COPY),
    (r'^level_embed\.weight$', 'level_embed.weight', COPY),
    (r'^input_projections\.(\d+)\.(weight|bias)$', r'input_projs.\1.\2',
     COPY),
    (_DEC + r'cross_attn\.(in_proj_weight|in_proj_bias)$',
     r'layers.\1.cross_attn.\2', COPY),
    (_DEC + r'cross_attn\.(?:out_proj|o_proj)\.(weight|bias)$',
     r'layers.\1.cross_attn.out_proj.\2', COPY),
    (_DEC + r'cross_attn_layer_norm\.(weight|bias)$', r'layers.\1.norm1.\2',
     COPY),
    (_DEC + r'self_attn\.q_proj\.(weight|bias)$',
     r'layers.\1.self_attn.in_proj_\2', Q),
    (_DEC + r'self_attn\.k_proj\.(weight|bias)$',
     r'layers.\1.self_attn.in_proj_\2', K),
    (_DEC + r'self_attn\.v_proj\.(weight|bias)$',
     r'layers.\1.self_attn.in_proj_\2', V),
    (_DEC + r'self_attn\.(?:out_proj|o_proj)\.(weight|bias)$',
     r'layers.\1.self_attn.out_proj.\2', COPY),
    (_DEC + r'self_attn_layer_norm\.(weight|bias)$', r'layers.\1.norm2.\2',
     COPY),
    (_DEC + r'(?:mlp\.)?fc1\.(weight|bias)$', r'layers.\1.ffn.fc1.\2', COPY),
    (_DEC + r'(?:mlp\.)?fc2\.(weight|bias)$', r'layers.\1.ffn.fc2.\2', COPY),
    (_DEC + r'final_layer_norm\.(weight|bias)$', r'layers.\1.norm3.\2', COPY),
    (r'^decoder\.layernorm\.(weight|bias)$', r'predictor.norm.\1', COPY),
    (r'^decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.(weight|bias)$',
     r'predictor.mask_embed.layers.\1.\2', COPY),
]

_TOP_RULES: List[Tuple[str, Repl, str]] = [
    (r'^class_predictor\.(weight|bias)$',
     OUR_TRANSFORMER + r'predictor.cls_embed.\1', COPY),
    # the loss's class weights (1, ..., 1, no_object_weight): config, not
    # weights; derived from no_object_weight instead
    (r'^criterion\.empty_weight$',
     'loss class weights; derived from no_object_weight', IGNORE),
]

Compiled = List[Tuple[re.Pattern, Repl, str]]


def _compile(rules: Sequence[Tuple[str, Repl, str]]) -> Compiled:
    return [(re.compile(p), r, op) for p, r, op in rules]


_BACKBONE_RULES: Dict[str, Compiled] = {
    'swin': _compile(_SWIN_RULES), 'resnet': _compile(_RESNET_RULES)}
# (HF prefix, our prefix, rules); None: the backbone's, by its type
_PARTS: List[Tuple[str, str, Optional[Compiled]]] = [
    (HF_BACKBONE, OUR_BACKBONE, None),
    (HF_PIXEL_DECODER, OUR_PIXEL_DECODER, _compile(_PIXEL_DECODER_RULES)),
    (HF_TRANSFORMER, OUR_TRANSFORMER, _compile(_TRANSFORMER_RULES)),
    ('', '', _compile(_TOP_RULES)),
]


@dataclass
class HFConversionContext:
    """What the rules need to know beyond a key."""

    backbone_type: str
    num_fpn: int
    window_size: Optional[int] = None


@dataclass
class HFConversionReport:
    """What a conversion did (HF keys on the left, ours on the right)."""

    mapped: Dict[str, str] = field(default_factory=dict)
    transformed: Dict[str, str] = field(default_factory=dict)  # ours -> how
    generated: List[str] = field(default_factory=list)
    ignored: Dict[str, str] = field(default_factory=dict)  # HF key -> why
    unexpected: List[str] = field(default_factory=list)  # HF keys, no rule
    missing: List[str] = field(default_factory=list)  # ours, not produced
    mismatched: List[str] = field(default_factory=list)  # shape problems
    warnings: List[str] = field(default_factory=list)

    def summary(self, verbose: bool = False) -> str:
        """Human-readable account; ``verbose`` lists every mapped key."""
        lines = [
            f'mapped {len(self.mapped)} HF keys to {len(set(self.mapped.values()))} '
            f'of ours ({len(self.transformed)} re-laid-out: fused q/k/v, '
            f'patch-merging order), generated {len(self.generated)}, '
            f'ignored {len(self.ignored)}']
        if verbose:
            lines += [f'  {k} -> {v}' for k, v in self.mapped.items()]
            lines += [f'  {k}: {how}' for k, how in self.transformed.items()]
            lines += [f'  generated {k}' for k in self.generated]
        for key, why in self.ignored.items():
            lines.append(f'  ignored {key} ({why})')
        for title, items in (('UNEXPECTED HF keys (no rule), dropped',
                              self.unexpected),
                             ('MISSING keys of our model', self.missing),
                             ('SHAPE MISMATCHES', self.mismatched),
                             ('warnings', self.warnings)):
            if items:
                lines.append(f'{title} ({len(items)}):')
                lines += [f'  {k}' for k in items]
        return '\n'.join(lines)


def mmseg_relative_position_index(window_size: int) -> Tensor:
    """mmseg ``WindowMSA``'s index into the bias table (square windows).

    The same as transformers' ``SwinRelativePositionBias`` index (and the
    original Swin's), so the table needs no reordering.
    """
    wh = ww = window_size
    seq1 = torch.arange(0, (2 * ww - 1) * wh, 2 * ww - 1)
    seq2 = torch.arange(0, ww)
    coords = (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    return (coords + coords.T).flip(1).contiguous()


def _unfold_reduction(weight: Tensor) -> Tensor:
    """HF ``[x00, x10, x01, x11]`` x C columns -> mmseg's unfold order."""
    out_ch, in_ch = weight.shape
    return weight.reshape(out_ch, 4, in_ch // 4)[:, [0, 2, 1, 3], :] \
        .transpose(1, 2).reshape(out_ch, in_ch)


def _unfold_norm(param: Tensor) -> Tensor:
    """HF ``[x00, x10, x01, x11]`` x C norm parameters -> unfold order."""
    return param.reshape(4, -1)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)


def is_hf_mask2former(state_dict: Mapping[str, Any]) -> bool:
    """True if the keys look like ``Mask2FormerForUniversalSegmentation``."""
    return _SIGNATURE in state_dict and _CLASS_HEAD in state_dict


def _not_mask2former_message(state_dict: Mapping[str, Any]) -> str:
    keys = list(state_dict)
    hint = ''
    if any(k.startswith('decode_head.') for k in keys):
        hint = (" It looks like an mmseg checkpoint: use '--from mmseg' "
                '(or load it directly).')
    elif _SIGNATURE in state_dict:
        hint = (' It has no class_predictor: a Mask2FormerModel, not a '
                'Mask2FormerForUniversalSegmentation.')
    elif any('transformer_module.decoder.mask_predictor' in k for k in keys):
        hint = (' Its keys carry another prefix than "model.": save the '
                'Mask2FormerForUniversalSegmentation itself.')
    elif any(k.startswith('model.pixel_level_module.decoder.fpn') or
             k.startswith('mask_embedder.') for k in keys):
        hint = ' It looks like MaskFormer (v1), which is a different model.'
    sample = ', '.join(keys[:3])
    return (f'not a transformers Mask2FormerForUniversalSegmentation state '
            f'dict: expected keys {_SIGNATURE!r} and {_CLASS_HEAD!r} '
            f'(first keys: {sample}).{hint}')


def _apply(rules: Compiled, key: str,
           ctx: HFConversionContext) -> Optional[Tuple[str, str]]:
    for pattern, repl, op in rules:
        m = pattern.search(key)
        if m is None:
            continue
        if op == IGNORE:
            return str(repl), op  # the reason
        new = repl(m, ctx) if callable(repl) else m.expand(repl)
        return new, op
    return None


def convert_hf_state_dict(state_dict: Mapping[str, Tensor],
                          derivation: HFConfigDerivation
                          ) -> Tuple['OrderedDict[str, Tensor]',
                                     HFConversionReport]:
    """Convert a transformers Mask2Former state dict to our model's keys.

    Args:
        state_dict: ``Mask2FormerForUniversalSegmentation`` weights.
        derivation: From ``derive_from_hf_config`` on the same model's
            ``config.json`` (backbone type, FPN levels, window size).

    Returns:
        Our ``EncoderDecoder`` state dict and a report. Keys without a rule
        are reported as unexpected, not raised; check the report (or use
        :func:`verify_against_model`).

    Raises:
        ValueError: not a Mask2Former state dict; q/k/v parts incomplete; a
            stored Swin relative position index differs from mmseg's.
    """
    if not is_hf_mask2former(state_dict):
        raise ValueError(_not_mask2former_message(state_dict))
    ctx = HFConversionContext(derivation.backbone_type, derivation.num_fpn,
                              derivation.window_size)
    report = HFConversionReport(warnings=list(derivation.warnings))
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    fused: Dict[str, Dict[str, Tensor]] = {}
    fused_src: Dict[str, List[str]] = {}
    stored_index: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        hit = None
        for hf_prefix, our_prefix, rules in _PARTS:
            if not key.startswith(hf_prefix):
                continue
            sub = key[len(hf_prefix):]
            if rules is None:  # backbone
                if derivation.backbone_type == 'swin':
                    sub = re.sub(r'^swin\.', '', sub)
                rules = _BACKBONE_RULES[derivation.backbone_type]
            res = _apply(rules, sub, ctx)
            if res is not None:
                hit = (our_prefix + res[0], res[1], our_prefix)
            break
        if hit is None:
            report.unexpected.append(key)
            continue
        new, op, our_prefix = hit
        if op == IGNORE:
            report.ignored[key] = new[len(our_prefix):]
            continue
        report.mapped[key] = new
        if op in (Q, K, V):
            fused.setdefault(new, {})[op] = value
            fused_src.setdefault(new, []).append(key)
        elif op == UNFOLD_REDUCTION:
            out[new] = _unfold_reduction(value)
            report.transformed[new] = 'patch-merging columns to unfold order'
        elif op == UNFOLD_NORM:
            out[new] = _unfold_norm(value)
            report.transformed[new] = 'patch-merging norm to unfold order'
        elif op == CHECK_INDEX:
            stored_index[new] = value
        else:
            out[new] = value
    for new, parts in fused.items():
        if set(parts) != {Q, K, V}:
            raise ValueError(
                f'{new}: found only {sorted(parts)} of q/k/v in '
                f'{fused_src[new]}; the state dict is incomplete')
        out[new] = torch.cat([parts[Q], parts[K], parts[V]], 0)
        report.transformed[new] = 'fused q/k/v (' + ', '.join(
            fused_src[new]) + ')'
    if derivation.backbone_type == 'swin':
        index = mmseg_relative_position_index(derivation.window_size)
        for key in [k for k in out if k.endswith('relative_position_bias_table')]:
            idx_key = key[:-len('bias_table')] + 'index'
            if idx_key in stored_index and not torch.equal(
                    stored_index[idx_key].long(), index):
                raise ValueError(
                    f'{idx_key}: the stored HF relative position index differs '
                    f"from mmseg's for window_size={derivation.window_size}; "
                    f'the bias table layout would not carry over')
            out[idx_key] = index.clone()
            report.generated.append(idx_key)
    return out, report


def verify_against_model(state_dict: Mapping[str, Tensor],
                         model: torch.nn.Module,
                         report: Optional[HFConversionReport] = None
                         ) -> List[str]:
    """Compare converted keys and shapes with a model built from the config.

    Fills ``report.missing`` / ``report.mismatched`` (and ``unexpected`` with
    converted keys the model lacks) and returns every problem as a line; an
    empty list means ``model.load_state_dict(state_dict, strict=True)`` works.
    """
    target = model.state_dict()
    problems: List[str] = []
    missing = [k for k in target if k not in state_dict]
    extra = [k for k in state_dict if k not in target]
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}'
        f'{_field_hint(k)}'
        for k, v in state_dict.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if report is not None:
        report.missing += missing
        report.unexpected += extra
        report.mismatched += mismatched
    problems += [f'missing: {k}' for k in missing]
    problems += [f'not in model: {k}' for k in extra]
    problems += [f'shape: {m}' for m in mismatched]
    return problems


_FIELD_HINTS = [
    ('query_embed', 'num_queries / hidden_dim'),
    ('query_feat', 'num_queries / hidden_dim'),
    ('cls_embed', 'id2label (num_labels) / hidden_dim'),
    ('mask_embed', 'hidden_dim / mask_feature_size'),
    ('pixel_decoder.encoder', 'feature_size / encoder_feedforward_dim / '
     'num_attention_heads'),
    ('pixel_decoder', 'feature_size / mask_feature_size / backbone channels'),
    ('transformer_decoder', 'hidden_dim / dim_feedforward / feature_size'),
    ('backbone', 'backbone_config'),
]


def _field_hint(key: str) -> str:
    for part, hint in _FIELD_HINTS:
        if part in key:
            return f' (HF config: {hint})'
    return ''


def build_model(derivation: HFConfigDerivation) -> torch.nn.Module:
    """Our ``EncoderDecoder`` from a derivation (random init, eval mode)."""
    import mmseg.models  # noqa: F401  (registers backbones and segmentors)
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import m2f_plugin  # noqa: F401  (registers M2FHead)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(derivation.model).eval()


@dataclass
class HFCheckpoint:
    """A transformers checkpoint read from disk."""

    state_dict: 'OrderedDict[str, Tensor]'
    config: Dict[str, Any]
    preprocessor: Optional[Dict[str, Any]]
    files: List[str]


_WEIGHT_FILES = ['model.safetensors', 'model.safetensors.index.json',
                 'pytorch_model.bin', 'pytorch_model.bin.index.json']


def _read_weights(path: str) -> Dict[str, Tensor]:
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover
            raise ImportError('reading .safetensors needs the safetensors '
                              'package (pip install safetensors)') from err
        return load_file(path, device='cpu')
    # third-party files: no arbitrary unpickling
    obj = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(obj, dict) and 'state_dict' in obj and isinstance(
            obj['state_dict'], dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict):
        raise ValueError(f'{path} holds no state dict')
    return obj


def _read_json(path: Optional[str]) -> Optional[Dict[str, Any]]:
    if path is None or not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_hf_checkpoint(src: str, config_path: Optional[str] = None
                       ) -> HFCheckpoint:
    """Read weights and ``config.json`` written by ``save_pretrained``.

    Args:
        src: The ``save_pretrained`` directory, or one weights file
            (``.safetensors``, ``.bin``, or a ``*.index.json`` of shards).
        config_path: ``config.json``; default: next to the weights.

    Returns:
        State dict (shards merged), config, preprocessor config (or None) and
        the files read.

    Raises:
        FileNotFoundError: no weights or no config found.
    """
    if osp.isdir(src):
        weights = next((osp.join(src, f) for f in _WEIGHT_FILES
                        if osp.isfile(osp.join(src, f))), None)
        if weights is None:
            raise FileNotFoundError(
                f'{src}: none of {_WEIGHT_FILES} (a save_pretrained directory '
                f'is expected)')
        folder = src
    else:
        if not osp.isfile(src):
            raise FileNotFoundError(src)
        weights, folder = src, osp.dirname(osp.abspath(src))
    config_path = config_path or osp.join(folder, 'config.json')
    config = _read_json(config_path)
    if config is None:
        raise FileNotFoundError(
            f'{config_path}: no config.json (pass --hf-config); the model '
            f'config is needed to derive ours')
    files = [weights]
    if weights.endswith('.index.json'):
        index = _read_json(weights)
        shards = sorted(set(index['weight_map'].values()))
        files = [osp.join(osp.dirname(weights), s) for s in shards]
    state_dict: 'OrderedDict[str, Tensor]' = OrderedDict()
    for path in files:
        state_dict.update(_read_weights(path))
    preprocessor = _read_json(osp.join(folder, 'preprocessor_config.json'))
    return HFCheckpoint(state_dict, config, preprocessor,
                        files + [config_path])


def convert_hf_checkpoint(src: str, config_path: Optional[str] = None,
                          verify: bool = True, msda_impl: str = 'mmcv'
                          ) -> Tuple['OrderedDict[str, Tensor]',
                                     HFConfigDerivation, HFConversionReport]:
    """Load, derive our config, convert and (optionally) verify shapes.

    Raises:
        ValueError: not a Mask2Former, unsupported config field, or (with
            ``verify``) keys/shapes that do not fit the derived model.
    """
    ckpt = load_hf_checkpoint(src, config_path)
    derivation = derive_from_hf_config(ckpt.config, ckpt.preprocessor,
                                       msda_impl=msda_impl)
    converted, report = convert_hf_state_dict(ckpt.state_dict, derivation)
    if verify:
        problems = verify_against_model(converted, build_model(derivation),
                                        report)
        if problems:
            head = '\n  '.join(problems[:20])
            more = f'\n  ... {len(problems) - 20} more' if len(
                problems) > 20 else ''
            raise ValueError(
                f'the converted weights do not fit the model derived from '
                f'{config_path or "config.json"} ({len(problems)} problems):'
                f'\n  {head}{more}')
    return converted, derivation, report


