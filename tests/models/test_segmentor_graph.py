"""``M2FEncoderDecoder``: training graphs that include the backbone.

CPU: the graphed branch, run eagerly, gives EncoderDecoder's loss keys,
values, gradients and BatchNorm statistics; an auxiliary head or
``graph_backbone=False`` keep EncoderDecoder's ``loss``; a capture with the
backbone that fails restores BatchNorm and keeps the decoders graphed; the
flat module the graphs capture equals backbone -> ``head.forward``. CUDA (skipped here):
graphed steps with a checkpointed BatchNorm backbone equal eager steps in
losses, every gradient and the BatchNorm running statistics.
"""
from __future__ import annotations

import copy

import pytest
import torch
from m2f_plugin.models.heads.cuda_graph_train import Encoder
from mmseg.registry import MODELS

from tests.helpers import make_label_maps, seg_data_samples

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason='CUDA graphs need a GPU')

HEAD = dict(
    type='M2FHead', in_channels=[8, 16, 32, 64], strides=[4, 8, 16, 32],
    feat_channels=32, out_channels=32, num_classes=5, num_queries=8,
    pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                       ffn_dims=64, num_groups=8),
    transformer_decoder=dict(type='M2FMaskedTransformerDecoder', num_layers=3,
                             num_heads=4, ffn_dims=64),
    matcher=dict(type='M2FHungarianMatcher', num_points=64), num_points=64)


def segmentor(kind: str, graph: bool, msda_impl: str = 'mmcv'):
    """A ResNet-18 (base width 8, stage 0 checkpointed) + tiny head model."""
    head = copy.deepcopy(HEAD)
    head['cuda_graph_train'] = graph
    head['pixel_decoder']['msda_impl'] = msda_impl
    return MODELS.build(dict(
        type=kind,
        backbone=dict(type='M2FResNet', depth=18, base_channels=8,
                      cp_stages=(0, ),
                      norm_cfg=dict(type='BN', requires_grad=True)),
        decode_head=head))


def pair(device: str, msda_impl: str = 'mmcv'):
    """``M2FEncoderDecoder`` graphing its training, and an eager
    ``EncoderDecoder`` twin with the same weights."""
    torch.manual_seed(0)
    ours = segmentor('M2FEncoderDecoder', True, msda_impl).to(device).train()
    ref = segmentor('EncoderDecoder', False, msda_impl).to(device).train()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def batch(device: str, step: int = 0):
    g = torch.Generator().manual_seed(step)
    images = torch.randn(2, 3, 64, 64, generator=g).to(device)
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=step))
    for s in samples:
        s.gt_sem_seg.data = s.gt_sem_seg.data.to(device)
    return images, samples


def step(model, images, samples, seed):
    """Total loss and every parameter's gradient after one backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the point sampling of the losses
    losses = model.loss(images, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    return total.detach(), {n: p.grad for n, p in model.named_parameters()}


def _as_if_on_cuda(model, monkeypatch):
    """Take the graphed branch on the CPU: the head reports that it graphs
    this step, and calls to ``loss_from_images`` are counted."""
    head = model.decode_head
    monkeypatch.setattr(head, 'graphs_training', lambda x: True)
    calls = []
    real = head.loss_from_images

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(head, 'loss_from_images', counted)
    return calls


def _stand_in_capture(monkeypatch, fail_with_backbone: bool) -> list:
    """Replace ``make_graphed_callables`` by a stand-in that runs the warm-up
    forwards (they update BatchNorm statistics) and returns the module
    itself, or raises as a refused capture would when the backbone is
    inside and ``fail_with_backbone``. Returns the list of captured modules."""
    captured = []

    def fake_make_graphed_callables(module, sample, num_warmup_iters):
        for _ in range(num_warmup_iters):
            module(*sample)
        if fail_with_backbone and module.encoder is not None:
            raise RuntimeError('operation not permitted when stream is '
                               'capturing')
        captured.append(module)
        return module  # stands in for the graphed callable

    monkeypatch.setattr(torch.cuda, 'make_graphed_callables',
                        fake_make_graphed_callables)
    return captured


def _assert_same_step(ours, ref, step_index=0):
    images, samples = batch('cpu', step_index)
    torch.manual_seed(step_index)
    got = ours.loss(images, samples)
    torch.manual_seed(step_index)
    want = ref.loss(images, samples)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)
    ours.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    sum(v for k, v in got.items() if 'loss' in k).backward()
    sum(v for k, v in want.items() if 'loss' in k).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if q.grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    for (name, a), b in zip(ours.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_graphed_branch_run_eagerly_equals_encoder_decoder(monkeypatch):
    """Same loss keys (``decode.`` prefix), values, gradients and BatchNorm
    statistics as mmseg's EncoderDecoder, through ``loss_from_images``."""
    ours, ref = pair('cpu')
    calls = _as_if_on_cuda(ours, monkeypatch)
    ours.decode_head._graphed_train.disabled = True  # run its module eagerly
    _assert_same_step(ours, ref)
    assert calls == [1]


