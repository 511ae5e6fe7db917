"""The config derived from an HF config.json is an mmengine ``Config``: its
dump loads back equal (``Config.fromfile``) and builds the same model.

No transformers needed: the config.json is written out by hand.
"""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS

from m2f_plugin.converters import (
    build_derived_config,
    derive_from_hf_config,
    format_config_file,
)
from m2f_plugin.converters.hf_config_file import default_bases
from m2f_plugin.converters.hf_keys import build_model

ADE20K_BASES = ['mmseg::_base_/default_runtime.py',
                'mmseg::_base_/datasets/ade20k.py']


def _hf_config(num_classes: int) -> dict:
    """A tiny Swin Mask2Former's config.json (fields left out take
    transformers' defaults)."""
    return dict(
        model_type='mask2former',
        backbone_config=dict(
            model_type='swin', embed_dim=16, depths=[2, 2, 2, 2],
            num_heads=[1, 2, 2, 4], window_size=4, drop_path_rate=0.0,
            out_features=['stage1', 'stage2', 'stage3', 'stage4']),
        feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
        decoder_layers=3, num_attention_heads=4, num_queries=6,
        id2label={str(i): f'class_{i}' for i in range(num_classes)})


def _build(model_cfg: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return MODELS.build(model_cfg).eval()


def _assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_model_only_config_round_trips_and_builds_the_model(tmp_path):
    derivation = derive_from_hf_config(_hf_config(5))
    cfg = build_derived_config(derivation, bases=[])
    assert '_base_' not in cfg and 'optim_wrapper' not in cfg
    assert cfg.model.to_dict() == derivation.model
    path = tmp_path / 'derived.py'
    cfg.dump(str(path))
    loaded = Config.fromfile(str(path))
    assert loaded.to_dict() == cfg.to_dict()
    # the file the converter writes: the same Config under a comment header
    text = format_config_file(derivation, bases=[], source='hf_dir')
    assert text.endswith(cfg.dump())
    header = text[:-len(cfg.dump())].splitlines()
    assert all(line.startswith('# ') for line in header)
    assert header[0].startswith('# Derived from') and 'class_4' in header[3]
    cli = tmp_path / 'cli.py'
    cli.write_text(text)
    assert Config.fromfile(str(cli)).to_dict() == cfg.to_dict()
    # ... and it builds the model the derivation describes (same seed, same
    # weights)
    torch.manual_seed(0)
    expected = build_model(derivation)
    _assert_same_model(_build(loaded.model), expected)


def test_dataset_config_inherits_its_bases_and_round_trips(tmp_path):
    """150 classes: mmseg's runtime and ADE20K as ``_base_`` (not merged
    into the file), our schedule; the merged config dumps and loads back
    equal too (what mmengine writes into a run's work_dir)."""
    derivation = derive_from_hf_config(_hf_config(150))
    cfg = build_derived_config(derivation)
    assert cfg['_base_'] == ADE20K_BASES == default_bases(150)
    assert cfg.train_cfg.max_iters == 160000
    path = tmp_path / 'derived.py'
    cfg.dump(str(path))
    assert path.read_text().startswith('_base_ = [')
    loaded = Config.fromfile(str(path))
    own = {k: v for k, v in cfg.to_dict().items() if k != '_base_'}
    assert {k: loaded.to_dict()[k] for k in own} == own
    assert loaded.test_dataloader.dataset.type == 'ADE20KDataset'
    assert loaded.default_scope == 'mmseg'
    merged = tmp_path / 'merged.py'
    loaded.dump(str(merged))
    assert Config.fromfile(str(merged)).to_dict() == loaded.to_dict()
    _assert_same_model(_build(loaded.model), _build(derivation.model))


@pytest.mark.parametrize('num_classes,bases', [
    (5, ['mmseg::_base_/default_runtime.py']),
    (19, ['mmseg::_base_/default_runtime.py',
          'mmseg::_base_/datasets/cityscapes.py']),
])
def test_default_bases_follow_the_class_count(num_classes, bases):
    cfg = build_derived_config(derive_from_hf_config(_hf_config(num_classes)))
    assert cfg['_base_'] == bases
    # the schedule needs a train set: only with a known data set
    assert ('optim_wrapper' in cfg) == (len(bases) == 2)
    assert cfg.custom_imports.imports == ['m2f_plugin']
