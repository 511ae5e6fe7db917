"""Fixtures of the CUDA-graph tests: capture stand-in or spy, warnings."""
from __future__ import annotations

import logging

import pytest
import torch
from mmengine.logging import MMLogger

from tests.accel.stand_in import CudaSpy, StandInCUDA, needs_cuda


@pytest.fixture
def stand_in(monkeypatch):
    """CPU stand-ins for CUDA-graph capture (``StandInCUDA``)."""
    return StandInCUDA(monkeypatch)


@pytest.fixture(params=['cpu', pytest.param('cuda', marks=needs_cuda)])
def graphs(request, monkeypatch):
    """The stand-in on the CPU, a spy on real graphs on a GPU: the same
    counters (``device``, ``attempts``, ``captured``, ``replays``)."""
    if request.param == 'cpu':
        return StandInCUDA(monkeypatch)
    return CudaSpy(monkeypatch)


@pytest.fixture
def warnings_logged():
    """Messages of the warnings logged through mmengine's current logger
    (``print_log(..., logger='current')``) during the test."""
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def no_tf32():
    """Exact float32 convolutions and matmuls on a GPU: cuDNN may pick other
    algorithms inside a graph than eagerly, and TF32 results differ by
    ~1e-3 between algorithms."""
    saved = (torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved
