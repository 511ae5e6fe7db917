"""Replaced by ``python -m m2f_plugin.tools.export``.

The export now takes the raw image and gives the final result for every
task (docs/export.md); this name only says so, so that old scripts fail
with the new command instead of an unknown module.
"""
from __future__ import annotations

import sys
from typing import List, Optional

__all__ = ['main']


def main(argv: Optional[List[str]] = None) -> int:
    """Print where the export went; exit status 2."""
    print('m2f_plugin.tools.export_onnx was replaced by\n'
          '  python -m m2f_plugin.tools.export CONFIG --checkpoint CKPT '
          '--out model.onnx [--check IMG ...]\n'
          'Its graph takes the raw uint8 (H, W, 3) image of any size and '
          'returns the final result (semantic labels, panoptic map and '
          'segments, or instances) at that size; --shape and --dynamic are '
          'gone (every export is dynamic). See docs/export.md.',
          file=sys.stderr)
    return 2


if __name__ == '__main__':
    raise SystemExit(main())
