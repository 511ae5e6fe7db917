"""Unsupported stacks fail at import with one actionable message."""
from __future__ import annotations

import pytest

from m2f_plugin.utils import version_check
from m2f_plugin.utils.version_check import (
    SUPPORTED,
    check_openmmlab_stack,
    installed_providers,
    installed_version,
)

# module -> (OpenMMLab distribution, OneDL distribution) as pinned
COUNTERPARTS = {module: (req.pin.split('==')[0], req.onedl_pin.split('==')[0])
                for module, req in SUPPORTED.items()}


def _listing(family):
    """``(name, version)`` of one family's pinned distributions."""
    return [tuple((req.onedl_pin if family == 'onedl' else req.pin).split('=='))
            for req in SUPPORTED.values()]


@pytest.fixture
def installed(monkeypatch):
    """Fake the installed distributions: ``installed(listing)``."""
    def fake(listing):
        monkeypatch.setattr(version_check, 'installed_distributions',
                            lambda: list(listing))
    return fake


def _versions(**override):
    good = {'mmengine': ('mmengine', '0.10.7'), 'mmcv': ('mmcv', '2.1.0'),
            'mmseg': ('mmsegmentation', '1.2.2'), 'mmdet': ('mmdet', '3.3.0')}
    good.update(override)
    return lambda req: good[req.module]


def test_pinned_stack_passes():
    check_openmmlab_stack(_versions(), lambda: True)


def test_onedl_family_passes():
    check_openmmlab_stack(
        _versions(mmengine=('onedl-mmengine', '0.10.12'),
                  mmcv=('onedl-mmcv', '2.3.6'),
                  mmseg=('onedl-mmsegmentation', '1.4.2'),
                  mmdet=('onedl-mmdetection', '3.5.1')), lambda: True)


@pytest.mark.parametrize('module,found', [
    ('mmcv', ('mmcv', '1.7.2')), ('mmcv', ('mmcv', '2.4.0')),
    ('mmseg', ('mmsegmentation', '0.30.0')), ('mmdet', ('mmdet', '2.28.2')),
    ('mmengine', ('mmengine', '0.9.1'))])
def test_out_of_range_names_package_version_range_and_fix(module, found):
    with pytest.raises(ImportError) as err:
        check_openmmlab_stack(_versions(**{module: found}), lambda: True)
    msg = str(err.value)
    assert module in msg and found[1] in msg
    assert SUPPORTED[module].describe() in msg
    assert 'Fix:' in msg and SUPPORTED[module].pin in msg


def test_missing_package():
    with pytest.raises(ImportError, match='mmdet .*not installed.*Fix:'):
        check_openmmlab_stack(_versions(mmdet=(None, None)), lambda: True)


def test_mmcv_lite_rejected():
    with pytest.raises(ImportError, match='compiled ops, but found mmcv-lite 2.1.0.*Fix: pip uninstall'):
        check_openmmlab_stack(_versions(mmcv=('mmcv-lite', '2.1.0')),
                              lambda: True)


def test_mmcv_without_compiled_ops_rejected():
    with pytest.raises(ImportError, match=r'compiled ops \(mmcv._ext\).*Fix'):
        check_openmmlab_stack(_versions(), lambda: False)


def test_installed_stack_passes_for_real():
    check_openmmlab_stack()


@pytest.mark.parametrize('family', ['openmmlab', 'onedl'])
@pytest.mark.parametrize('odd', sorted(SUPPORTED))
def test_mixed_families_refused_with_both_setup_commands(installed, family, odd):
    """One family's stack with one package swapped for the other family's
    (only that one installed): a mix, refused with both setup commands."""
    other = 'onedl' if family == 'openmmlab' else 'openmmlab'
    stack = dict(zip(SUPPORTED, _listing(family)))
    stack[odd] = dict(zip(SUPPORTED, _listing(other)))[odd]
    installed(stack.values())
    with pytest.raises(ImportError) as err:
        check_openmmlab_stack(mmcv_has_ops=lambda: True)
    msg = str(err.value)
    assert 'mix of toolbox families' in msg and 'side by side' not in msg
    names = {'openmmlab': 'OpenMMLab', 'onedl': 'OneDL'}
    for module, (dist, version) in stack.items():
        assert f'{dist} {version} ({names[other if module == odd else family]})' in msg
    assert '`bash scripts/setup_env.sh`' in msg
    assert '`STACK=onedl bash scripts/setup_env.sh`' in msg


