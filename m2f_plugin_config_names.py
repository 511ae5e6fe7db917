"""Let mmengine resolve ``mmseg::`` and ``mmdet::`` configs under either toolbox
family.

mmengine maps a config prefix to one distribution name (``mmseg::`` to
``mmsegmentation``), so on the maintained OneDL forks (distribution
``onedl-mmsegmentation``, same ``mmseg`` module) every config that inherits
``mmseg::_base_/...`` fails with "mmsegmentation is not installed". This module
points the mapping at whichever distribution of the family is installed.

It is a top-level module, not part of ``m2f_plugin``, so that the
``m2f_plugin-config-names.pth`` file installed next to it can run it at
interpreter start-up without importing torch or the toolboxes: it only adds an
import hook that fixes the mapping when mmengine's config utilities load. This
makes configs load even in scripts that never import ``m2f_plugin`` (e.g.
``MMSegInferencer(model='configs/...py')``). ``import m2f_plugin`` runs it too.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Dict, Optional, Sequence, Tuple

__all__ = ['FAMILIES', 'install', 'point_at_installed']

CONFIG_UTILS = 'mmengine.config.utils'
# config prefix (module name) -> distributions that provide it, original first
FAMILIES: Dict[str, Tuple[str, ...]] = {
    'mmseg': ('mmsegmentation', 'onedl-mmsegmentation'),
    'mmdet': ('mmdet', 'onedl-mmdetection'),
    'mmpretrain': ('mmpretrain', 'onedl-mmpretrain'),
}


def _installed(dist: str) -> bool:
    from importlib import metadata
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def point_at_installed(module2package: Dict[str, str],
                       families: Optional[Dict[str, Sequence[str]]] = None
                       ) -> Dict[str, str]:
    """Map each prefix whose mapped distribution is missing to the installed
    distribution of its family (in place). Returns what changed."""
    changed = {}
    for module, dists in (families or FAMILIES).items():
        current = module2package.get(module)
        if current not in dists or _installed(current):
            continue
        found = next((d for d in dists if d != current and _installed(d)), None)
        if found is not None:
            module2package[module] = changed[module] = found
    return changed


def _fix_loaded() -> None:
    utils = sys.modules.get(CONFIG_UTILS)
    if utils is not None and hasattr(utils, 'MODULE2PACKAGE'):
        point_at_installed(utils.MODULE2PACKAGE)


class _FixAfterLoad(importlib.abc.Loader):
    """Runs the real loader, then fixes the mapping of the loaded module."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):  # noqa: D102
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: D102
        self.loader.exec_module(module)
        point_at_installed(module.MODULE2PACKAGE)


class _ConfigUtilsFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``mmengine.config.utils``; finds nothing else."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102
        if fullname != CONFIG_UTILS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _FixAfterLoad(spec.loader)
        return spec


def install() -> None:
    """Fix the mapping now if mmengine's config utilities are loaded, else
    when they load. Safe to call more than once."""
    _fix_loaded()
    if not any(isinstance(f, _ConfigUtilsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _ConfigUtilsFinder())
