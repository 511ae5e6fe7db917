"""What differs between mmseg's and mmdet's built-in head layouts.

The head-level keys: mmseg's head takes ``num_classes``, ``ignore_index``
and ``align_corners`` (and its own ``train_cfg``); mmdet's takes
``num_things_classes`` / ``num_stuff_classes`` and the ``train_cfg`` /
``test_cfg`` its detector passes. The sub-configs are read alike.
"""
from __future__ import annotations

from typing import Any, Dict

from .reader import Reader

__all__ = ['BUILTIN_MARKERS', 'HEAD_NAMES', 'OUR_EXTRAS', 'TOOLBOXES',
           'check_toolbox', 'read_toolbox_keys']

TOOLBOXES = ('mmseg', 'mmdet')
# our head, for messages
HEAD_NAMES = {'mmseg': 'M2FHead (mmseg Mask2FormerHead layout)',
              'mmdet': 'M2FDetHead (mmdet Mask2FormerHead layout)'}
# keys only the built-in layout has (mmseg puts train_cfg in the head; mmdet's
# detector passes it to either layout)
BUILTIN_MARKERS = {
    'mmseg': ('num_transformer_feat_level', 'enforce_decoder_input_project',
              'positional_encoding', 'train_cfg'),
    'mmdet': ('num_transformer_feat_level', 'enforce_decoder_input_project',
              'positional_encoding'),
}
# our keys without a built-in counterpart, accepted in the built-in layout
OUR_EXTRAS = {
    'mmseg': ('predict_chunk', 'min_masks_per_image'),
    'mmdet': ('masks_at_input_size', 'min_masks_per_image', 'ignore_index'),
}


def check_toolbox(toolbox: str) -> None:
    """Raise ``ValueError`` unless ``toolbox`` is one of :data:`TOOLBOXES`."""
    if toolbox not in TOOLBOXES:
        raise ValueError(f'toolbox must be one of {TOOLBOXES}, got '
                         f'{toolbox!r}')


def read_toolbox_keys(r: Reader, out: Dict[str, Any], toolbox: str) -> None:
    """The toolbox's own head-level keys of the head's reader ``r`` -> ``out``
    (ours)."""
    if toolbox == 'mmseg':
        _read_mmseg_keys(r, out)
    else:
        _read_mmdet_keys(r, out)


def _read_mmseg_keys(r: Reader, out: Dict[str, Any]) -> None:
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


def _read_mmdet_keys(r: Reader, out: Dict[str, Any]) -> None:
    for key in ('num_things_classes', 'num_stuff_classes'):
        if r.has(key):
            out[key] = r.get(key)
    out['test_cfg'] = r.get('test_cfg', None)
