"""One small generated set shared by the data set tests (read-only)."""
from __future__ import annotations

import pytest

from m2f_plugin.datasets import generate_synthetic_shapes

# small and fast; seed 0 has several instances of one class per image and
# occlusions at this size (asserted in the tests)
SMALL = dict(num_train=8, num_val=4, size=64, seed=0)


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory) -> str:
    """Root of the seed-0 set of ``SMALL`` size (do not write into it)."""
    root = str(tmp_path_factory.mktemp('shapes') / 'root')
    return generate_synthetic_shapes(root, **SMALL)
