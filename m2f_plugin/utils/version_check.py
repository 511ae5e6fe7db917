"""Import-time check of the OpenMMLab stack m2f_plugin runs on.

Two families are supported under the same module names: the original OpenMMLab
releases (``mmcv``, ``mmengine``, ``mmsegmentation``, ``mmdet``) and the maintained
OneDL forks (``onedl-mmcv``, ``onedl-mmengine``, ...). Anything outside the ranges
below raises one ``ImportError`` that names the package, the version found, the
supported range and the command that fixes it. Two distributions of one
module installed side by side (``mmcv`` and ``onedl-mmcv``, say) are refused
too: they install the same files over each other.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from packaging.version import Version

__all__ = ['SUPPORTED', 'check_openmmlab_stack', 'installed_distributions',
           'installed_providers', 'installed_version']

FIX_HINT = ('bash scripts/setup_env.sh  (from the m2f_plugin checkout), or '
            '`pip install --no-build-isolation {pin}` in your environment')


@dataclass(frozen=True)
class Requirement:
    """A supported version range for one module, for both package families."""

    module: str
    dists: Tuple[str, ...]  # distribution names that provide the module
    minimum: str
    maximum: str  # exclusive
    pin: str  # what the reproducible path installs (OpenMMLab family)
    onedl_pin: str  # the same for the OneDL family

    def describe(self) -> str:
        return f'>={self.minimum},<{self.maximum}'


SUPPORTED: Dict[str, Requirement] = {
    'mmengine': Requirement('mmengine', ('mmengine', 'onedl-mmengine'), '0.10.0',
                            '0.11.0', 'mmengine==0.10.7', 'onedl-mmengine==0.10.12'),
    'mmcv': Requirement('mmcv', ('mmcv', 'onedl-mmcv', 'mmcv-lite'), '2.0.0',
                        '2.4.0', 'mmcv==2.1.0', 'onedl-mmcv==2.3.6'),
    'mmseg': Requirement('mmseg', ('mmsegmentation', 'onedl-mmsegmentation'),
                         '1.2.0', '1.5.0', 'mmsegmentation==1.2.2',
                         'onedl-mmsegmentation==1.4.2'),
    'mmdet': Requirement('mmdet', ('mmdet', 'onedl-mmdetection', 'onedl-mmdet'),
                         '3.2.0', '3.6.0', 'mmdet==3.3.0',
                         'onedl-mmdetection==3.5.1'),
}


FAMILY_NAMES = {'openmmlab': 'OpenMMLab', 'onedl': 'OneDL'}
SETUP_COMMANDS = {'openmmlab': 'bash scripts/setup_env.sh',
                  'onedl': 'STACK=onedl bash scripts/setup_env.sh'}


def family_of(dist: str) -> str:
    """``'onedl'`` for the OneDL forks' distributions, else ``'openmmlab'``."""
    return 'onedl' if dist.startswith('onedl-') else 'openmmlab'


def _normalized(name: str) -> str:
    """A distribution name as the packaging spec normalizes it (PEP 503)."""
    return re.sub(r'[-_.]+', '-', name).lower()


def installed_distributions() -> List[Tuple[str, str]]:
    """``(normalized name, version)`` of every installed distribution.

    Listed from ``importlib.metadata.distributions()``; a name found twice on
    ``sys.path`` is listed once, as the first (the one that imports).
    """
    found: Dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata['Name']
        if name:
            found.setdefault(_normalized(name), dist.version)
    return list(found.items())


def installed_providers(
        req: Requirement,
        listing: Optional[Sequence[Tuple[str, str]]] = None
) -> List[Tuple[str, str]]:
    """Every installed ``(distribution, version)`` that provides ``req``'s
    module, in the order of ``req.dists``.

    Args:
        req: The requirement.
        listing: ``(name, version)`` pairs to look in; default: a fresh
            :func:`installed_distributions`.
    """
    if listing is None:
        listing = installed_distributions()
    versions = {_normalized(name): version for name, version in listing}
    return [(dist, versions[dist]) for dist in req.dists if dist in versions]


def installed_version(req: Requirement) -> Tuple[Optional[str], Optional[str]]:
    """Return ``(distribution, version)`` of the first installed provider
    (``(None, None)`` if there is none)."""
    providers = installed_providers(req)
    return providers[0] if providers else (None, None)


def _mmcv_has_ops() -> bool:
    try:
        importlib.import_module('mmcv._ext')
    except Exception:  # noqa: BLE001 - any failure means no usable compiled ops
        return False
    return True


