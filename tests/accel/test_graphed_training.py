"""``M2FGraphedHead(cuda_graph_train=True)``: graphed training equals eager.

The tests taking the ``graphs`` fixture run on the CPU against the stand-in
``make_graphed_callables`` of ``tests/accel/stand_in.py`` (warm-up runs,
then a replay-counting module) and on a GPU against the real one (skipped
without CUDA): losses and the gradients of every parameter and of the
head's inputs (the backbone's share) equal the eager ``M2FHead``'s step
after step, with one capture for all steps. The ``test_gpu_*`` tests run
``loss`` end to end on a GPU.
"""
from __future__ import annotations

import contextlib
import copy
import pickle

import pytest
import torch
from torch import nn

from m2f_plugin.accel.cuda_graphs import FlatDecoders, GraphedTraining
from tests.accel.stand_in import CudaSpy, HostReadingDecoders, decode, needs_cuda
from tests.helpers import (
    feats,
    make_label_maps,
    seg_data_samples,
    tiny_head,
    use_fixed_points,
)


def _pd(**kw):
    return dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                ffn_dims=64, num_groups=8, **kw)


def _td(**kw):
    return dict(type='M2FMaskedTransformerDecoder', num_layers=3,
                num_heads=4, ffn_dims=64, **kw)


def pair(device='cpu', **model_kw):
    """``M2FGraphedHead(cuda_graph_train=True)`` and an eager ``M2FHead``
    twin with the same weights, both drawing fixed points."""
    head = tiny_head(type='M2FGraphedHead', cuda_graph_train=True,
                     **model_kw).to(device).train()
    eager = tiny_head(**model_kw).to(device).train()
    eager.load_state_dict(head.state_dict())
    for m in (head, eager):
        use_fixed_points(m)
    return head, eager


def batch(device, step=0, size=32):
    """Backbone maps (scaled by the step) and label maps for 2 images."""
    x = [f.to(device) * (step + 1) for f in feats(2, size, size)]
    samples = seg_data_samples(make_label_maps(2, size, size, 5, seed=1))
    for s in samples:
        s.gt_sem_seg.data = s.gt_sem_seg.data.to(device)
    return x, samples


def step(head, x, samples, forward=None):
    """Total loss and gradients (parameters, then inputs) of one step:
    ``head.loss``, or the losses of ``forward(x)``'s prediction sets."""
    head.zero_grad(set_to_none=True)
    x = [f.detach().clone().requires_grad_() for f in x]
    if forward is None:
        losses = head.loss(x, samples, None)
    else:
        losses = head.loss_by_feat(forward(x), samples)
    total = sum(losses.values())
    total.backward()
    return total.detach(), [p.grad for p in head.parameters()] + \
        [f.grad for f in x]


def assert_steps_equal(got, want, device):
    """Losses and gradients equal (on a GPU within the atomics' order: mmcv's
    deformable-attention backward sums in any order)."""
    loss_tol, grad_tol = ((dict(rtol=1e-4, atol=1e-5),
                           dict(rtol=1e-3, atol=1e-4)) if device == 'cuda'
                          else ({}, {}))
    torch.testing.assert_close(got[0], want[0], **loss_tol)
    assert len(got[1]) == len(want[1])
    for i, (a, b) in enumerate(zip(got[1], want[1])):
        if b is None:
            assert a is None, i
        else:
            torch.testing.assert_close(a, b, msg=str(i), **grad_tol)


def test_cuda_graph_train_is_true_or_false():
    for mode in (False, True):
        head = tiny_head(type='M2FGraphedHead', cuda_graph_train=mode)
        assert head.cuda_graph_train is mode
    # the removed mode that graphed only the transformer decoder
    with pytest.raises(ValueError, match='expected True or False'):
        tiny_head(type='M2FGraphedHead',
                  cuda_graph_train='transformer_decoder')


def test_cpu_head_trains_eagerly_without_capturing(stand_in):
    head, eager = pair()
    x, samples = batch('cpu')
    assert not head.graphs_training(x[0])
    assert_steps_equal(step(head, x, samples), step(eager, x, samples),
                       'cpu')
    assert stand_in.attempts == 0 and stand_in.replays == 0


def test_graphed_steps_equal_eager_steps(graphs):
    """Steps with new inputs and updated weights: one capture (of the
    decoders alone), a replay per step, each step equal to eager."""
    device = graphs.device
    head, eager = pair(device)
    opt_g = torch.optim.SGD(head.parameters(), lr=0.1)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    for i in range(2):
        x, samples = batch(device, i)
        got = step(head, x, samples, lambda f: decode(head, f))
        assert_steps_equal(got, step(eager, x, samples), device)
        opt_g.step()
        opt_e.step()
    assert graphs.attempts == 1 and graphs.replays == 2
    assert graphs.captured[0]().encoder is None


