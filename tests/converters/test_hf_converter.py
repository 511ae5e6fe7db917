"""transformers Mask2Former -> ours: same weights, same outputs.

Tiny random HF models (Swin, ResNet bottleneck, ResNet basic) are saved with
``save_pretrained``, converted, and compared with our model built from the
derived config, feeding both the same normalised pixels (no preprocessing).
"""
from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from m2f_plugin.converters import (
    UnsupportedHFConfig,
    convert_hf_checkpoint,
    convert_hf_state_dict,
    convert_mmseg_state_dict,
    derive_from_hf_config,
    load_hf_checkpoint,
)
from m2f_plugin.converters.hf_keys import (
    _unfold_norm,
    _unfold_reduction,
    build_model,
    mmseg_relative_position_index,
)
from tests.converters import (
    BACKBONES,
    hf_prediction_sets,
    rel_err,
    tiny_hf_config,
    tiny_hf_model,
)
from tests.helpers import prediction_sets

pytest.importorskip('transformers')

TOL = 1e-4
# (B, H, W): one odd size (HF and mmseg pad patches/windows/merging alike),
# one square
INPUTS = [(2, 98, 138), (1, 128, 128)]


@pytest.fixture(scope='module', params=list(BACKBONES))
def pair(request, tmp_path_factory):
    """(name, HF model, our model, derivation, report), converted via disk."""
    name = request.param
    hf = tiny_hf_model(name, seed=0)
    path = tmp_path_factory.mktemp(f'hf_{name}')
    hf.save_pretrained(path)
    converted, derivation, report = convert_hf_checkpoint(str(path))
    ours = build_model(derivation)
    ours.load_state_dict(converted, strict=True)
    return name, hf, ours.eval(), derivation, report


def _pixels(b: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_report_is_clean(pair):
    name, hf, ours, derivation, report = pair
    assert not report.unexpected and not report.missing
    assert not report.mismatched
    expect_ignored = {'criterion.empty_weight'}
    if name == 'swin':
        expect_ignored |= {
            'model.pixel_level_module.encoder.swin.layernorm.weight',
            'model.pixel_level_module.encoder.swin.layernorm.bias'}
    assert set(report.ignored) == expect_ignored
    # every HF parameter/buffer was either mapped or ignored
    assert len(report.mapped) + len(report.ignored) == len(hf.state_dict())


@pytest.mark.parametrize('shape', INPUTS)
def test_backbone_features_match(pair, shape):
    name, hf, ours, _, _ = pair
    x = _pixels(*shape)
    with torch.no_grad():
        ref = hf.model.pixel_level_module.encoder(x).feature_maps
        out = ours.backbone(x)
    assert len(out) == len(ref) == 4
    for level, (a, b) in enumerate(zip(out, ref)):
        assert a.shape == b.shape, level
        assert rel_err(a, b) < TOL, (name, level, rel_err(a, b))


@pytest.mark.parametrize('shape', INPUTS)
def test_all_prediction_sets_match(pair, shape):
    """Class and mask logits of every set (initial queries + each layer)."""
    name, hf, ours, derivation, _ = pair
    x = _pixels(*shape)
    with torch.no_grad():
        hf_cls, hf_masks = hf_prediction_sets(
            hf(pixel_values=x, output_auxiliary_logits=True))
        cls, masks = prediction_sets(ours.decode_head(ours.extract_feat(x)))
    num_layers = derivation.model['decode_head']['transformer_decoder'][
        'num_layers']
    assert len(cls) == len(hf_cls) == len(masks) == len(hf_masks) == \
        num_layers + 1 == hf.config.decoder_layers
    errs = []
    for i, (a, b, am, bm) in enumerate(zip(cls, hf_cls, masks, hf_masks)):
        assert a.shape == b.shape and am.shape == bm.shape
        errs.append((rel_err(a, b), rel_err(am, bm)))
    assert max(max(e) for e in errs) < TOL, (name, shape, errs)


@pytest.mark.parametrize('shape', INPUTS)
def test_semantic_maps_match(pair, shape):
    """ours: encode_decode; HF: softmax(cls)[..., :-1] x sigmoid(up(mask))."""
    name, hf, ours, _, _ = pair
    b, h, w = shape
    x = _pixels(*shape, seed=2)
    metas = [dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w))] * b
    with torch.no_grad():
        out = hf(pixel_values=x)
        masks = torch.nn.functional.interpolate(
            out.masks_queries_logits, (h, w), mode='bilinear',
            align_corners=False).sigmoid()
        ref = torch.einsum('bqk,bqhw->bkhw',
                           out.class_queries_logits.softmax(-1)[..., :-1],
                           masks)
        seg = ours.encode_decode(x, metas)
    assert seg.shape == ref.shape == (b, 5, h, w)
    assert rel_err(seg, ref) < TOL, (name, rel_err(seg, ref))
    # (random weights: one class tends to win everywhere, so the logits
    # comparison above is what carries this test)
    assert torch.equal(seg.argmax(1), ref.argmax(1))


