"""PQ configs say how to install panopticapi before anything runs."""
from __future__ import annotations

import importlib.util

import pytest
from mmengine.config import Config

from m2f_plugin.utils import panopticapi_check
from m2f_plugin.utils.panopticapi_check import require_panopticapi
from tests.helpers import REPO

PANOPTIC_DEMO = (f'{REPO}/configs/demo/'
                 'mask2former_r18-tiny_1xb8-600it_synthetic-panoptic-128x128.py')


def test_installed_and_importable():
    """The setup installs it: mmdet's metric imports these names."""
    from panopticapi.evaluation import OFFSET, VOID, PQStat  # noqa: F401
    from panopticapi.utils import id2rgb, rgb2id  # noqa: F401
    require_panopticapi(Config.fromfile(PANOPTIC_DEMO))


def test_missing_module_names_the_package_and_pin(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(panopticapi_check.importlib.util, 'find_spec',
                        lambda name: None if name == 'panopticapi' else real(name))
    with pytest.raises(ModuleNotFoundError,
                       match='CocoPanopticMetric.*panopticapi-lite==0.2.0'):
        require_panopticapi(Config.fromfile(PANOPTIC_DEMO))
    # configs without PQ do not need it
    require_panopticapi(Config(dict(val_evaluator=dict(type='IoUMetric'))))
    require_panopticapi(Config(dict(test_evaluator=[
        dict(type='CocoMetric', metric=['segm'])])))