def test_auxiliary_head_or_switch_off_means_encoder_decoder(monkeypatch):
    """With an auxiliary head (it needs the backbone's maps) or with
    ``graph_backbone=False``, ``loss`` is EncoderDecoder's."""
    aux = dict(type='FCNHead', in_channels=32, in_index=2, channels=8,
               num_convs=1, concat_input=False, num_classes=5,
               norm_cfg=dict(type='BN', requires_grad=True))
    torch.manual_seed(0)
    ours = segmentor('M2FEncoderDecoder', True)
    ref = segmentor('EncoderDecoder', False)
    for m in (ours, ref):
        m.auxiliary_head = MODELS.build(aux)
        m.train()
    ref.load_state_dict(ours.state_dict())
    calls = _as_if_on_cuda(ours, monkeypatch)
    # the decode head would graph its own part: keep it eager here
    ours.decode_head._graphed_train.disabled = True
    _assert_same_step(ours, ref)
    assert calls == []
    assert any(k.startswith('aux.') for k in ours.loss(*batch('cpu')))
    plain, plain_ref = pair('cpu')
    calls = _as_if_on_cuda(plain, monkeypatch)
    plain.graph_backbone = False
    plain.decode_head._graphed_train.disabled = True
    _assert_same_step(plain, plain_ref)
    assert calls == []


def test_failed_backbone_capture_restores_batchnorm_keeps_decoder_graphs(
        monkeypatch):
    """A capture with the backbone that fails after its warm-up runs: the
    BatchNorm statistics are put back, the backbone runs eagerly from then
    on, the decoders are still captured, and the step equals eager."""
    ours, ref = pair('cpu')
    _as_if_on_cuda(ours, monkeypatch)
    captured = _stand_in_capture(monkeypatch, fail_with_backbone=True)
    for i in range(2):
        _assert_same_step(ours, ref, i)
    graphs = ours.decode_head._graphed_train
    assert graphs.encoder_disabled and not graphs.disabled
    assert len(captured) == 1 and captured[0].encoder is None
    assert len(graphs._entries) == 1


def test_one_capture_serves_every_step(monkeypatch):
    """The backbone-inside capture happens once, not once per step (the
    head builds a new Encoder wrapper per call), and the replayed steps
    equal eager ones."""
    ours, ref = pair('cpu')
    _as_if_on_cuda(ours, monkeypatch)
    captured = _stand_in_capture(monkeypatch, fail_with_backbone=False)
    for i in range(3):
        _assert_same_step(ours, ref, i)
    assert len(captured) == 1 and captured[0].encoder is not None
    assert len(ours.decode_head._graphed_train._entries) == 1