def test_heads_match_on_same_features(pair):
    """Pixel decoder + transformer decoder alone, on random backbone maps."""
    name, hf, ours, derivation, _ = pair
    channels = derivation.model['decode_head']['in_channels']
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(2, c, 40 // 2**i, 24 // 2**i, generator=g)
             for i, c in enumerate(channels)]
    with torch.no_grad():
        pix = hf.model.pixel_level_module.decoder(feats)
        dec = hf.model.transformer_module(
            multi_scale_features=pix.multi_scale_features,
            mask_features=pix.mask_features)
        hf_cls = [hf.class_predictor(s.transpose(0, 1))
                  for s in dec.intermediate_hidden_states]
        hf_masks = dec.masks_queries_logits
        mask_features, memories = ours.decode_head.pixel_decoder(feats)
        cls, masks = prediction_sets(ours.decode_head(feats))
    assert rel_err(mask_features, pix.mask_features) < TOL
    for a, b in zip(memories, pix.multi_scale_features):
        assert rel_err(a, b) < TOL
    assert len(cls) == len(hf_cls) == hf.config.decoder_layers
    for a, b in zip(cls, hf_cls):
        assert rel_err(a, b) < TOL, name
    for a, b in zip(masks, hf_masks):
        assert rel_err(a, b) < TOL, name


def test_in_memory_layout_converts_the_same(pair, tmp_path):
    """transformers 5's in-memory names (swin.encoder, q_proj, mlp.fc1) and
    the saved (Hub) names give the same converted weights."""
    name, hf, ours, derivation, _ = pair
    converted, report = convert_hf_state_dict(hf.state_dict(), derivation)
    assert not report.unexpected
    target = ours.state_dict()
    assert set(converted) == set(target)
    for k, v in converted.items():
        assert torch.equal(v, target[k]), k


def test_sharded_and_bin_checkpoints(tmp_path):
    hf = tiny_hf_model('resnet18', seed=4)
    hf.save_pretrained(tmp_path / 'sharded', max_shard_size='200KB')
    assert (tmp_path / 'sharded' / 'model.safetensors.index.json').exists()
    sharded = load_hf_checkpoint(str(tmp_path / 'sharded'))
    assert len(sharded.files) > 2
    bin_path = tmp_path / 'weights.bin'
    torch.save(hf.state_dict(), bin_path)
    single = load_hf_checkpoint(str(bin_path),
                                str(tmp_path / 'sharded' / 'config.json'))
    a, _, _ = convert_hf_checkpoint(str(tmp_path / 'sharded'))
    b, _ = convert_hf_state_dict(single.state_dict,
                                 derive_from_hf_config(single.config))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- layouts


def test_patch_merging_reorder_matches_modules():
    """HF SwinPatchMerging == mmseg PatchMerging after the reorder."""
    from mmseg.models.utils.embed import PatchMerging
    from transformers.models.swin.modeling_swin import SwinPatchMerging
    torch.manual_seed(0)
    c = 6
    hf = SwinPatchMerging(c)
    torch.nn.init.normal_(hf.norm.weight)
    torch.nn.init.normal_(hf.norm.bias)
    ours = PatchMerging(c, 2 * c, norm_cfg=dict(type='LN'))
    with torch.no_grad():
        ours.reduction.weight.copy_(_unfold_reduction(hf.reduction.weight))
        ours.norm.weight.copy_(_unfold_norm(hf.norm.weight))
        ours.norm.bias.copy_(_unfold_norm(hf.norm.bias))
        x = torch.randn(2, 7 * 5, c)  # odd sizes: both pad bottom/right
        ref = hf(x, (7, 5))
        out, size = ours(x, (7, 5))
    assert size == (4, 3)
    assert rel_err(out, ref) < 1e-6


@pytest.mark.parametrize('window', [4, 7, 12])
def test_relative_position_index_same_as_hf(window):
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias
    hf = SwinRelativePositionBias(2, (window, window))
    assert torch.equal(hf._create_relative_position_index(),
                       mmseg_relative_position_index(window))


# ---------------------------------------------------------------- refusals


def _config_dict(name: str = 'swin') -> dict:
    return tiny_hf_config(name).to_dict()


def test_refuses_non_mask2former_state_dicts(pair):
    _, hf, ours, derivation, _ = pair
    with pytest.raises(ValueError, match='not a transformers Mask2Former'):
        convert_hf_state_dict({'conv.weight': torch.zeros(1)}, derivation)
    # an mmseg checkpoint: points at --from mmseg
    with pytest.raises(ValueError, match='--from mmseg'):
        convert_hf_state_dict(ours.state_dict(), derivation)
    # the bare Mask2FormerModel (no class head)
    sd = {k: v for k, v in hf.state_dict().items()
          if not k.startswith('class_predictor')}
    with pytest.raises(ValueError, match='Mask2FormerModel'):
        convert_hf_state_dict(sd, derivation)
    # ours/mmseg's converter refuses HF keys too
    with pytest.raises(ValueError, match='not an mmseg'):
        convert_mmseg_state_dict(hf.state_dict())