def test_fix_hint_follows_the_family_of_the_package():
    with pytest.raises(ImportError, match='onedl-mmcv==2.3.6'):
        check_openmmlab_stack(
            _versions(mmengine=('onedl-mmengine', '0.10.12'),
                      mmcv=('onedl-mmcv', '2.4.1'),
                      mmseg=('onedl-mmsegmentation', '1.4.2'),
                      mmdet=('onedl-mmdetection', '3.5.1')), lambda: True)


@pytest.mark.parametrize('family', ['openmmlab', 'onedl'])
def test_one_family_listed_passes(installed, family):
    installed(_listing(family) + [('numpy', '1.26.4')])
    check_openmmlab_stack(mmcv_has_ops=lambda: True)


@pytest.mark.parametrize('family', ['openmmlab', 'onedl'])
@pytest.mark.parametrize('module', sorted(SUPPORTED))
def test_both_distributions_of_a_module_refused(installed, family, module):
    """A stack of one family plus the other family's distribution of the same
    module: both are installed, the first would import, and the check names
    both and how to keep one."""
    ours, theirs = COUNTERPARTS[module][::1 if family == 'openmmlab' else -1]
    other = dict(_listing('onedl' if family == 'openmmlab' else 'openmmlab'))
    installed(_listing(family) + [(theirs, other[theirs])])
    with pytest.raises(ImportError) as err:
        check_openmmlab_stack(mmcv_has_ops=lambda: True)
    msg = str(err.value)
    mine = dict(_listing(family))
    assert f'2 distributions of {module} installed side by side' in msg
    assert f'{ours} {mine[ours]}' in msg and f'{theirs} {other[theirs]}' in msg
    assert 'a mix of toolbox families' in msg
    assert f'pip uninstall -y {theirs} && ' in msg
    assert f'pip uninstall -y {ours} && ' in msg
    assert SUPPORTED[module].pin in msg and SUPPORTED[module].onedl_pin in msg


def test_mmcv_lite_next_to_mmcv_refused(installed):
    installed(_listing('openmmlab') + [('mmcv-lite', '2.1.0')])
    with pytest.raises(ImportError) as err:
        check_openmmlab_stack(mmcv_has_ops=lambda: True)
    msg = str(err.value)
    assert 'mmcv 2.1.0 (OpenMMLab) and mmcv-lite 2.1.0 (OpenMMLab)' in msg
    assert 'mix of toolbox families' not in msg
    assert '`pip uninstall -y mmcv-lite && pip install' in msg
    assert 'pip uninstall -y mmcv &&' not in msg  # keeping mmcv-lite is no fix


def test_providers_listed_in_requirement_order_with_normalized_names(installed):
    installed([('onedl_mmcv', '2.3.6'), ('MMCV', '2.1.0'), ('torch', '2.5.1')])
    assert installed_providers(SUPPORTED['mmcv']) == [
        ('mmcv', '2.1.0'), ('onedl-mmcv', '2.3.6')]
    assert installed_version(SUPPORTED['mmcv']) == ('mmcv', '2.1.0')
    assert installed_version(SUPPORTED['mmdet']) == (None, None)


def test_installed_distributions_lists_the_real_stack():
    names = dict(version_check.installed_distributions())
    for module in SUPPORTED:
        assert installed_version(SUPPORTED[module])[0] in names
    assert len(installed_providers(SUPPORTED['mmcv'])) == 1


@pytest.mark.parametrize('module', sorted(SUPPORTED))
def test_range_includes_its_minimum_and_excludes_its_maximum(module):
    req = SUPPORTED[module]
    dist = COUNTERPARTS[module][0]
    check_openmmlab_stack(_versions(**{module: (dist, req.minimum)}), lambda: True)
    with pytest.raises(ImportError, match='but found'):
        check_openmmlab_stack(_versions(**{module: (dist, req.maximum)}),
                              lambda: True)
