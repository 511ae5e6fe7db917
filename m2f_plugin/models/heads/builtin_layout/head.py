"""A built-in ``Mask2FormerHead`` config -> our head's keyword arguments.

:func:`is_builtin_layout` tells the layouts apart,
:func:`translate_builtin_head` translates (the toolbox's head-level keys in
``toolbox``, the sub-configs in ``decoders`` and ``losses``), and
:func:`accepts_builtin_layout` applies it to a head's ``__init__``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict

from .decoders import read_pixel_decoder, read_transformer_decoder
from .layers import read_sine_encoding
from .losses import (
    read_loss_cls,
    read_loss_dice,
    read_loss_mask,
    read_train_cfg,
)
from .reader import Reader, bare_type
from .toolbox import (
    BUILTIN_MARKERS,
    HEAD_NAMES,
    OUR_EXTRAS,
    check_toolbox,
    read_toolbox_keys,
)

__all__ = ['accepts_builtin_layout', 'is_builtin_layout',
           'translate_builtin_head']

_LOSSES = (('loss_cls', read_loss_cls), ('loss_mask', read_loss_mask),
           ('loss_dice', read_loss_dice))


def _is_ours(cfg: Any) -> bool:
    return isinstance(cfg, dict) and str(bare_type(cfg.get('type', ''))
                                         ).startswith('M2F')


def _builtin_pixel_decoder(cfg: Any) -> bool:
    return isinstance(cfg, dict) and not _is_ours(cfg) and (
        'encoder' in cfg or 'type' not in cfg
        or bare_type(cfg['type']) == 'MSDeformAttnPixelDecoder')


def _builtin_part(cfg: Any) -> bool:
    """A transformer decoder or loss config in the built-in layout."""
    return isinstance(cfg, dict) and not _is_ours(cfg)


def is_builtin_layout(kwargs: dict, toolbox: str) -> bool:
    """Whether a head's keyword arguments follow the built-in
    ``Mask2FormerHead``'s layout (by its keys and sub-config types)."""
    if any(k in kwargs for k in BUILTIN_MARKERS[toolbox]):
        return True
    return (_builtin_pixel_decoder(kwargs.get('pixel_decoder'))
            or _builtin_part(kwargs.get('transformer_decoder'))
            or any(_builtin_part(kwargs.get(k)) for k, _ in _LOSSES))


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
    check_toolbox(toolbox)
    head = HEAD_NAMES[toolbox]
    r = Reader(kwargs, '', head)
    r.get('type', None)
    out: Dict[str, Any] = {}
    for key in ('in_channels', 'feat_channels', 'out_channels', 'num_queries',
                'init_cfg') + OUR_EXTRAS[toolbox]:
        if r.has(key):
            out[key] = r.get(key)
    feat = out.get('feat_channels', 256)
    read_toolbox_keys(r, out, toolbox)
    num_levels = r.get('num_transformer_feat_level', 3)
    r.expect('enforce_decoder_input_project', False, [False],
             'ours projects the decoder inputs only when the decoder width '
             'differs from feat_channels; set False')
    read_sine_encoding(r.sub('positional_encoding',
                             dict(num_feats=128, normalize=True)), feat)

    strides = r.get('strides', None)
    pixel_decoder = r.get('pixel_decoder')
    if _builtin_pixel_decoder(pixel_decoder):
        out['pixel_decoder'], pd_strides = read_pixel_decoder(
            Reader(pixel_decoder, 'pixel_decoder', head), feat, num_levels)
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
        read_transformer_decoder(Reader(decoder, 'transformer_decoder', head),
                                 feat)
        if _builtin_part(decoder) else decoder)
    for key, translate in _LOSSES:
        if r.has(key):
            cfg = r.get(key)
            out[key] = (translate(Reader(cfg, key, head))
                        if _builtin_part(cfg) else cfg)
    train_cfg = r.get('train_cfg', None)
    if train_cfg:
        out.update(read_train_cfg(Reader(train_cfg, 'train_cfg', head)))
    if toolbox == 'mmdet':  # the detector passes it on to the head
        out['train_cfg'] = train_cfg
    r.finish()
    return out


def accepts_builtin_layout(toolbox: str) -> Callable[[Callable], Callable]:
    """Decorator of a head's ``__init__``: keyword arguments in the built-in
    layout are translated (:func:`translate_builtin_head`) first."""
    check_toolbox(toolbox)

    def decorate(init: Callable) -> Callable:
        @functools.wraps(init)
        def wrapper(self, *args, **kwargs) -> None:
            if is_builtin_layout(kwargs, toolbox):
                kwargs = translate_builtin_head(kwargs, toolbox)
            init(self, *args, **kwargs)
        return wrapper

    return decorate
