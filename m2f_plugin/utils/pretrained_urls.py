"""Pretrained-weight downloads follow the installed toolbox family.

The configs name backbone weights by their OpenMMLab download URL (as mmseg's
and mmdet's own configs did). The OneDL forks serve the same files, under the
same paths, from their own host, and their configs point there. When the
OneDL family is installed, a URL on the OpenMMLab host is fetched from the
OneDL host instead (one log line says so); with the OpenMMLab family nothing
changes.
"""
from __future__ import annotations

from typing import Optional

from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_from_http

from .version_check import SUPPORTED, installed_version

__all__ = ['HOSTS', 'installed_family', 'family_url', 'follow_installed_family']

# family -> host that serves the OpenMMLab model zoo's files
HOSTS = {
    'openmmlab': 'https://download.openmmlab.com/',
    'onedl': 'https://mmassets.onedl.ai/',
}


def installed_family() -> Optional[str]:
    """``'onedl'`` or ``'openmmlab'`` after the installed mmseg distribution;
    ``None`` if mmseg is not installed."""
    dist, _ = installed_version(SUPPORTED['mmseg'])
    if dist is None:
        return None
    return 'onedl' if dist.startswith('onedl-') else 'openmmlab'


def family_url(url: str, family: Optional[str] = None) -> str:
    """``url`` on the given (default: installed) family's host.

    URLs on neither host (torchvision, GitHub releases, local paths) are
    returned unchanged.
    """
    family = family or installed_family() or 'openmmlab'
    for host in HOSTS.values():
        if url.startswith(host):
            return HOSTS[family] + url[len(host):]
    return url


def _load_from_family_host(filename: str, map_location=None):
    url = family_url(filename)
    if url != filename:
        print_log(f'pretrained weights: {filename} is served by the installed '
                  f'toolbox family at {url}', logger='current')
    return load_from_http(url, map_location=map_location)


def follow_installed_family() -> None:
    """Route downloads from the OpenMMLab host to the installed family's host
    (a no-op with the OpenMMLab family)."""
    if installed_family() != 'onedl':
        return
    # the longest matching prefix wins in CheckpointLoader, so this takes
    # precedence over the generic http(s) loader for this host only
    CheckpointLoader.register_scheme(prefixes=HOSTS['openmmlab'],
                                     loader=_load_from_family_host, force=True)
