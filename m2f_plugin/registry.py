"""The plugin's modules in mmdet's registries too.

Every module registers itself in mmseg's registries when it is imported.
``register_in_mmdet`` then registers the same class objects in mmdet's
registries of the same kind, so a config under either default scope
(``default_scope='mmseg'`` or ``'mmdet'``) finds them by their bare names or
with a ``mmseg.``/``mmdet.`` prefix, and builds nested inside them (the head
builds its pixel decoder in the current default scope) resolve.
"""
from __future__ import annotations

import warnings
from typing import Dict, List

__all__ = ['REGISTRY_KINDS', 'register_in_mmdet']

# the registries the plugin fills, by their name in mmseg.registry and
# mmdet.registry (data sets are not mirrored: the embedded set registers its
# semantic form in mmseg's, its COCO instance/panoptic forms in mmdet's)
REGISTRY_KINDS = ('MODELS', 'TASK_UTILS', 'HOOKS',
                  'OPTIM_WRAPPER_CONSTRUCTORS')


def register_in_mmdet() -> Dict[str, List[str]]:
    """Register every ``m2f_plugin`` entry of mmseg's registries in mmdet's.

    Returns:
        Registry kind -> names registered in mmdet's (empty when mmdet is
        not usable: it is missing, or refuses the installed mmcv; the mmseg
        side works without it, and one warning says why).

    Raises:
        KeyError: a name of ours is already taken in mmdet by another class.
    """
    try:
        from mmdet import registry as det
    except Exception as err:  # noqa: BLE001 - any failure: mmseg side only
        warnings.warn(
            f'm2f_plugin: mmdet is not usable ({type(err).__name__}: {err}); '
            "the plugin's modules are registered for mmseg only",
            stacklevel=2)
        return {}
    from mmseg import registry as seg
    added: Dict[str, List[str]] = {}
    for kind in REGISTRY_KINDS:
        ours, theirs = getattr(seg, kind), getattr(det, kind)
        for name, cls in ours.module_dict.items():
            if not cls.__module__.startswith('m2f_plugin'):
                continue
            existing = theirs.module_dict.get(name)
            if existing is cls:
                continue
            if existing is not None:
                raise KeyError(f'm2f_plugin: {name} is already registered in '
                               f"mmdet's {kind} by {existing.__module__}")
            theirs.register_module(name=name, module=cls)
            added.setdefault(kind, []).append(name)
    return added
