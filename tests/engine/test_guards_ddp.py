"""Distributed training (2 gloo processes): the guards decide together, so
all ranks stop at the same iteration and none is left in a collective."""
from __future__ import annotations

import json
import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.engine import (
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


def _worker(rank: int, port: int, out_dir: str) -> None:
    """Rank 1 alone logs a NaN term at iteration 3; rank 0 is finite."""
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    from m2f_plugin.engine import M2FNonFiniteError, M2FNonFiniteLossHook
    from tests.engine.test_nonfinite_loss_hook import FakeRunner, _batch
    runner = FakeRunner()
    hook = M2FNonFiniteLossHook()
    hook.before_train(runner)
    result = dict(rank=rank, stopped_at=None, message='')
    try:
        for it in range(1, 6):
            value = float('nan') if (rank, it) == (1, 3) else 1.0
            runner.step(hook, {'loss': 1.0, 'decode.loss_dice': value},
                        _batch(f'r{rank}_i{it}.png'))
    except M2FNonFiniteError as err:
        result.update(stopped_at=runner.iter, message=str(err))
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)
    dist.destroy_process_group()


def test_one_rank_nan_stops_every_rank_at_the_same_iteration(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2,
                       join=True, start_method='spawn')
    results = [json.loads((tmp_path / f'rank{r}.json').read_text())
               for r in range(2)]
    assert [r['stopped_at'] for r in results] == [3, 3]
    for r in results:
        msg = r['message']
        assert 'iteration=3 ' in msg
        # every rank's message names rank 1's term and both ranks' images
        assert 'Non-finite terms (rank 1: 1): decode.loss_dice=nan' in msg
        assert 'rank 0: ' not in msg.split('Images')[0]  # rank 0 was finite
        assert '[rank 0] r0_i3.png  (input finite)' in msg
        assert '[rank 1] r1_i3.png  (input finite)' in msg


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from m2f_plugin.datasets import generate_synthetic_shapes
    return generate_synthetic_shapes(
        str(tmp_path_factory.mktemp('shapes')), num_train=8, num_val=2,
        size=64)


@pytest.mark.slow
def test_diverging_ddp_run_stops_both_ranks(tmp_path, data_root):
    """tools/train.py on 2 gloo ranks with a diverging learning rate: both
    ranks raise the error (no rank waits for a timeout), exit status 1, and
    the only checkpoint written holds finite weights."""
    work = str(tmp_path / 'ddp')
    cmd = train_cmd(DEMO_CONFIG, work, '--launcher', 'pytorch')
    cmd[1:1] = ['-m', 'torch.distributed.run', '--nproc_per_node', '2',
                '--master_port', str(_free_port())]
    out = run(cmd + demo_options(
        data_root, 12, **{'optim_wrapper.optimizer.lr': 1e6,
                          'optim_wrapper.clip_grad': None,
                          'default_hooks.checkpoint.interval': 1,
                          'env_cfg.dist_cfg.backend': 'gloo'}),
        timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    assert log.count('M2FNonFiniteError: Loss became infinite or NaN at '
                     'iteration=2 ') == 2, log[-6000:]
    assert 'Non-finite terms (rank 0:' in log and \
        'Non-finite terms (rank 1:' in log
    assert 'torchrun --nproc_per_node=2' in log  # the resume command
    assert osp.exists(osp.join(work, 'iter_1.pth'))
    assert nonfinite_checkpoints(work) == []
    assert torch.load(osp.join(work, 'iter_1.pth'), map_location='cpu'
                      )['meta']['iter'] == 1
