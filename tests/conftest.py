"""pytest configuration and fixtures; shared helpers live in tests/helpers."""
from __future__ import annotations

import os

import pytest
import torch

import m2f_plugin  # noqa: F401  (registers the plugin)
from tests.helpers import fixed_points


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than ~30 s on 2 cores')
    config.addinivalue_line(
        'markers', 'heavy: minutes on 2 cores (torch.compile of whole '
        'models); left out of `make test`, run by `make test-heavy`')
    config.addinivalue_line(
        'markers', 'perf: a performance contract (op/launch counts within a '
        'documented budget), not a correctness check')
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope='session')
def mmseg_modules():
    """mmseg's modules registered once."""
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture(autouse=True)
def mmseg_default_scope(mmseg_modules):
    """Builders resolve bare type names (``PackSegInputs``, ``M2FHead``) in
    mmseg in every test, whatever scope an earlier test's Runner left
    current (a Runner makes its own scope current)."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


@pytest.fixture
def fixed_rand(monkeypatch):
    """Make ``torch.rand(N, P, 2)`` return ``fixed_points(N, P)``.

    For the reference implementations (mmdet's point draws, per image as
    (1, P, 2) and for importance sampling as (M, S, 2)); ours gets the same
    points through its ``draw_points`` seam (``use_fixed_points``).
    """
    real_rand = torch.rand

    def rand(*size, device=None, dtype=None, **kwargs):
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        if len(size) != 3 or size[-1] != 2:
            return real_rand(*size, device=device, dtype=dtype, **kwargs)
        return fixed_points(size[0], size[1], device).to(
            dtype or torch.float32)

    monkeypatch.setattr(torch, 'rand', rand)
    return rand
