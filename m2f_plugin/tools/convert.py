"""Convert a Mask2Former checkpoint to m2f_plugin's layout.

    python -m m2f_plugin.tools.convert SRC DST --from mmseg
    python -m m2f_plugin.tools.convert SRC DST --from mmdet
    python -m m2f_plugin.tools.convert HF_DIR DST --from hf

``--from mmseg``: SRC is an mmseg 1.x built-in Mask2Former segmentor
checkpoint (.pth; head ``decode_head.*``); head keys are renamed, the rest
kept. ``--from mmdet``: the same for an mmdet 3.x built-in Mask2Former
detector checkpoint (head ``panoptic_head.*``, for ``M2FDetHead``). Both load
into our models as they are too (renamed on load); converting once saves the
renaming and checks the keys.

``--from hf``: SRC is a directory written by transformers'
``Mask2FormerForUniversalSegmentation.save_pretrained`` (config.json +
model.safetensors / pytorch_model.bin, sharded or not), or one weights file
with ``--hf-config``. The model config is derived from config.json and written
next to DST (DST with a ``.py`` suffix, or ``--config-out``); for a known
class count (150 ADE20K, 19 Cityscapes, 171 COCO-Stuff) or ``--base`` files
with a test set it is ready for ``mim test m2f_plugin <config> --checkpoint
DST``, otherwise it holds the model only and the printed next step says what
to add. The converted weights are checked against a model built from that
config (keys and shapes).

Prints what was mapped, ignored, unexpected and missing. Exit status: 0 done,
1 keys left unmapped or not fitting (nothing written unless
``--allow-unmapped``; shape mismatches are never written), 2 not a
Mask2Former / unsupported config / unreadable input.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

import torch

from ..converters import convert_mmdet_state_dict, convert_mmseg_state_dict


def _convert_mmseg(args: argparse.Namespace) -> int:
    # Our own converter reads third-party files: no arbitrary unpickling.
    ckpt = torch.load(args.src, map_location='cpu', weights_only=True)
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict):
        print(f'error: {args.src} holds no state dict', file=sys.stderr)
        return 2
    convert = (convert_mmdet_state_dict if args.source == 'mmdet'
               else convert_mmseg_state_dict)
    try:
        converted, report = convert(state_dict)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.verbose:
        for old, new in report.mapped.items():
            print(f'{old} -> {new}')
    print(report.summary())
    if report.unmapped and not args.allow_unmapped:
        print('error: unmapped keys (see above); rerun with --allow-unmapped '
              'to write anyway', file=sys.stderr)
        return 1
    out = {'state_dict': converted,
           'meta': {'converted_from': args.source, 'source': args.src}}
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(out, args.dst)
    print(f'wrote {args.dst}')
    return 0


def _convert_hf(args: argparse.Namespace) -> int:
    from ..converters.hf_config import (
        UnsupportedHFConfig,
        derive_from_hf_config,
    )
    from ..converters.hf_config_file import format_config_file
    from ..converters.hf_keys import (
        build_model,
        convert_hf_state_dict,
        load_hf_checkpoint,
        verify_against_model,
    )
    try:
        ckpt = load_hf_checkpoint(args.src, args.hf_config)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print('read ' + ', '.join(ckpt.files))
    try:
        derivation = derive_from_hf_config(ckpt.config, ckpt.preprocessor,
                                           msda_impl=args.msda_impl)
    except UnsupportedHFConfig as err:
        print(f'error: cannot represent this model: {err}', file=sys.stderr)
        return 2
    try:
        converted, report = convert_hf_state_dict(ckpt.state_dict, derivation)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if not args.no_verify:
        verify_against_model(converted, build_model(derivation), report)
    print(report.summary(verbose=args.verbose))
    if report.mismatched:
        print('error: shapes do not fit the model derived from config.json '
              '(see SHAPE MISMATCHES; the HF config field in brackets); '
              'nothing written', file=sys.stderr)
        return 1
    if (report.unexpected or report.missing) and not args.allow_unmapped:
        print('error: unexpected or missing keys (see above); rerun with '
              '--allow-unmapped to write anyway', file=sys.stderr)
        return 1
    config_out = args.config_out or osp.splitext(args.dst)[0] + '.py'
    for path in (args.dst, config_out):
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    bases = None if args.base is None else [b for b in args.base if b]
    with open(config_out, 'w') as f:
        f.write(format_config_file(derivation, bases, source=args.src))
    out = {'state_dict': converted,
           'meta': {'converted_from': args.source, 'source': args.src,
                    'config': osp.basename(config_out),
                    'dataset_meta': {'classes': derivation.class_names}}}
    torch.save(out, args.dst)
    print(f'wrote {args.dst}\nwrote {config_out}')
    print(next_step(config_out, args.dst, derivation.num_classes,
                    bases_given=args.base is not None))
    return 0


# what mmengine's Runner.test() needs besides the model
TEST_KEYS = ('test_dataloader', 'test_evaluator', 'test_cfg')


def next_step(config: str, checkpoint: str, num_classes: int,
              bases_given: bool = False) -> str:
    """The command to run next, one that works for the config as written.

    A config with a test set (a known class count, or ``--base`` files that
    bring one) gets its ``mim test`` command. A model-only config cannot be
    tested: the text says what to add, and gives a command that works now
    (load the weights into the model).

    Args:
        config: The derived config file.
        checkpoint: The converted checkpoint.
        num_classes: The model's class count.
        bases_given: Whether ``--base`` chose the config's ``_base_``.

    Returns:
        The lines to print.
    """
    from mmengine.config import Config
    test = f'mim test m2f_plugin {config} --checkpoint {checkpoint}'
    try:
        cfg = Config.fromfile(config)
    except Exception as err:  # e.g. a --base file that does not exist
        return (f'note: {config} does not load ({type(err).__name__}: {err}); '
                f'fix its _base_ (--base), then evaluate with:\n  {test}')
    missing = [k for k in TEST_KEYS if cfg.get(k) is None]
    if not missing:
        return f'evaluate: {test}'
    why = ('the --base files bring none' if bases_given else
           f'no mmseg data set is known for {num_classes} classes')
    load = ('python -c "from mmseg.apis import init_model; '
            f"init_model('{config}', '{checkpoint}', device='cpu')\"")
    return '\n'.join([
        f'next: {config} holds the model only ({why}),',
        '  so `mim test` cannot run it yet: it needs '
        f'{", ".join(missing)}.',
        f'  Add a data set with {num_classes} classes (e.g. --base '
        "mmseg::_base_/default_runtime.py <your data set's base config>,",
        "  and test_cfg = dict(type='TestLoop') if the bases do not set it), "
        'then evaluate with:',
        f'    {test}',
        'check now that the weights load into the model:',
        f'  {load}'])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help="source checkpoint (.pth), or for 'hf' a "
                        'save_pretrained directory or weights file')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--from', dest='source', choices=['mmseg', 'mmdet', 'hf'],
                        required=True,
                        help="checkpoint family: 'mmseg' = mmseg 1.x / mmdet "
                        "3.x built-in Mask2Former; 'hf' = transformers "
                        'Mask2FormerForUniversalSegmentation')
    parser.add_argument('--hf-config', help="'hf': config.json (default: "
                        'next to the weights)')
    parser.add_argument('--config-out', help="'hf': where to write the derived "
                        'config (default: DST with a .py suffix)')
    parser.add_argument('--base', nargs='*', default=None,
                        help="'hf': _base_ files of the derived config "
                        "(default: mmseg's default_runtime + a dataset guessed "
                        'from the class count: 150 ADE20K, 19 Cityscapes, '
                        "171 COCO-Stuff); '--base' alone: none")
    parser.add_argument('--msda-impl', default='mmcv',
                        choices=['mmcv', 'pytorch'],
                        help="'hf': deformable-attention kernel in the config")
    parser.add_argument('--no-verify', action='store_true',
                        help="'hf': skip building the model to check shapes")
    parser.add_argument('--allow-unmapped', action='store_true',
                        help='write the result even if keys were dropped')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='print every mapped key')
    args = parser.parse_args(argv)
    if args.source == 'hf':
        return _convert_hf(args)
    return _convert_mmseg(args)


if __name__ == '__main__':
    sys.exit(main())
