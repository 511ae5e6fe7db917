"""Derive m2f_plugin/mmseg configs from a transformers Mask2Former config.json.

Reads the plain JSON written by ``Mask2FormerForUniversalSegmentation.
save_pretrained`` (no ``transformers`` import), fills in transformers' defaults
for absent fields, and maps every field to our model:

* backbone ``swin`` -> mmseg ``SwinTransformer``, ``resnet`` -> mmseg ``ResNet``;
* pixel decoder, transformer decoder and losses -> ``M2FHead``.

A field our model cannot represent raises :class:`UnsupportedHFConfig` naming
the field; a field that only matters for training (dropout, auxiliary losses)
and differs is reported as a warning. ``hf_config_file`` turns the derivation
into an mmengine ``Config`` and its ``.py`` file.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ['HFConfigDerivation', 'UnsupportedHFConfig', 'derive_from_hf_config',
           'hf_num_labels', 'MASK2FORMER_DEFAULTS', 'SWIN_DEFAULTS',
           'RESNET_DEFAULTS', 'DATASETS']

# transformers 4.x/5.x defaults (Mask2FormerConfig, SwinConfig, ResNetConfig)
# for fields config.json may leave out.
MASK2FORMER_DEFAULTS: Dict[str, Any] = dict(
    feature_size=256, mask_feature_size=256, hidden_dim=256,
    encoder_feedforward_dim=1024, activation_function='relu', encoder_layers=6,
    decoder_layers=10, num_attention_heads=8, dropout=0.0,
    dim_feedforward=2048, pre_norm=False, enforce_input_projection=False,
    common_stride=4, ignore_value=255, num_queries=100, no_object_weight=0.1,
    class_weight=2.0, mask_weight=5.0, dice_weight=5.0, train_num_points=12544,
    oversample_ratio=3.0, importance_sample_ratio=0.75,
    use_auxiliary_loss=True, feature_strides=[4, 8, 16, 32],
    use_timm_backbone=False, backbone=None)
SWIN_DEFAULTS: Dict[str, Any] = dict(
    image_size=224, patch_size=4, num_channels=3, embed_dim=96,
    depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
    mlp_ratio=4.0, qkv_bias=True, hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, drop_path_rate=0.1, hidden_act='gelu',
    use_absolute_embeddings=False, layer_norm_eps=1e-5)
RESNET_DEFAULTS: Dict[str, Any] = dict(
    num_channels=3, embedding_size=64, hidden_sizes=[256, 512, 1024, 2048],
    depths=[3, 4, 6, 3], layer_type='bottleneck', hidden_act='relu',
    downsample_in_first_stage=False, downsample_in_bottleneck=False)

# mmseg ResNet's arch_settings: (block, stage blocks) -> depth
_RESNET_DEPTHS = {('basic', (2, 2, 2, 2)): 18, ('basic', (3, 4, 6, 3)): 34,
                  ('bottleneck', (3, 4, 6, 3)): 50,
                  ('bottleneck', (3, 4, 23, 3)): 101,
                  ('bottleneck', (3, 8, 36, 3)): 152}

# HF's pixel decoder hard-codes these (modeling_mask2former.py:
# Mask2FormerPixelDecoder.num_feature_levels = 3, n_points=4, GroupNorm(32)).
HF_NUM_LEVELS = 3
HF_NUM_POINTS = 4
HF_GN_GROUPS = 32

# Dataset base configs guessed from the number of classes (mmseg's names):
# base config, training crop, dataset class.
DATASETS: Dict[int, Tuple[str, Tuple[int, int], str]] = {
    150: ('mmseg::_base_/datasets/ade20k.py', (512, 512), 'ADE20KDataset'),
    19: ('mmseg::_base_/datasets/cityscapes.py', (512, 1024),
         'CityscapesDataset'),
    171: ('mmseg::_base_/datasets/coco-stuff164k.py', (512, 512),
          'COCOStuffDataset'),
}


class UnsupportedHFConfig(ValueError):
    """The HF config uses an option our model cannot represent."""


@dataclass
class HFConfigDerivation:
    """Our model config derived from an HF config, and what did not carry over.

    Attributes:
        model: ``EncoderDecoder`` config dict (backbone + ``M2FHead``).
        data_preprocessor: ``SegDataPreProcessor`` config dict.
        backbone_type: ``'swin'`` or ``'resnet'``.
        num_classes: Classes K (``len(id2label)``).
        class_names: Class names in label order.
        num_fpn: Backbone levels handled by the FPN (not the encoder).
        warnings: Differences that only matter for training, or that the user
            should know about.
    """

    model: Dict[str, Any]
    data_preprocessor: Dict[str, Any]
    backbone_type: str
    num_classes: int
    class_names: List[str]
    num_fpn: int
    window_size: Optional[int] = None
    warnings: List[str] = field(default_factory=list)


def _with_defaults(cfg: Mapping[str, Any],
                   defaults: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(defaults)
    out.update({k: v for k, v in cfg.items() if v is not None or k not in out})
    return out


def hf_num_labels(cfg: Mapping[str, Any]) -> int:
    """Classes of an HF config: ``len(id2label)`` (``num_labels`` if given)."""
    if cfg.get('id2label'):
        return len(cfg['id2label'])
    if cfg.get('num_labels') is not None:
        return int(cfg['num_labels'])
    return 2  # PreTrainedConfig's default


def _class_names(cfg: Mapping[str, Any], num: int) -> List[str]:
    id2label = cfg.get('id2label') or {}
    return [str(id2label.get(str(i), id2label.get(i, f'class_{i}')))
            for i in range(num)]


def _class_order_warnings(names: Sequence[str], dataset: str) -> List[str]:
    """Warn if HF's id2label differs from the guessed mmseg dataset's."""
    try:
        import mmseg.datasets as datasets
        ref = list(getattr(datasets, dataset).METAINFO['classes'])
    except (ImportError, AttributeError, KeyError):  # pragma: no cover
        return []

    def norm(name: str) -> str:
        return ' '.join(name.replace('_', ' ').replace('-', ' ').lower().split())

    diff = [i for i, (a, b) in enumerate(zip(names, ref)) if norm(a) != norm(b)]
    if not diff:
        return []
    shown = ', '.join(f'{i}: {names[i]!r} vs {ref[i]!r}' for i in diff[:5])
    return [f'id2label differs from mmseg {dataset} classes at {len(diff)} of '
            f'{len(ref)} indices ({shown}{", ..." if len(diff) > 5 else ""}); '
            f'the model predicts id2label order: check the class mapping '
            f'before trusting metrics']


def _require(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise UnsupportedHFConfig(f'HF config field {field_name!r}: {msg}')


def _check_out_features(bb: Mapping[str, Any], num_stages: int,
                        prefix: str) -> None:
    want = [f'stage{i}' for i in range(1, num_stages + 1)]
    out_features = bb.get('out_features')
    out_indices = bb.get('out_indices')
    if out_features is not None:
        _require(list(out_features) == want, f'{prefix}.out_features',
                 f'must be {want} (every stage, fine to coarse), got '
                 f'{out_features}')
    elif out_indices is not None:
        _require(list(out_indices) == list(range(1, num_stages + 1)),
                 f'{prefix}.out_indices',
                 f'must be {list(range(1, num_stages + 1))}, got {out_indices}')


def _swin_backbone(bb: Dict[str, Any], warnings: List[str]
                   ) -> Tuple[Dict[str, Any], List[int], List[int]]:
    p = 'backbone_config'
    depths = list(bb['depths'])
    num_heads = list(bb['num_heads'])
    _require(len(depths) == len(num_heads), f'{p}.num_heads',
             f'{len(num_heads)} entries for {len(depths)} stages')
    _check_out_features(bb, len(depths), p)
    _require(not bb['use_absolute_embeddings'], f'{p}.use_absolute_embeddings',
             'absolute position embeddings are not converted (HF adds them '
             'at one image size; published Mask2Former Swin models do not use '
             'them)')
    _require(bb['hidden_act'] == 'gelu', f'{p}.hidden_act',
             f"mmseg's SwinTransformer uses exact GELU, got "
             f"{bb['hidden_act']!r}")
    _require(math.isclose(bb['layer_norm_eps'], 1e-5), f'{p}.layer_norm_eps',
             f"mmseg's SwinTransformer LayerNorms use eps=1e-5, got "
             f"{bb['layer_norm_eps']}")
    mlp_ratio = bb['mlp_ratio']
    _require(float(mlp_ratio * bb['embed_dim']).is_integer(), f'{p}.mlp_ratio',
             f'{mlp_ratio} x embed_dim is not an integer')
    if bb['hidden_dropout_prob']:
        warnings.append(
            f"{p}.hidden_dropout_prob={bb['hidden_dropout_prob']}: mapped to "
            "SwinTransformer drop_rate, which also drops inside the MLP "
            "(training only; inference is unaffected)")
    window = int(bb['window_size'])
    patch = int(bb['patch_size'])
    embed = int(bb['embed_dim'])
    backbone = dict(
        type='SwinTransformer',
        pretrain_img_size=bb['image_size'],
        in_channels=bb['num_channels'],
        embed_dims=embed,
        patch_size=patch,
        window_size=window,
        mlp_ratio=mlp_ratio,
        depths=depths,
        num_heads=num_heads,
        strides=[patch] + [2] * (len(depths) - 1),
        out_indices=list(range(len(depths))),
        qkv_bias=bool(bb['qkv_bias']),
        qk_scale=None,
        patch_norm=True,
        drop_rate=float(bb['hidden_dropout_prob']),
        attn_drop_rate=float(bb['attention_probs_dropout_prob']),
        drop_path_rate=float(bb['drop_path_rate']),
        use_abs_pos_embed=False,
        act_cfg=dict(type='GELU'),
        norm_cfg=dict(type='LN'),
        with_cp=False,
        frozen_stages=-1,
        init_cfg=None)
    channels = [embed * 2**i for i in range(len(depths))]
    strides = [patch * 2**i for i in range(len(depths))]
    return backbone, channels, strides


def _resnet_backbone(bb: Dict[str, Any], warnings: List[str]
                     ) -> Tuple[Dict[str, Any], List[int], List[int]]:
    p = 'backbone_config'
    depths = tuple(bb['depths'])
    layer_type = bb['layer_type']
    _check_out_features(bb, len(depths), p)
    _require(bb['hidden_act'] == 'relu', f'{p}.hidden_act',
             f"mmseg's ResNet uses ReLU, got {bb['hidden_act']!r}")
    depth = _RESNET_DEPTHS.get((layer_type, depths))
    _require(depth is not None, f'{p}.depths',
             f'({layer_type!r}, {list(depths)}) is none of mmseg ResNet\'s '
             f'depths {sorted({d for d in _RESNET_DEPTHS.values()})} '
             f'({", ".join(f"{t} {list(b)}" for t, b in _RESNET_DEPTHS)})')
    expansion = 4 if layer_type == 'bottleneck' else 1
    hidden = list(bb['hidden_sizes'])
    base = hidden[0] // expansion
    want = [base * expansion * 2**i for i in range(len(depths))]
    _require(hidden == want and hidden[0] % expansion == 0,
             f'{p}.hidden_sizes',
             f'mmseg ResNet doubles channels per stage from base_channels '
             f'x {expansion}: expected {want}, got {hidden}')
    first_stride = 2 if bb['downsample_in_first_stage'] else 1
    backbone = dict(
        type='ResNet',
        depth=depth,
        in_channels=bb['num_channels'],
        stem_channels=int(bb['embedding_size']),
        base_channels=base,
        num_stages=len(depths),
        strides=[first_stride] + [2] * (len(depths) - 1),
        dilations=[1] * len(depths),
        out_indices=list(range(len(depths))),
        # HF: downsample_in_bottleneck puts the stride in the first 1x1 conv
        # (mmseg 'caffe'), otherwise in the 3x3 conv (mmseg 'pytorch').
        style='caffe' if bb['downsample_in_bottleneck'] else 'pytorch',
        deep_stem=False,
        avg_down=False,
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=False),
        norm_eval=False,
        contract_dilation=False,
        init_cfg=None)
    strides = [4 * first_stride * 2**i for i in range(len(depths))]
    return backbone, hidden, strides


def _data_preprocessor(preprocessor: Optional[Mapping[str, Any]],
                       crop_size: Optional[Tuple[int, int]],
                       warnings: List[str]) -> Dict[str, Any]:
    mean = [123.675, 116.28, 103.53]
    std = [58.395, 57.12, 57.375]
    if preprocessor:
        scale = preprocessor.get('rescale_factor', 1 / 255) \
            if preprocessor.get('do_rescale', True) else 1.0
        if preprocessor.get('do_normalize', True):
            m = preprocessor.get('image_mean', [0.485, 0.456, 0.406])
            s = preprocessor.get('image_std', [0.229, 0.224, 0.225])
            mean = [round(v / scale, 6) for v in m]
            std = [round(v / scale, 6) for v in s]
        else:
            mean = [0.0] * 3
            std = [round(1 / scale, 6)] * 3
    else:
        warnings.append('no preprocessor_config.json: using ImageNet mean/std '
                        '(what the published Mask2Former models use)')
    cfg: Dict[str, Any] = dict(
        type='SegDataPreProcessor', mean=mean, std=std, bgr_to_rgb=True,
        pad_val=0, seg_pad_val=255)
    if crop_size is not None:
        cfg['size'] = tuple(crop_size)
    cfg['test_cfg'] = dict(size_divisor=32)
    return cfg


def derive_from_hf_config(hf_config: Mapping[str, Any],
                          preprocessor: Optional[Mapping[str, Any]] = None,
                          msda_impl: str = 'mmcv') -> HFConfigDerivation:
    """Build our ``EncoderDecoder`` config from an HF Mask2Former config.

    Args:
        hf_config: The parsed ``config.json`` of a
            ``Mask2FormerForUniversalSegmentation``.
        preprocessor: The parsed ``preprocessor_config.json`` (mean/std), or
            None for ImageNet statistics.
        msda_impl: Deformable-attention kernel of our pixel decoder.

    Returns:
        The derivation (model config, data preprocessor, warnings).

    Raises:
        UnsupportedHFConfig: a field our model cannot represent (named).
    """
    model_type = hf_config.get('model_type')
    _require(model_type == 'mask2former', 'model_type',
             f"expected 'mask2former', got {model_type!r} (is this a "
             f'Mask2Former config.json?)')
    cfg = _with_defaults(hf_config, MASK2FORMER_DEFAULTS)
    warnings: List[str] = []

    # ---- backbone
    _require(not cfg['use_timm_backbone'], 'use_timm_backbone',
             'timm backbones are not supported (only HF Swin and ResNet)')
    bb_raw = cfg.get('backbone_config')
    if bb_raw is None:
        _require(False, 'backbone_config',
                 f"missing (backbone={cfg.get('backbone')!r}); HF's default "
                 f'would be a randomly initialised Swin, not a checkpoint')
    bb_type = bb_raw.get('model_type')
    if bb_type == 'swin':
        bb = _with_defaults(bb_raw, SWIN_DEFAULTS)
        backbone, in_channels, strides = _swin_backbone(bb, warnings)
        window = int(bb['window_size'])
    elif bb_type == 'resnet':
        bb = _with_defaults(bb_raw, RESNET_DEFAULTS)
        backbone, in_channels, strides = _resnet_backbone(bb, warnings)
        window = None
    else:
        raise UnsupportedHFConfig(
            f"HF config field 'backbone_config.model_type': {bb_type!r} is not "
            f"supported (only 'swin' -> mmseg SwinTransformer and 'resnet' -> "
            f'mmseg ResNet)')

    # ---- pixel decoder
    num_inputs = len(in_channels)
    _require(num_inputs >= HF_NUM_LEVELS, 'backbone_config.depths',
             f'HF needs at least {HF_NUM_LEVELS} backbone levels, got '
             f'{num_inputs}')
    hf_strides = list(cfg['feature_strides'])
    if hf_strides != strides:
        warnings.append(
            f'feature_strides={hf_strides} differs from the backbone\'s real '
            f'strides {strides}; HF only uses it to count FPN levels')
    # HF: num_fpn_levels = log2(min stride of the 3 encoder levels) -
    # log2(common_stride); lateral convs take features[:num_fpn_levels].
    hf_num_fpn = int(math.log2(min(hf_strides[-HF_NUM_LEVELS:])) -
                     math.log2(cfg['common_stride']))
    num_fpn = num_inputs - HF_NUM_LEVELS
    _require(hf_num_fpn == num_fpn, 'common_stride',
             f"common_stride={cfg['common_stride']} with feature_strides="
             f'{hf_strides} gives {hf_num_fpn} FPN levels; our pixel decoder '
             f'puts every backbone level not in the encoder into the FPN '
             f'({num_fpn})')
    feature_size = int(cfg['feature_size'])
    _require(feature_size % HF_GN_GROUPS == 0, 'feature_size',
             f'must be divisible by {HF_GN_GROUPS} (HF GroupNorm groups)')
    heads = int(cfg['num_attention_heads'])
    _require(cfg['activation_function'] == 'relu', 'activation_function',
             f"our decoder FFN uses ReLU, got {cfg['activation_function']!r}")
    _require(not cfg['pre_norm'], 'pre_norm',
             'pre-norm decoder layers are not implemented (ours are post-norm)')
    hidden_dim = int(cfg['hidden_dim'])
    _require(not (cfg['enforce_input_projection'] and
                  feature_size == hidden_dim), 'enforce_input_projection',
             'our decoder has a 1x1 input projection only when feature_size '
             '!= hidden_dim')
    _require(int(cfg['decoder_layers']) >= 1, 'decoder_layers',
             'must be >= 1 (HF builds decoder_layers - 1 layers)')
    if not cfg['use_auxiliary_loss']:
        warnings.append('use_auxiliary_loss=False: our head always supervises '
                        'every prediction set (training only)')
    if cfg['dropout']:
        warnings.append(f"dropout={cfg['dropout']} (training only)")

    num_classes = hf_num_labels(hf_config)
    class_names = _class_names(hf_config, num_classes)
    dataset = DATASETS.get(num_classes)
    if dataset:
        warnings += _class_order_warnings(class_names, dataset[2])
    data_preprocessor = _data_preprocessor(
        preprocessor, dataset[1] if dataset else None, warnings)
    head = dict(
        type='M2FHead',
        in_channels=in_channels,
        strides=strides,
        feat_channels=feature_size,
        out_channels=int(cfg['mask_feature_size']),
        num_classes=num_classes,
        num_queries=int(cfg['num_queries']),
        align_corners=False,
        ignore_index=int(cfg['ignore_value']),
        pixel_decoder=dict(
            type='M2FPixelDecoder',
            num_levels=HF_NUM_LEVELS,
            num_layers=int(cfg['encoder_layers']),
            num_heads=heads,
            num_points=HF_NUM_POINTS,
            ffn_dims=int(cfg['encoder_feedforward_dim']),
            dropout=float(cfg['dropout']),
            num_groups=HF_GN_GROUPS,
            msda_impl=msda_impl),
        transformer_decoder=dict(
            type='M2FMaskedTransformerDecoder',
            embed_dims=hidden_dim,
            num_layers=int(cfg['decoder_layers']) - 1,
            num_heads=heads,
            ffn_dims=int(cfg['dim_feedforward']),
            dropout=float(cfg['dropout'])),
        loss_cls=dict(type='M2FClassLoss',
                      no_object_weight=float(cfg['no_object_weight']),
                      loss_weight=float(cfg['class_weight'])),
        loss_mask=dict(type='M2FPointBCELoss',
                       loss_weight=float(cfg['mask_weight'])),
        loss_dice=dict(type='M2FPointDiceLoss', eps=1.0,
                       loss_weight=float(cfg['dice_weight'])),
        matcher=dict(type='M2FHungarianMatcher',
                     cost_class=float(cfg['class_weight']),
                     cost_mask=float(cfg['mask_weight']),
                     cost_dice=float(cfg['dice_weight']),
                     num_points=int(cfg['train_num_points'])),
        num_points=int(cfg['train_num_points']),
        oversample_ratio=float(cfg['oversample_ratio']),
        importance_sample_ratio=float(cfg['importance_sample_ratio']))
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=copy.deepcopy(data_preprocessor),
        backbone=backbone,
        decode_head=head,
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))
    return HFConfigDerivation(
        model=model, data_preprocessor=data_preprocessor,
        backbone_type=bb_type, num_classes=num_classes,
        class_names=class_names, num_fpn=num_fpn,
        window_size=window, warnings=warnings)
