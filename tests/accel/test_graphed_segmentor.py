"""``M2FEncoderDecoder``: training graphs that include the backbone.

CPU, with the stand-in ``make_graphed_callables`` of
``tests/accel/stand_in.py`` and the head reporting that it graphs the step
(what it does on CUDA): the graphed branch gives mmseg ``EncoderDecoder``'s
loss keys, values, gradients and BatchNorm statistics (the warm-up's updates
are undone) with one capture of backbone and decoders; a capture with the
backbone that fails restores BatchNorm and keeps the decoders graphed; an
auxiliary head or ``graph_backbone=False`` keep ``EncoderDecoder``'s loss;
the backbone's mode, frozen weights and swapped layers select new graphs.
GPU (skipped without CUDA): real graphed steps with a checkpointed
BatchNorm backbone equal eager steps in losses, every gradient and the
BatchNorm running statistics.
"""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from mmseg.registry import MODELS

from m2f_plugin.accel.cuda_graphs import Encoder, FlatDecoders, GraphedTraining
from tests.accel.stand_in import CudaSpy, StandInCUDA, needs_cuda
from tests.helpers import make_label_maps, seg_data_samples, use_fixed_points

HEAD = dict(
    in_channels=[8, 16, 32, 64], strides=[4, 8, 16, 32],
    feat_channels=32, out_channels=32, num_classes=5, num_queries=8,
    pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                       ffn_dims=64, num_groups=8),
    transformer_decoder=dict(type='M2FMaskedTransformerDecoder', num_layers=3,
                             num_heads=4, ffn_dims=64),
    matcher=dict(type='M2FHungarianMatcher', num_points=64), num_points=64)
AUX = dict(type='FCNHead', in_channels=32, in_index=2, channels=8,
           num_convs=1, concat_input=False, num_classes=5, dropout_ratio=0.0,
           norm_cfg=dict(type='BN', requires_grad=True))


def segmentor(graphed: bool, msda_impl: str = 'mmcv', **kwargs):
    """A ResNet-18 (base width 8, stage 0 checkpointed, BatchNorm) + tiny
    head: ``M2FEncoderDecoder`` with ``M2FGraphedHead(cuda_graph_train=
    True)``, or mmseg's ``EncoderDecoder`` with ``M2FHead``."""
    head = copy.deepcopy(HEAD)
    head['pixel_decoder']['msda_impl'] = msda_impl
    head.update(type='M2FGraphedHead', cuda_graph_train=True) if graphed \
        else head.update(type='M2FHead')
    model = MODELS.build(dict(
        type='M2FEncoderDecoder' if graphed else 'EncoderDecoder',
        backbone=dict(type='M2FResNet', depth=18, base_channels=8,
                      cp_stages=(0, ),
                      norm_cfg=dict(type='BN', requires_grad=True)),
        decode_head=head, **kwargs))
    use_fixed_points(model)
    return model