def test_transformer_decoder_only_keeps_backbone_and_pixel_decoder_eager(
        monkeypatch):
    """``cuda_graph_train='transformer_decoder'`` under M2FEncoderDecoder:
    EncoderDecoder's ``loss`` (no ``loss_from_images``), one capture of the
    transformer decoder alone, and steps equal to eager ones."""
    ours, ref = pair('cpu')
    ours.decode_head.cuda_graph_train = 'transformer_decoder'
    calls = _as_if_on_cuda(ours, monkeypatch)
    captured = _stand_in_capture(monkeypatch, fail_with_backbone=False)
    for i in range(2):
        _assert_same_step(ours, ref, i)
    assert calls == []
    assert len(captured) == 1
    assert captured[0].encoder is None and captured[0].pixel_decoder is None
    # called directly, loss_from_images runs the backbone eagerly too
    images, samples = batch('cpu', 2)
    torch.manual_seed(2)
    got = ours.decode_head.loss_from_images(images, ours.backbone, None,
                                            samples)
    torch.manual_seed(2)
    want = ref.decode_head.loss(ref.backbone(images), samples, None)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_captured_module_with_backbone_equals_backbone_then_head():
    """What the graphs capture, run eagerly: the images go through the
    backbone inside the module, and the sets equal ``head.forward``'s."""
    ours, _ = pair('cpu')
    ours.eval()  # BatchNorm with running statistics: two runs agree
    head = ours.decode_head
    images, _ = batch('cpu')
    encoder = Encoder(ours.backbone, None, head._transform_inputs)
    cls, sets = head._graphed_train._eager((images, ), encoder)
    want_cls, want_sets = head.forward(ours.backbone(images), lazy_masks=True)
    for a, b in zip(cls, want_cls):
        torch.testing.assert_close(a, b)
    for a, b in zip(sets.embeds, want_sets.embeds):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(sets.features, want_sets.features)
    sig = head._graphed_train._signature
    before = sig((images, ), encoder)
    assert before != sig((images, ))
    # each of these needs a new capture: frozen weights, a module switched
    # to another mode (BatchNorm statistics), a swapped submodule
    ours.backbone.conv1.weight.requires_grad_(False)
    assert sig((images, ), encoder) != before
    ours.backbone.conv1.weight.requires_grad_(True)
    ours.backbone.layer1.train()  # the model is in eval mode here
    assert sig((images, ), encoder) != before
    ours.backbone.layer1.eval()
    assert sig((images, ), encoder) == before
    ours.backbone.layer1[0].bn1 = torch.nn.BatchNorm2d(8)
    assert sig((images, ), encoder) != before


@pytest.fixture
def no_tf32():
    """Exact float32 convolutions and matmuls: cuDNN may pick other
    algorithms inside a graph than eagerly, and TF32 results differ by
    ~1e-3 between algorithms."""
    saved = (torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved


def assert_grads_close(got: dict, want: dict, step_index: int) -> None:
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
    assert not bad, f'step {step_index}: (excess, name, max|diff|, max|ref|) ' \
        f'{sorted(bad, reverse=True)[:6]}'


@cuda
@pytest.mark.parametrize('msda_impl', ['mmcv', 'triton'])
def test_graphed_backbone_steps_match_eager(msda_impl, no_tf32):
    ours, ref = pair('cuda', msda_impl)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05)
    for i in range(4):  # new images and updated weights every step
        images, samples = batch('cuda', i)
        got, g_grads = step(ours, images, samples, i)
        want, r_grads = step(ref, images, samples, i)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert_grads_close(g_grads, r_grads, i)
        # running statistics: updated once per step (the capture's warm-up
        # runs were undone; checkpointed stage 0 updates twice, in both)
        for (name, a), b in zip(ours.named_buffers(), ref.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5,
                                       msg=f'step {i}: {name}')
        opt_o.step()
        # the graph must read the updated weights in place; the eager twin
        # restarts from them, since with batch-2 BatchNorm on 2x2 maps tiny
        # summation-order differences would otherwise grow step after step
        ref.load_state_dict(ours.state_dict())
    graphs = ours.decode_head._graphed_train
    assert not graphs.disabled
    assert len(graphs._entries) == 1
    # the backbone was inside: its first conv has a gradient from the graph
    assert g_grads['backbone.conv1.weight'] is not None
