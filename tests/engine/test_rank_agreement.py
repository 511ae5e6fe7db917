"""``any_rank`` and ``gather_from_ranks`` in one process, with the world
size simulated: a single-rank group answers locally without a collective,
a larger one always goes through the collective (whose answer, not the
local one, decides)."""
from __future__ import annotations

import pytest
import torch.distributed as torch_dist

import m2f_plugin.engine.rank_agreement as rank_agreement
from m2f_plugin.engine.rank_agreement import any_rank, gather_from_ranks


@pytest.fixture
def world(monkeypatch):
    """Pretend to be rank 0 of a distributed run of ``world(n)`` ranks; the
    collectives are fakes that record their calls and answer as if another
    rank had raised its flag (``any_rank``) or sent ``'other'``."""
    calls = []

    def all_reduce(tensor, op=None, group=None):
        calls.append('all_reduce')
        tensor.fill_(1)

    def all_gather_object(out, obj, group=None):
        calls.append('all_gather_object')
        out[:] = [obj] + ['other'] * (len(out) - 1)

    monkeypatch.setattr(torch_dist, 'all_reduce', all_reduce)
    monkeypatch.setattr(torch_dist, 'all_gather_object', all_gather_object)
    monkeypatch.setattr(rank_agreement, 'prepare_host_group', lambda: None)
    monkeypatch.setattr(rank_agreement, 'is_distributed', lambda: True)

    def set_size(n: int) -> list:
        monkeypatch.setattr(rank_agreement, 'get_world_size', lambda: n)
        return calls

    return set_size


@pytest.mark.parametrize('flag', [False, True])
def test_one_rank_answers_locally_without_a_collective(world, flag):
    """A distributed run of a single rank: nothing to agree with, so no
    collective (a waiting all-reduce would cost a round trip per check)."""
    calls = world(1)
    assert any_rank(flag) is flag
    assert gather_from_ranks({'rank': 0}) == [{'rank': 0}]
    assert calls == []


def test_several_ranks_take_the_collectives_answer(world):
    """Two ranks: this rank's flag is ``False`` but the other rank's is
    ``True``, so every rank must stop; the gathered list holds both."""
    calls = world(2)
    assert any_rank(False) is True
    assert gather_from_ranks('mine') == ['mine', 'other']
    assert calls == ['all_reduce', 'all_gather_object']


def test_not_distributed_answers_locally(monkeypatch):
    """Outside a distributed run, the local answer, whatever the world
    size would claim."""
    monkeypatch.setattr(rank_agreement, 'is_distributed', lambda: False)
    monkeypatch.setattr(rank_agreement, 'get_world_size', lambda: 4)

    def no_collective(*args, **kwargs):
        raise AssertionError('a collective outside a distributed run')

    monkeypatch.setattr(torch_dist, 'all_reduce', no_collective)
    monkeypatch.setattr(torch_dist, 'all_gather_object', no_collective)
    assert any_rank(True) is True and any_rank(False) is False
    assert gather_from_ranks(3) == [3]
