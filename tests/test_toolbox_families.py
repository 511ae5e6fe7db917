"""Either toolbox family: configs resolve ``mmseg::``/``mmdet::`` and weight
URLs follow the installed family (OpenMMLab releases or the OneDL forks)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_from_http

import m2f_plugin_config_names as names
from m2f_plugin.utils import pretrained_urls, version_check
from m2f_plugin.utils.pretrained_urls import HOSTS, family_url, installed_family
from m2f_plugin.utils.version_check import SUPPORTED, installed_version
from tests.helpers import DEMO_CONFIG, REPO

ZOO = 'mmsegmentation/v0.5/pretrain/swin/swin_tiny_patch4_window7_224_20220317-1cdeb081.pth'


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_prefix_points_at_the_installed_distribution_of_its_family():
    seg = installed_version(SUPPORTED['mmseg'])[0]  # of either family
    det = installed_version(SUPPORTED['mmdet'])[0]
    families = {'mmseg': ('no-such-dist-m2f', seg),
                'mmdet': (det, 'no-such-dist-m2f'),
                'mmfoo': ('no-such-dist-a', 'no-such-dist-b')}
    mapping = {'mmseg': 'no-such-dist-m2f', 'mmdet': det,
               'mmfoo': 'no-such-dist-a', 'mmcls': 'mmcls'}
    changed = names.point_at_installed(mapping, families)
    assert changed == {'mmseg': seg}
    # installed stays, nothing installed stays, unknown prefixes untouched
    assert mapping == {'mmseg': seg, 'mmdet': det,
                       'mmfoo': 'no-such-dist-a', 'mmcls': 'mmcls'}


def test_mapping_fixed_when_mmengine_config_loads():
    """The import hook fixes mmengine's mapping as its config utilities load
    (simulated: the original distribution reported missing)."""
    out = _run("""
        import sys
        import m2f_plugin_config_names as names
        names._installed = lambda d: d == 'onedl-mmsegmentation'
        names.install()
        assert 'mmengine.config.utils' not in sys.modules
        import mmengine.config.utils as u
        print(u.MODULE2PACKAGE['mmseg'], u.MODULE2PACKAGE['mmdet'])
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ['onedl-mmsegmentation', 'mmdet']


def test_configs_load_in_a_script_that_never_imports_the_plugin():
    """``mmseg::`` bases resolve before anything imports m2f_plugin (the
    installed start-up file does it on either family); the config's
    custom_imports then bring in the plugin, and the inferencer runs."""
    out = _run(f"""
        import sys
        from mmengine.config import Config
        cfg = Config.fromfile({DEMO_CONFIG!r}, import_custom_modules=False)
        assert 'm2f_plugin' not in sys.modules
        assert cfg.model.decode_head.type == 'M2FHead'
        import numpy as np
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model={DEMO_CONFIG!r}, device='cpu')
        result = inferencer(np.zeros((64, 64, 3), np.uint8))
        print('shape', tuple(result['predictions'].shape))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'shape (64, 64)' in out.stdout


@pytest.mark.parametrize('family', sorted(HOSTS))
def test_family_url_moves_only_zoo_urls(family):
    for host in HOSTS.values():
        assert family_url(host + ZOO, family) == HOSTS[family] + ZOO
    for other in ('torchvision://resnet50', '/data/swin.pth',
                  'https://github.com/x/y/releases/download/v1/w.pth'):
        assert family_url(other, family) == other


def _fake_family(monkeypatch, family: str) -> None:
    """Make ``family``'s pinned distributions the installed ones."""
    listing = [tuple((req.onedl_pin if family == 'onedl' else req.pin).split('=='))
               for req in SUPPORTED.values()]
    monkeypatch.setattr(version_check, 'installed_distributions', lambda: listing)


@pytest.mark.parametrize('family', sorted(HOSTS))
def test_downloads_follow_the_installed_family(monkeypatch, family):
    """Either family, faked on either stack: the loaders as
    ``follow_installed_family`` leaves them from mmengine's own."""
    _fake_family(monkeypatch, family)
    assert installed_family() == family
    own = {p: f for p, f in CheckpointLoader._schemes.items()
           if p != HOSTS['openmmlab']}  # as before the plugin's import
    monkeypatch.setattr(CheckpointLoader, '_schemes', own)
    pretrained_urls.follow_installed_family()
    loader = CheckpointLoader._get_checkpoint_loader(HOSTS['openmmlab'] + ZOO)
    if family == 'onedl':
        fetched = []
        monkeypatch.setattr(pretrained_urls, 'load_from_http',
                            lambda url, map_location=None: fetched.append(url))
        loader(HOSTS['openmmlab'] + ZOO)
        assert fetched == [HOSTS['onedl'] + ZOO]
    else:  # OpenMMLab family: mmengine's own http loader, untouched
        assert loader is load_from_http


def test_import_routed_downloads_by_the_real_family():
    """What ``import m2f_plugin`` registered matches the installed family."""
    loader = CheckpointLoader._get_checkpoint_loader(HOSTS['openmmlab'] + ZOO)
    expected = {'onedl': pretrained_urls._load_from_family_host,
                'openmmlab': load_from_http}[installed_family()]
    assert loader is expected
