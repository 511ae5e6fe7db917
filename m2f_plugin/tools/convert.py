"""Convert a Mask2Former checkpoint to m2f_plugin's layout.

    python -m m2f_plugin.tools.convert SRC DST --from mmseg

Prints what was mapped, kept and left unmapped; exits non-zero if any head key
could not be mapped (unless ``--allow-unmapped``).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from ..converters import convert_mmseg_state_dict


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--from', dest='source', choices=['mmseg'],
                        required=True,
                        help="checkpoint family: 'mmseg' = mmseg 1.x / mmdet "
                        "3.x built-in Mask2Former")
    parser.add_argument('--allow-unmapped', action='store_true',
                        help='write the result even if head keys were dropped')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='print every mapped key')
    args = parser.parse_args(argv)

    # Our own converter reads third-party files: no arbitrary unpickling.
    ckpt = torch.load(args.src, map_location='cpu', weights_only=True)
    state_dict = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict):
        print(f'error: {args.src} holds no state dict', file=sys.stderr)
        return 2
    try:
        converted, report = convert_mmseg_state_dict(state_dict)
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
    torch.save(out, args.dst)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
