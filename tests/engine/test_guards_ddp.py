"""Distributed training (2 gloo processes through tools/train.py): the
guards decide together, so all ranks stop at the same iteration and none is
left waiting in a collective."""
from __future__ import annotations

import socket
import sys

import pytest

from tests.engine import (
    checkpoints,
    demo_options,
    nonfinite_checkpoints,
    run,
    train_cmd,
)
from tests.helpers import DEMO_CONFIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from m2f_plugin.datasets import generate_synthetic_shapes
    return generate_synthetic_shapes(
        str(tmp_path_factory.mktemp('shapes')), num_train=8, num_val=2,
        size=64)


@pytest.mark.slow
def test_nan_on_one_rank_stops_both_ranks_together(tmp_path, data_root):
    """Rank 1 alone logs a NaN loss term at iteration 2 (its gradients stay
    finite, so rank 0 sees nothing wrong itself). Both ranks raise the error
    at iteration 2, naming rank 1's term and both ranks' images; the run
    exits non-zero within seconds (no rank waits in the next gradient
    all-reduce) and the iteration-2 checkpoint is not written."""
    work = str(tmp_path / 'ddp')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
           '2', '--master_port', str(_free_port())] + train_cmd(
        DEMO_CONFIG, work, '--launcher', 'pytorch')[1:]
    out = run(cmd + demo_options(data_root, 6, **{
        'default_hooks.checkpoint.interval': 1,
        'env_cfg.dist_cfg.backend': 'gloo',
        'custom_imports.imports': "['m2f_plugin','tests.engine']",
        'custom_hooks.0.type': 'InjectNonFiniteLossHook',
        'custom_hooks.0.rank': 1, 'custom_hooks.0.at': 2}),
        timeout=150)
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    # torchrun prefixes each rank's lines with "[rankN]: "
    errors = sorted(line.split(': ', 1)[0] for line in log.splitlines()
                    if line.endswith('M2FNonFiniteError: Loss became '
                                     'infinite or NaN at iteration=2 (of '
                                     'max_iters=6).'))
    assert errors == ['[rank0]', '[rank1]'], log[-6000:]
    # on each rank: rank 1's term only, the images of both ranks
    assert log.count('Non-finite terms (rank 1: 1): '
                     'decode.loss_injected=nan') == 2, log[-6000:]
    assert 'Non-finite terms (rank 0' not in log
    assert log.count('  [rank 0] ') == log.count('  [rank 1] ') == 4
    assert 'torchrun --nproc_per_node=2' in log  # the resume command
    assert checkpoints(work) == ['iter_1.pth']
    assert nonfinite_checkpoints(work) == []
