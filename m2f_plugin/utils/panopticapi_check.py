"""A clear error when a config evaluates PQ and ``panopticapi`` is missing.

mmdet's ``CocoPanopticMetric`` imports ``panopticapi``, which is not on PyPI;
its own message points at a git install. The ``panopticapi-lite`` package
provides the same module (pinned in ``requirements/panoptic.txt``).
"""
from __future__ import annotations

import importlib.util
from typing import Any, Iterable

__all__ = ['INSTALL_HINT', 'require_panopticapi']

INSTALL_HINT = ('pip install --no-deps panopticapi-lite==0.2.0  (the pin in '
                'requirements/panoptic.txt; scripts/setup_env.sh installs it)')


def _metric_types(evaluator: Any) -> Iterable[str]:
    if isinstance(evaluator, dict):
        if 'metrics' in evaluator:  # an Evaluator config
            yield from _metric_types(evaluator['metrics'])
        elif 'type' in evaluator:
            yield str(evaluator['type']).split('.')[-1]
    elif isinstance(evaluator, (list, tuple)):
        for item in evaluator:
            yield from _metric_types(item)


def require_panopticapi(cfg: Any,
                        keys: Iterable[str] = ('val_evaluator',
                                               'test_evaluator')) -> None:
    """Raise ``ModuleNotFoundError`` if ``cfg`` uses ``CocoPanopticMetric``
    and ``panopticapi`` cannot be imported."""
    uses = any('CocoPanopticMetric' in _metric_types(cfg.get(k))
               for k in keys if cfg.get(k) is not None)
    if uses and importlib.util.find_spec('panopticapi') is None:
        raise ModuleNotFoundError(
            'this config evaluates panoptic quality with mmdet\'s '
            'CocoPanopticMetric, which needs the `panopticapi` module. '
            f'Install it with: {INSTALL_HINT}')
