"""The config derived from an HF Mask2Former, as an mmengine ``Config``.

:func:`build_derived_config` assembles the config file's own keys (``_base_``,
``custom_imports``, the data preprocessor and the model, and for a known data
set our ADE20K training schedule) as a ``Config``; :func:`format_config_file`
is its ``.py`` text, mmengine's ``Config.dump``, under a comment header (the
class order and the derivation's notes).

The file inherits its runtime and data set through ``_base_`` rather than
holding them merged: it stays short, follows mmseg's data set configs, and a
data set is swapped by editing one line. ``Config.fromfile`` merges the
bases; the merged ``Config`` dumps to a self-contained file that loads back
equal (what mmengine writes into a run's work_dir).
"""
from __future__ import annotations

import copy
import textwrap
from typing import Any, Dict, List, Optional, Sequence

from mmengine.config import Config

from .hf_config import DATASETS, HFConfigDerivation

__all__ = ['build_derived_config', 'format_config_file']

_RUNTIME_BASE = 'mmseg::_base_/default_runtime.py'

# plugin modules that the derived model needs registered
_CUSTOM_IMPORTS = dict(imports=['m2f_plugin'], allow_failed_imports=False)

# Runner needs train_cfg/optim_wrapper with a train_dataloader; the recipe of
# our ADE20K config (fine-tuning from the converted checkpoint works).
_SCHEDULE: Dict[str, Any] = dict(
    optim_wrapper=dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.05, eps=1e-8,
                       betas=(0.9, 0.999)),
        clip_grad=dict(max_norm=0.01, norm_type=2),
        paramwise_cfg=dict(
            custom_keys={
                'backbone': dict(lr_mult=0.1, decay_mult=1.0),
                'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
                'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
                'level_embed': dict(lr_mult=1.0, decay_mult=0.0)},
            norm_decay_mult=0.0)),
    param_scheduler=[dict(type='PolyLR', eta_min=0, power=0.9, begin=0,
                          end=160000, by_epoch=False)],
    train_cfg=dict(type='IterBasedTrainLoop', max_iters=160000,
                   val_interval=5000),
    val_cfg=dict(type='ValLoop'),
    test_cfg=dict(type='TestLoop'))

_HOOKS: Dict[str, Any] = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))


def default_bases(num_classes: int) -> List[str]:
    """mmseg's default runtime, plus the data set guessed from the class
    count (ADE20K 150, Cityscapes 19, COCO-Stuff 171), if any."""
    dataset = DATASETS.get(num_classes)
    return [_RUNTIME_BASE] + ([dataset[0]] if dataset else [])


def build_derived_config(derivation: HFConfigDerivation,
                         bases: Optional[Sequence[str]] = None) -> Config:
    """The derived config file's own keys, as a ``Config``.

    Args:
        derivation: From ``derive_from_hf_config``.
        bases: ``_base_`` files; None: :func:`default_bases`. Empty: a
            model-only config (no ``_base_`` key).

    Returns:
        The config as written to the file: ``_base_`` is listed, not merged
        (``Config.fromfile`` of the dumped file merges it). The training
        schedule is included when the bases bring a known data set.
    """
    if bases is None:
        bases = default_bases(derivation.num_classes)
    cfg: Dict[str, Any] = {}
    if bases:
        cfg['_base_'] = list(bases)
    cfg['custom_imports'] = _CUSTOM_IMPORTS
    cfg['data_preprocessor'] = derivation.data_preprocessor
    cfg['model'] = derivation.model
    if bases and DATASETS.get(derivation.num_classes):
        cfg.update(_SCHEDULE)
    cfg['default_hooks'] = _HOOKS
    # the Config must not share dicts with the derivation or the constants
    return Config(copy.deepcopy(cfg))


def format_config_file(derivation: HFConfigDerivation,
                       bases: Optional[Sequence[str]] = None,
                       source: str = '') -> str:
    """The derived config as a ``.py`` file for ``mim test`` / ``mim train``.

    Args:
        derivation: From ``derive_from_hf_config``.
        bases: ``_base_`` files; None: :func:`default_bases`.
        source: Where the weights came from (a comment).

    Returns:
        The file's text: a comment header, then
        ``build_derived_config(derivation, bases).dump()``.
    """
    cfg = build_derived_config(derivation, bases)
    names = ', '.join(derivation.class_names)
    lines = [
        '# Derived from a transformers Mask2FormerForUniversalSegmentation',
        f'# config by m2f_plugin.tools.convert --from hf'
        f'{": " + source if source else ""}.',
        f'# {derivation.num_classes} classes, in this order (HF id2label):',
    ]
    lines += ['#   ' + chunk for chunk in _wrap(names, 74)]
    for note in derivation.warnings:
        lines += ['# ' + chunk for chunk in _wrap('NOTE: ' + note, 77)]
    if '_base_' not in cfg:
        lines.append('# no dataset base: add test_dataloader / test_evaluator')
    return '\n'.join(lines) + '\n' + cfg.dump()


def _wrap(text: str, width: int) -> List[str]:
    # words are kept whole (class names, paths), as the header is read back
    return textwrap.wrap(text, width, break_long_words=False,
                         break_on_hyphens=False)
