"""``M2FHead(cuda_graph_train=True)``: graphed training equals eager training.

The CUDA tests run on a GPU machine (skipped here): losses and gradients of
the head's parameters and of its inputs (the backbone's share) match the
eager head step after step. The CPU tests check that the option is inert
without CUDA, survives copying, and that moves, reloads and mode switches
drop the graphs.
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

from tests.helpers import feats, make_label_maps, seg_data_samples, tiny_head

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason='CUDA graphs need a GPU')


def _pd(**kw):
    return dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                ffn_dims=64, num_groups=8, **kw)


def _td(**kw):
    return dict(type='M2FMaskedTransformerDecoder', num_layers=3,
                num_heads=4, ffn_dims=64, **kw)


def _pair(device, pd=None, td=None, mode=True):
    """A graphed head (``cuda_graph_train=mode``) and an eager twin with the
    same weights."""
    kw = dict(pixel_decoder=pd or _pd(), transformer_decoder=td or _td())
    head = tiny_head(cuda_graph_train=mode, **kw).to(device).train()
    eager = tiny_head(**kw).to(device).train()
    eager.load_state_dict(head.state_dict())
    return head, eager


def _step(head, x, samples, seed):
    """Loss and gradients (parameters, then inputs) of one step."""
    head.zero_grad(set_to_none=True)
    x = [f.detach().clone().requires_grad_() for f in x]
    torch.manual_seed(seed)
    losses = head.loss(x, samples, None)
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for p in head.parameters()] + [f.grad for f in x]
    return total.detach(), grads


def test_cpu_is_eager_and_graphs_are_dropped_and_never_copied():
    head, eager = _pair('cpu')
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    a, ga = _step(head, feats(), samples, 0)
    b, gb = _step(eager, feats(), samples, 0)
    torch.testing.assert_close(a, b)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)
    assert not head._graphed_train._entries
    for action in (lambda: head.float(), lambda: head.train(),
                   lambda: head.eval(),
                   lambda: head.load_state_dict(head.state_dict())):
        # as make_graphed_callables leaves it: forward is a closure over the
        # module (a cycle that clear() breaks, so the pool is freed at once)
        fake = torch.nn.Identity()
        fake.forward = lambda *a, _m=fake: _m
        head._graphed_train._entries['fake'] = (fake, [])
        action()
        assert not head._graphed_train._entries
        assert 'forward' not in fake.__dict__
    head._graphed_train._entries['fake'] = (torch.nn.Identity(), [])
    assert copy.deepcopy(head)._graphed_train._entries == {}
    assert pickle.loads(pickle.dumps(head._graphed_train))._entries == {}


def test_signature_has_shapes_grad_flags_and_autocast():
    head, _ = _pair('cpu')
    sig = head._graphed_train._signature
    x = feats()
    plain = sig(x)
    assert sig([f.requires_grad_() for f in feats()]) != plain
    assert sig(feats(2, 96, 64)) != plain
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert sig(x) != plain


@cuda
@pytest.mark.parametrize('impl,with_cp,mode', [
    ('mmcv', False, True), ('triton', False, True), ('mmcv', True, True),
    ('mmcv', True, 'transformer_decoder'),
    ('pytorch', True, 'transformer_decoder')])
def test_graphed_steps_match_eager(impl, with_cp, mode):
    head, eager = _pair('cuda', _pd(msda_impl=impl, with_cp=with_cp),
                        _td(with_cp=with_cp), mode)
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    for s in samples:
        s.gt_sem_seg.data = s.gt_sem_seg.data.cuda()
    opt_g = torch.optim.SGD(head.parameters(), lr=0.1)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    for step in range(4):  # new inputs and updated weights every step
        x = [f.cuda() * (step + 1) for f in feats()]
        got, g_grads = _step(head, x, samples, step)
        want, e_grads = _step(eager, x, samples, step)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        for a, b in zip(g_grads, e_grads):
            if b is None:
                assert a is None
            else:  # mmcv's MSDA backward sums with atomics, in any order
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
        opt_g.step()
        opt_e.step()
    assert not head._graphed_train.disabled
    assert len(head._graphed_train._entries) == 1
    torch.cuda.synchronize()
    reserved = torch.cuda.memory_reserved()
    head.eval()  # drops the graphs: their pool is released at once
    assert not head._graphed_train._entries
    torch.cuda.empty_cache()
    assert torch.cuda.memory_reserved() < reserved


@cuda
def test_graphed_bf16_autocast_trains_finite_and_close():
    head, eager = _pair('cuda')
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    for s in samples:
        s.gt_sem_seg.data = s.gt_sem_seg.data.cuda()
    x = [f.cuda() for f in feats()]
    with torch.autocast('cuda', dtype=torch.bfloat16):
        got, _ = _step(head, x, samples, 0)
        want, _ = _step(eager, x, samples, 0)
        again, _ = _step(head, x, samples, 0)  # a replay
    assert torch.isfinite(got) and torch.isfinite(again)
    torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(again, want, rtol=3e-2, atol=3e-2)
    assert len(head._graphed_train._entries) == 1


@cuda
def test_pytorch_msda_trains_eagerly():
    head, eager = _pair('cuda', _pd(msda_impl='pytorch'))
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    for s in samples:
        s.gt_sem_seg.data = s.gt_sem_seg.data.cuda()
    x = [f.cuda() for f in feats()]
    got, _ = _step(head, x, samples, 0)
    want, _ = _step(eager, x, samples, 0)
    torch.testing.assert_close(got, want)
    assert not head.graphs_training(x[0]) and not head._graphed_train._entries


def test_eager_fallback_equals_the_heads_training_forward():
    """After a failed capture the decoders run eagerly through the same
    flat-output module the graphs capture: same sets as ``head.forward``."""
    head, _ = _pair('cpu')
    x = feats()
    cls, sets = head._graphed_train._eager(head._transform_inputs(x))
    ref_cls, ref_sets = head(x, lazy_masks=True)
    assert len(cls) == len(sets) == len(ref_sets) == 4
    for a, b in zip(cls, ref_cls):
        torch.testing.assert_close(a, b)
    for s in range(4):
        torch.testing.assert_close(sets[s], ref_sets[s])


def test_cuda_graph_train_values_are_checked():
    for mode in (False, True, 'transformer_decoder'):
        assert tiny_head(cuda_graph_train=mode).cuda_graph_train == mode
    with pytest.raises(ValueError, match="expected True .*'transformer_decoder"):
        tiny_head(cuda_graph_train='pixel_decoder')


def test_transformer_decoder_only_graph_equals_eager_on_cpu(monkeypatch):
    """``cuda_graph_train='transformer_decoder'``, taken on the CPU with a
    stand-in capture: the pixel decoder runs outside the captured module,
    whose inputs are its outputs (mask features first); losses and gradients
    of every parameter and of the backbone maps equal the eager head's over
    three steps, and one capture serves them all."""
    from tests.models.test_segmentor_graph import _stand_in_capture
    captured = _stand_in_capture(monkeypatch, fail_with_backbone=False)
    head, eager = _pair('cpu', mode='transformer_decoder')
    monkeypatch.setattr(head, 'graphs_training', lambda x: True)
    seen = []
    real_call = head._graphed_train.__class__.__call__

    def spy(self, feats, encoder=None):
        seen.append([tuple(f.shape) for f in feats])
        return real_call(self, feats, encoder)

    monkeypatch.setattr(head._graphed_train.__class__, '__call__', spy)
    samples = seg_data_samples(make_label_maps(2, 64, 64, 5, seed=1))
    for step in range(3):
        x = [f * (step + 1) for f in feats()]
        got, g_grads = _step(head, x, samples, step)
        want, e_grads = _step(eager, x, samples, step)
        torch.testing.assert_close(got, want)
        for a, b in zip(g_grads, e_grads):
            torch.testing.assert_close(a, b)
    assert len(captured) == 1 and len(head._graphed_train._entries) == 1
    assert captured[0].pixel_decoder is None
    # mask features (B, C, H/4, W/4), then the memories of 3 levels
    assert seen[0][0] == (2, 32, 16, 16) and len(seen[0]) == 4
    sig = head._graphed_train._signature(x)
    head.cuda_graph_train = True
    assert head._graphed_train._signature(x) != sig


def test_pytorch_msda_for_inference_graphs_keeps_training_graphs(monkeypatch):
    """'pytorch' deformable attention turns off the inference graphs (it
    syncs with the host); in 'transformer_decoder' mode the eager pixel
    decoder may use it, so the training graphs stay on."""
    head, _ = _pair('cpu', _pd(msda_impl='pytorch'),
                    mode='transformer_decoder')
    assert not head._graph_safe()
    assert head._graphed.disabled and not head._graphed_train.disabled