def test_each_signature_gets_its_own_graphs(stand_in):
    """Input shapes and gradient flags, autocast, frozen parameters, a
    submodule's mode, a swapped submodule and a replaced parameter each need
    a capture of their own; back to the first signature, its graphs replay."""
    head, _ = pair()
    graphs = GraphedTraining(max_graphs=16)
    x = [f.requires_grad_() for f in feats(1, 32, 32)]
    cls_embed = head.transformer_decoder.predictor.cls_embed
    mask_proj = head.pixel_decoder.mask_proj

    def call(inputs=x):
        return graphs(FlatDecoders(head), inputs)

    @contextlib.contextmanager
    def swapped(module, name, new):
        old = getattr(module, name)
        setattr(module, name, new)
        yield
        setattr(module, name, old)

    @contextlib.contextmanager
    def changed(set_, undo):
        set_()
        yield
        undo()

    variants = [
        (contextlib.nullcontext(), feats(1, 32, 64)),
        (contextlib.nullcontext(), feats(1, 32, 32)),  # no gradients
        (torch.autocast('cpu', dtype=torch.bfloat16), x),
        (changed(lambda: cls_embed.weight.requires_grad_(False),
                 lambda: cls_embed.weight.requires_grad_(True)), x),
        (changed(mask_proj.eval, mask_proj.train), x),
        (swapped(head.pixel_decoder, 'mask_proj', copy.deepcopy(mask_proj)),
         x),
        (swapped(cls_embed, 'weight',
                 nn.Parameter(cls_embed.weight.detach().clone())), x),
    ]
    call()
    for i, (context, inputs) in enumerate(variants):
        with context:
            call(inputs)
            call(inputs)
        assert stand_in.attempts == i + 2, f'variant {i}'
        call()
        assert stand_in.attempts == i + 2, f'after variant {i}'
    assert stand_in.replays == 1 + 3 * len(variants)


def test_failed_capture_trains_eagerly_with_one_warning(graphs,
                                                        warnings_logged):
    """A host read inside the decoders makes the capture fail: the steps are
    the eager ones, one warning says so, and no capture is tried again."""
    device = graphs.device
    head, eager = pair(device)
    decoders = HostReadingDecoders(head)
    for i in range(2):
        x, samples = batch(device, i)
        got = step(head, x, samples,
                   lambda f: head.graphed_training(decoders, f))
        assert_steps_equal(got, step(eager, x, samples), device)
    assert graphs.attempts == 1 and not graphs.captured
    assert graphs.replays == 0
    assert len(warnings_logged) == 1
    assert 'capture failed' in warnings_logged[0]


def test_moves_reloads_and_mode_switches_drop_graphs(stand_in):
    """``.to()``, ``load_state_dict``, ``train()`` and ``eval()`` drop the
    training graphs and release them at once (their memory pool); the next
    step captures again."""
    head, _ = pair()
    x = [f.requires_grad_() for f in feats(1, 32, 32)]
    decode(head, x)
    actions = [('to', lambda: head.to('cpu')),
               ('load_state_dict',
                lambda: head.load_state_dict(head.state_dict())),
               ('train', head.train), ('eval', head.eval)]
    for i, (name, action) in enumerate(actions):
        graphed = stand_in.captured[-1]
        action()
        assert graphed() is None, f'{name} kept the graphs'
        head.train()
        decode(head, x)
        assert stand_in.attempts == i + 2, name


def test_copies_and_pickles_start_without_graphs(stand_in):
    """``deepcopy`` (EMA) and pickling leave the graphs behind (they cannot
    be copied); each copy captures its own, the original keeps replaying."""
    head, _ = pair()
    x = [f.requires_grad_() for f in feats(1, 32, 32)]
    decode(head, x)
    copies = [copy.deepcopy(head), pickle.loads(pickle.dumps(head))]
    for n, clone in enumerate(copies):
        decode(clone, x)
        assert stand_in.attempts == n + 2
    replays = stand_in.replays
    decode(head, x)
    assert stand_in.attempts == 3 and stand_in.replays == replays + 1


@needs_cuda
@pytest.mark.parametrize('impl,with_cp', [('triton', False), ('mmcv', True)])
def test_gpu_graphed_steps_match_eager(impl, with_cp, monkeypatch):
    """``head.loss`` end to end (the default impl: the ``[cuda]`` case of
    ``test_graphed_steps_equal_eager_steps``)."""
    spy = CudaSpy(monkeypatch)
    head, eager = pair('cuda', pixel_decoder=_pd(msda_impl=impl,
                                                 with_cp=with_cp),
                       transformer_decoder=_td(with_cp=with_cp))
    opt_g = torch.optim.SGD(head.parameters(), lr=0.1)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)

    for i in range(4):  # new inputs and updated weights every step
        x, samples = batch('cuda', i, 64)
        got = step(head, x, samples)
        want = step(eager, x, samples)
        assert_steps_equal(got, want, 'cuda')
        opt_g.step()
        opt_e.step()
    assert spy.attempts == 1 and spy.replays == 4


@needs_cuda
def test_gpu_bf16_autocast_trains_finite_and_close(monkeypatch):
    spy = CudaSpy(monkeypatch)
    head, eager = pair('cuda')
    x, samples = batch('cuda', 0, 64)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        got = step(head, x, samples)[0]
        want = step(eager, x, samples)[0]
        again = step(head, x, samples)[0]  # a replay
    assert torch.isfinite(got) and torch.isfinite(again)
    torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(again, want, rtol=3e-2, atol=3e-2)
    assert spy.attempts == 1 and spy.replays == 2


@needs_cuda
def test_gpu_pytorch_msda_trains_eagerly(monkeypatch):
    spy = CudaSpy(monkeypatch)
    head, eager = pair('cuda', pixel_decoder=_pd(msda_impl='pytorch'))
    x, samples = batch('cuda', 0, 64)
    assert not head.graphs_training(x[0])
    assert_steps_equal(step(head, x, samples),
                       step(eager, x, samples), 'cuda')
    assert spy.attempts == 0


@needs_cuda
def test_gpu_eval_releases_the_graphs_memory(monkeypatch):
    spy = CudaSpy(monkeypatch)
    head, _ = pair('cuda')
    x, samples = batch('cuda', 0, 64)
    step(head, x, samples)
    assert spy.attempts == 1
    torch.cuda.synchronize()
    reserved = torch.cuda.memory_reserved()
    head.eval()  # drops the graphs: their pool is released at once
    assert spy.captured[0]() is None
    torch.cuda.empty_cache()
    assert torch.cuda.memory_reserved() < reserved
