"""Unsupported stacks fail at import with one actionable message."""
from __future__ import annotations

import pytest

from m2f_plugin.utils.version_check import SUPPORTED, check_openmmlab_stack


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


@pytest.mark.parametrize('odd', ['mmcv', 'mmseg'])
def test_mixed_families_refused_with_both_setup_commands(odd):
    onedl = {'mmengine': ('onedl-mmengine', '0.10.12'),
             'mmcv': ('onedl-mmcv', '2.3.6'),
             'mmseg': ('onedl-mmsegmentation', '1.4.2'),
             'mmdet': ('onedl-mmdetection', '3.5.1')}
    onedl[odd] = _versions()(SUPPORTED[odd])  # one from the OpenMMLab family
    with pytest.raises(ImportError) as err:
        check_openmmlab_stack(_versions(**onedl), lambda: True)
    msg = str(err.value)
    assert 'mix of toolbox families' in msg
    assert f'{onedl[odd][0]} {onedl[odd][1]} (OpenMMLab)' in msg
    assert 'onedl-mmengine 0.10.12 (OneDL)' in msg
    assert '`bash scripts/setup_env.sh`' in msg
    assert '`STACK=onedl bash scripts/setup_env.sh`' in msg


def test_fix_hint_follows_the_family_of_the_package():
    with pytest.raises(ImportError, match='onedl-mmcv==2.3.6'):
        check_openmmlab_stack(
            _versions(mmengine=('onedl-mmengine', '0.10.12'),
                      mmcv=('onedl-mmcv', '2.4.1'),
                      mmseg=('onedl-mmsegmentation', '1.4.2'),
                      mmdet=('onedl-mmdetection', '3.5.1')), lambda: True)
