"""``M2FHead(cuda_graph=True)``: graphed inference equals eager inference.

The CUDA tests run on a GPU machine (skipped here); the CPU tests check that
the option is inert without CUDA and survives copying.
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

from tests.helpers import feats, tiny_head

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason='CUDA graphs need a GPU')
METAS = [dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64))]


def test_cpu_runs_eagerly_and_copies():
    head = tiny_head(cuda_graph=True).eval()
    ref = tiny_head().eval()
    ref.load_state_dict(head.state_dict())
    with torch.no_grad():
        out = head.predict(feats(1), METAS, None)
        torch.testing.assert_close(out, ref.predict(feats(1), METAS, None))
    assert not head._graphed._entries
    clone = copy.deepcopy(head)
    assert clone._graphed.owner is clone
    pickle.loads(pickle.dumps(head._graphed))  # graphs are never pickled


def test_moves_reloads_and_training_drop_graphs_and_caches():
    """Graphs read parameters and cached tensors by address: anything that
    may move them drops the graphs; training drops the per-size caches."""
    head = tiny_head(cuda_graph=True).eval()
    with torch.no_grad():
        head.predict(feats(1), METAS, None)  # fills the decoders' caches
    assert head.pixel_decoder._geometry_cache
    for action in (lambda: head.float(), lambda: head.to('cpu'),
                   lambda: head.load_state_dict(head.state_dict()),
                   lambda: head.train()):
        head._graphed._entries['fake'] = object()
        action()
        assert not head._graphed._entries
    assert not head.pixel_decoder._geometry_cache
    assert not head.pixel_decoder.pos_encoding._cache


def test_signature_separates_modes():
    head = tiny_head(cuda_graph=True).eval()
    x = feats(1)
    sig = head._graphed._signature
    plain = sig(x)
    with torch.inference_mode():
        assert sig(x) != plain
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert sig(x) != plain
    head.train()
    assert sig(x) != plain


def test_caches_made_in_inference_mode_allow_checkpointed_training():
    """Sizes first seen under inference_mode are cached as normal tensors,
    so a checkpointed training step at that size can save them."""
    from tests.helpers import make_label_maps, seg_data_samples
    head = tiny_head(
        pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                           ffn_dims=64, num_groups=8, with_cp=True),
        transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                                 num_layers=3, num_heads=4, ffn_dims=64,
                                 with_cp=True)).eval()
    with torch.inference_mode():
        head.predict(feats(2), METAS, None)
    for m in head.modules():  # train mode without train(): caches stay
        m.training = True
    losses = head.loss(feats(2),
                       seg_data_samples(make_label_maps(2, 64, 64, 5)), None)
    sum(losses.values()).backward()


@cuda
def test_graph_survives_leaving_autocast():
    """Captured under one autocast context, replayed under a later one after
    the allocator reused memory: same as eager (autocast's weight-cast cache
    is off during capture, so the graph casts the weights itself)."""
    head = tiny_head(cuda_graph=True).cuda().eval()
    eager = tiny_head().cuda().eval()
    eager.load_state_dict(head.state_dict())
    x = [f.cuda() for f in feats(1)]
    with torch.no_grad():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            head.predict(x, METAS, None)  # capture
        torch.cuda.empty_cache()
        junk = [torch.full((1 << 20,), 1e4, device='cuda') for _ in range(64)]
        with torch.autocast('cuda', dtype=torch.bfloat16):
            got = head.predict(x, METAS, None)
            want = eager.predict(x, METAS, None)
        del junk
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


@cuda
def test_pytorch_msda_runs_eagerly():
    """mmcv's PyTorch MSDA syncs with the host: no capture, same output."""
    pd = dict(type='M2FPixelDecoder', num_layers=2, num_heads=4, ffn_dims=64,
              num_groups=8, msda_impl='pytorch')
    head = tiny_head(cuda_graph=True, pixel_decoder=pd).cuda().eval()
    eager = tiny_head(pixel_decoder=pd).cuda().eval()
    eager.load_state_dict(head.state_dict())
    x = [f.cuda() for f in feats(1)]
    with torch.no_grad():
        torch.testing.assert_close(head.predict(x, METAS, None),
                                   eager.predict(x, METAS, None))
    assert head._graphed.disabled and not head._graphed._entries


@cuda
def test_failed_capture_falls_back_to_eager():
    from m2f_plugin.models.heads.cuda_graph import GraphedInference
    lin = torch.nn.Linear(4, 4).cuda()

    def syncs(x):
        return [lin(x) * float(x.sum())]  # float(): a host sync

    graphed = GraphedInference(lin, syncs)
    x = torch.randn(2, 4, device='cuda')
    with torch.no_grad():
        torch.testing.assert_close(graphed(x)[0], syncs(x)[0])
        assert graphed.disabled
        torch.testing.assert_close(graphed(x * 2)[0], syncs(x * 2)[0])


@cuda
@pytest.mark.parametrize('impl', ['mmcv', 'triton'])
def test_graph_replays_match_eager(impl):
    pd = dict(type='M2FPixelDecoder', num_layers=2, num_heads=4, ffn_dims=64,
              num_groups=8, msda_impl=impl)
    head = tiny_head(cuda_graph=True, max_graphs=2,
                     pixel_decoder=pd).cuda().eval()
    eager = tiny_head(pixel_decoder=pd).cuda().eval()
    eager.load_state_dict(head.state_dict())
    with torch.no_grad():
        for seed in range(3):  # new inputs each time: replay reads them
            torch.manual_seed(seed)
            x = [f.cuda() * (seed + 1) for f in feats(1)]
            got = head.predict(x, METAS, None)
            want = eager.predict(x, METAS, None)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert len(head._graphed._entries) == 1
        # outputs are copies: a later replay does not change them
        first = head.predict([f.cuda() for f in feats(1)], METAS, None)
        keep = first.clone()
        head.predict([f.cuda() * 3 for f in feats(1)], METAS, None)
        assert torch.equal(first, keep)
        # another shape: a second graph; a third: eager, still right
        for hw in ((96, 64), (64, 128)):
            metas = [dict(img_shape=hw, pad_shape=hw, ori_shape=hw)]
            x = [f.cuda() for f in feats(1, *hw)]
            torch.testing.assert_close(head.predict(x, metas, None),
                                       eager.predict(x, metas, None),
                                       rtol=1e-4, atol=1e-5)
        assert len(head._graphed._entries) == 2
    head.train()
    assert not head._graphed._entries


@cuda
def test_graph_under_autocast_and_after_reload():
    head = tiny_head(cuda_graph=True).cuda().eval()
    x = [f.cuda() for f in feats(1)]
    with torch.no_grad():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            a = head.predict(x, METAS, None)
        b = head.predict(x, METAS, None)
        assert len(head._graphed._entries) == 2  # autocast is in the key
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
        # weights loaded in place: the graph reads the new values
        state = {k: v * 0.5 if v.is_floating_point() else v
                 for k, v in head.state_dict().items()}
        head.load_state_dict(state)
        eager = tiny_head().cuda().eval()
        eager.load_state_dict(state)
        torch.testing.assert_close(head.predict(x, METAS, None),
                                   eager.predict(x, METAS, None),
                                   rtol=1e-4, atol=1e-5)