@pytest.mark.parametrize('field,value,match', [
    ('num_queries', 7, r'query_embed.*num_queries'),
    ('id2label', {str(i): str(i) for i in range(9)}, r'cls_embed.*id2label'),
    ('hidden_dim', 64, r'hidden_dim'),
])
def test_refuses_shapes_that_do_not_fit_the_config(tmp_path, field, value,
                                                   match):
    hf = tiny_hf_model('swin', seed=5)
    hf.save_pretrained(tmp_path)
    cfg_path = tmp_path / 'config.json'
    cfg = json.loads(cfg_path.read_text())
    cfg[field] = value
    if field == 'id2label':
        cfg['label2id'] = {v: int(k) for k, v in value.items()}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='do not fit') as info:
        convert_hf_checkpoint(str(tmp_path))
    assert re.search(match, str(info.value), re.S), str(info.value)


@pytest.mark.parametrize('path,value,field', [
    ('pre_norm', True, 'pre_norm'),
    ('activation_function', 'gelu', 'activation_function'),
    ('enforce_input_projection', True, 'enforce_input_projection'),
    ('common_stride', 8, 'common_stride'),
    ('model_type', 'maskformer', 'model_type'),
    ('backbone_config.model_type', 'convnext', 'backbone_config.model_type'),
    ('backbone_config.use_absolute_embeddings', True,
     'backbone_config.use_absolute_embeddings'),
    ('backbone_config.hidden_act', 'relu', 'backbone_config.hidden_act'),
    ('backbone_config.out_features', ['stage2', 'stage3', 'stage4'],
     'backbone_config.out_features'),
    ('backbone_config', None, 'backbone_config'),
])
def test_refuses_unsupported_config_fields(path, value, field):
    cfg = _config_dict('swin')
    *parents, leaf = path.split('.')
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(UnsupportedHFConfig, match=re.escape(repr(field))):
        derive_from_hf_config(cfg)


@pytest.mark.parametrize('path,value,field', [
    ('backbone_config.depths', [1, 1, 1, 1], 'backbone_config.depths'),
    ('backbone_config.hidden_sizes', [32, 64, 96, 256],
     'backbone_config.hidden_sizes'),
    ('backbone_config.hidden_act', 'gelu', 'backbone_config.hidden_act'),
])
def test_refuses_unsupported_resnets(path, value, field):
    cfg = _config_dict('resnet50')
    cfg['backbone_config'][path.split('.')[1]] = value
    with pytest.raises(UnsupportedHFConfig, match=re.escape(repr(field))):
        derive_from_hf_config(cfg)


def test_derived_config_fields():
    cfg = _config_dict('resnet50')
    cfg['backbone_config']['downsample_in_bottleneck'] = True
    cfg['use_auxiliary_loss'] = False
    der = derive_from_hf_config(copy.deepcopy(cfg), dict(
        image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25],
        rescale_factor=1 / 255))
    bb, head = der.model['backbone'], der.model['decode_head']
    assert (bb['depth'], bb['stem_channels'], bb['base_channels'],
            bb['style']) == (50, 16, 8, 'caffe')
    assert head['in_channels'] == [32, 64, 128, 256]
    assert head['transformer_decoder']['embed_dims'] == 64
    assert head['transformer_decoder']['num_layers'] == 4
    assert (head['feat_channels'], head['out_channels']) == (32, 48)
    assert der.data_preprocessor['mean'] == [127.5] * 3
    assert der.data_preprocessor['std'] == [63.75] * 3
    assert any('use_auxiliary_loss' in w for w in der.warnings)
    assert der.class_names == [f'class_{i}' for i in range(5)]


def test_class_order_is_checked_against_the_guessed_dataset():
    from mmseg.datasets import CityscapesDataset
    names = list(CityscapesDataset.METAINFO['classes'])
    cfg = _config_dict('swin')
    cfg['id2label'] = {str(i): n for i, n in enumerate(names)}
    assert not [w for w in derive_from_hf_config(cfg).warnings
                if 'id2label' in w]
    names[3], names[4] = names[4], names[3]
    cfg['id2label'] = {str(i): n for i, n in enumerate(names)}
    warns = [w for w in derive_from_hf_config(cfg).warnings if 'id2label' in w]
    assert len(warns) == 1 and 'at 2 of 19 indices' in warns[0]


def test_stored_relative_position_index_is_checked(pair):
    """Older Hub files store attention.self.relative_position_index."""
    name, hf, ours, derivation, _ = pair
    if name != 'swin':
        pytest.skip('Swin only')
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias
    index = SwinRelativePositionBias(1, (4, 4))._create_relative_position_index()
    sd = dict(hf.state_dict())
    blocks = {m[1] for k in sd if (m := re.match(r'(.*\.blocks\.\d+)\.', k))}
    for block in blocks:
        sd[f'{block}.attention.self.relative_position_index'] = index
    converted, report = convert_hf_state_dict(sd, derivation)
    assert not report.unexpected and len(report.generated) == len(blocks) == 8
    sd[f'{sorted(blocks)[0]}.attention.self.relative_position_index'] = \
        index.flip(0)
    with pytest.raises(ValueError, match='relative position index differs'):
        convert_hf_state_dict(sd, derivation)