def pair(device: str = 'cpu', msda_impl: str = 'mmcv', **kwargs):
    """The graphing segmentor and an eager ``EncoderDecoder`` twin with the
    same weights, both in train mode."""
    torch.manual_seed(0)
    ours = segmentor(True, msda_impl, **kwargs).to(device).train()
    ref = segmentor(False, msda_impl, **kwargs).to(device).train()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def batch(device: str = 'cpu', step: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(step)
    images = torch.randn(2, 3, size, size, generator=g).to(device)
    samples = seg_data_samples(make_label_maps(2, size, size, 5, seed=step))
    for s in samples:
        s.gt_sem_seg.data = s.gt_sem_seg.data.to(device)
    return images, samples


def as_if_on_cuda(model, monkeypatch) -> None:
    """The head reports that it graphs this step, as it does on CUDA, so
    that ``M2FEncoderDecoder`` takes its graphed branch on the CPU."""
    monkeypatch.setattr(model.decode_head, 'graphs_training', lambda x: True)


def assert_same_step(ours, ref, step_index=0, backward=True):
    """Same loss keys and values; with ``backward``, the same gradient of
    every parameter and the same buffers (BatchNorm statistics)."""
    images, samples = batch('cpu', step_index)
    got, want = ours.loss(images, samples), ref.loss(images, samples)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
    if not backward:
        return
    for model, losses in ((ours, got), (ref, want)):
        model.zero_grad(set_to_none=True)
        sum(v for k, v in losses.items() if 'loss' in k).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if q.grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    for (name, a), b in zip(ours.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_graphed_branch_equals_encoder_decoder(stand_in, monkeypatch):
    """Loss keys (``decode.`` prefix), values, gradients and BatchNorm
    statistics of mmseg's ``EncoderDecoder`` (the capture's warm-up runs
    are undone), from one capture that holds the backbone, replayed every
    step."""
    ours, ref = pair()
    as_if_on_cuda(ours, monkeypatch)
    for i in range(2):
        assert_same_step(ours, ref, i)
    assert stand_in.attempts == 1 and stand_in.replays == 2
    assert stand_in.captured[0]().encoder is not None


def test_failed_backbone_capture_restores_batchnorm_keeps_decoder_graphs(
        monkeypatch):
    """A capture with the backbone that fails after its warm-up: that step
    runs eagerly with the BatchNorm statistics put back (equal to
    ``EncoderDecoder``'s), and from then on the backbone runs eagerly and
    only the decoders are captured and replayed."""
    graphs = StandInCUDA(monkeypatch,
                         refuse=lambda module: module.encoder is not None)
    ours, ref = pair()
    as_if_on_cuda(ours, monkeypatch)
    for i in range(2):
        assert_same_step(ours, ref, i)
    assert graphs.attempts == 2 and graphs.replays == 1
    assert len(graphs.captured) == 1
    assert graphs.captured[0]().encoder is None


def test_failed_backbone_capture_warns_once(monkeypatch, warnings_logged):
    StandInCUDA(monkeypatch, refuse=lambda module: module.encoder is not None)
    ours, _ = pair()
    as_if_on_cuda(ours, monkeypatch)
    images, samples = batch()
    ours.loss(images, samples)
    assert len(warnings_logged) == 1, warnings_logged
    assert 'decoders stay graphed' in warnings_logged[0]


# the auxiliary head is mmseg's FCNHead with mmseg's CrossEntropyLoss
@pytest.mark.filterwarnings('ignore:``build_loss`` would be deprecated')
@pytest.mark.filterwarnings('ignore:Default ``avg_non_ignore`` is False')
def test_auxiliary_head_or_switch_off_keep_encoder_decoder_loss(
        stand_in, monkeypatch):
    """With an auxiliary head (it needs the backbone's maps) or with
    ``graph_backbone=False``, ``loss`` is ``EncoderDecoder``'s: nothing is
    captured (on the CPU only the graphed branch would capture)."""
    ours, ref = pair(auxiliary_head=AUX)
    as_if_on_cuda(ours, monkeypatch)
    assert_same_step(ours, ref, backward=False)
    assert any(k.startswith('aux.') for k in ours.loss(*batch()))
    ours, ref = pair()
    as_if_on_cuda(ours, monkeypatch)
    ours.graph_backbone = False
    assert_same_step(ours, ref, backward=False)
    assert stand_in.attempts == 0


def test_backbone_changes_select_new_graphs(stand_in):
    """The backbone's frozen weights, a layer's mode (BatchNorm statistics)
    and a swapped layer each need a capture of their own; back to the first
    state, its graphs replay."""
    ours, _ = pair()
    head, backbone = ours.decode_head, ours.backbone
    graphs = GraphedTraining(max_graphs=8)
    images = batch()[0]

    def call():
        encoder = Encoder(backbone, None, list)  # a new wrapper every step
        return graphs(FlatDecoders(head, encoder), (images, ))

    @contextlib.contextmanager
    def changed(set_, undo):
        set_()
        yield
        undo()

    conv1, layer1, bn1 = backbone.conv1, backbone.layer1, backbone.bn1
    variants = [
        changed(lambda: conv1.weight.requires_grad_(False),
                lambda: conv1.weight.requires_grad_(True)),
        changed(layer1.eval, layer1.train),
        changed(lambda: setattr(backbone, 'bn1', copy.deepcopy(bn1)),
                lambda: setattr(backbone, 'bn1', bn1)),
    ]
    call()
    for i, context in enumerate(variants):
        with context:
            call()
            call()
        assert stand_in.attempts == i + 2, f'variant {i}'
        call()
        assert stand_in.attempts == i + 2, f'after variant {i}'
    assert stand_in.replays == 1 + 3 * len(variants)


def _assert_grads_close(got: dict, want: dict, step_index: int) -> None:
    """Every gradient within rtol 1e-3 / atol 1e-4 (the MSDA backward sums
    with atomics, in any order); the message lists the worst ones."""
    bad = []
    for name, b in want.items():
        a = got[name]
        if b is None or a is None:
            assert a is None and b is None, (name, step_index)
            continue
        err = ((a - b).abs() - 1e-3 * b.abs()).max().item()
        if err > 1e-4:
            bad.append((err, name, (a - b).abs().max().item(),
                        b.abs().max().item()))
    assert not bad, f'step {step_index}: (excess, name, max|diff|, ' \
        f'max|ref|) {sorted(bad, reverse=True)[:6]}'


def _gpu_step(model, images, samples):
    model.zero_grad(set_to_none=True)
    losses = model.loss(images, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    return total.detach(), {n: p.grad for n, p in model.named_parameters()}


@needs_cuda
@pytest.mark.parametrize('msda_impl', ['mmcv', 'triton'])
def test_gpu_graphed_backbone_steps_match_eager(msda_impl, no_tf32,
                                                monkeypatch):
    spy = CudaSpy(monkeypatch)
    ours, ref = pair('cuda', msda_impl)
    opt = torch.optim.SGD(ours.parameters(), lr=0.05)
    for i in range(4):  # new images and updated weights every step
        images, samples = batch('cuda', i, 64)
        got, g_grads = _gpu_step(ours, images, samples)
        want, r_grads = _gpu_step(ref, images, samples)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        _assert_grads_close(g_grads, r_grads, i)
        # running statistics: updated once per step (the capture's warm-up
        # runs were undone; checkpointed stage 0 updates twice, in both)
        for (name, a), b in zip(ours.named_buffers(), ref.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5,
                                       msg=f'step {i}: {name}')
        opt.step()
        # the graph must read the updated weights in place; the eager twin
        # restarts from them, since with batch-2 BatchNorm on 2x2 maps tiny
        # summation-order differences would otherwise grow step after step
        ref.load_state_dict(ours.state_dict())
    # one capture, with the backbone inside, replayed every step
    assert spy.attempts == 1 and spy.replays == 4
    assert spy.captured[0]().encoder is not None
    assert g_grads['backbone.conv1.weight'] is not None