def check_openmmlab_stack(
        version_of: Optional[
            Callable[[Requirement], Tuple[Optional[str], Optional[str]]]] = None,
        mmcv_has_ops: Callable[[], bool] = _mmcv_has_ops,
        providers_of: Optional[
            Callable[[Requirement], List[Tuple[str, str]]]] = None) -> None:
    """Raise ``ImportError`` if a required OpenMMLab package is unusable.

    Args:
        version_of: Looks up ``(distribution, version)`` for a requirement
            (injectable for tests); default: the first of ``providers_of``.
        mmcv_has_ops: Tells whether mmcv's compiled ops import (injectable).
        providers_of: Lists every installed ``(distribution, version)`` of a
            requirement (injectable); default: from one listing of the
            installed distributions.
    """
    if providers_of is None:
        listing = installed_distributions()

        def providers_of(req: Requirement) -> List[Tuple[str, str]]:
            return installed_providers(req, listing)
    if version_of is None:
        def version_of(req: Requirement) -> Tuple[Optional[str], Optional[str]]:
            providers = providers_of(req)
            return providers[0] if providers else (None, None)
    for req in SUPPORTED.values():
        _refuse_two_providers(req, providers_of(req))
    providers = {}
    for req in SUPPORTED.values():
        dist, found = version_of(req)
        where = f'{dist} {found}' if dist else 'not installed'
        onedl = dist is not None and family_of(dist) == 'onedl'
        fix = FIX_HINT.format(pin=req.onedl_pin if onedl else req.pin)
        if dist is None:
            raise ImportError(
                f'm2f_plugin needs {req.module} {req.describe()} '
                f'(found: {where}). Fix: {fix}')
        if dist == 'mmcv-lite':
            raise ImportError(
                f'm2f_plugin needs mmcv with compiled ops, but found mmcv-lite '
                f'{found}, which has none. Fix: pip uninstall -y mmcv-lite && '
                f'{fix}')
        version = Version(found)
        if not Version(req.minimum) <= version < Version(req.maximum):
            raise ImportError(
                f'm2f_plugin supports {req.module} {req.describe()}, but found '
                f'{where}. Fix: {fix}')
        providers[req.module] = (dist, found)
    _refuse_mixed_families(providers)
    if not mmcv_has_ops():
        raise ImportError(
            'm2f_plugin needs mmcv with compiled ops (mmcv._ext), but mmcv '
            'imports without them (an mmcv-lite or a failed build). Fix: '
            'pip uninstall -y mmcv && MAX_JOBS=2 pip install '
            '--no-build-isolation mmcv==2.1.0')


def _keep_one(req: Requirement, keep: str, others: Sequence[str]) -> str:
    """The command that keeps ``keep`` and removes ``others``: uninstalling a
    distribution deletes the files both installed, so the kept one is
    reinstalled."""
    pin = req.onedl_pin if family_of(keep) == 'onedl' else req.pin
    if not pin.startswith(f'{keep}=='):
        pin = f"'{keep}{req.describe()}'"
    return (f'`pip uninstall -y {" ".join(others)} && pip install '
            f'--no-build-isolation --force-reinstall {pin}` '
            f'(keeps {keep}, {FAMILY_NAMES[family_of(keep)]})')


def _refuse_two_providers(req: Requirement,
                          providers: Sequence[Tuple[str, str]]) -> None:
    """One installed distribution per module: ``mmcv`` and ``onedl-mmcv``
    (or ``mmcv-lite``) install the same ``mmcv`` package over each other, so
    what imports is a mix of both."""
    if len(providers) < 2:
        return
    found = ' and '.join(f'{dist} {version} ({FAMILY_NAMES[family_of(dist)]})'
                         for dist, version in providers)
    dists = [dist for dist, _ in providers]
    mixed = len({family_of(dist) for dist in dists}) > 1
    fixes = ' or '.join(
        _keep_one(req, keep, [d for d in dists if d != keep])
        for keep in dists if keep != 'mmcv-lite')
    raise ImportError(
        f'm2f_plugin found {len(dists)} distributions of {req.module} '
        f'installed side by side: {found}'
        f'{", a mix of toolbox families" if mixed else ""}. They install the '
        f'same `{req.module}` package over each other. Fix: uninstall all but '
        f'one, then reinstall the one you keep: {fixes}.')


def _refuse_mixed_families(providers: Dict[str, Tuple[str, str]]) -> None:
    """One family for all four packages: the forks' compiled ops, version
    asserts and registries are built against each other, not across."""
    families = {family_of(dist) for dist, _ in providers.values()}
    if len(families) < 2:
        return
    found = ', '.join(f'{dist} {version} ({FAMILY_NAMES[family_of(dist)]})'
                      for dist, version in providers.values())
    fixes = ' or '.join(f'`{SETUP_COMMANDS[f]}` ({FAMILY_NAMES[f]})'
                        for f in sorted(families))
    raise ImportError(
        f'm2f_plugin found a mix of toolbox families: {found}. Install all '
        f'four from one family: {fixes} from the m2f_plugin checkout, or '
        f'replace the odd ones in your environment '
        f'(pip uninstall the package, then install its counterpart).')
