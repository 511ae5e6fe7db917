"""``M2FGraphedHead(cuda_graph=True)``: graphed inference equals eager.

The tests taking the ``graphs`` fixture run twice: on the CPU against the
stand-in capture of ``tests/accel/stand_in.py`` (a recorded op list that a
replay re-runs on the static buffers), and on a GPU against real graphs
(skipped without CUDA). Either way they count captures and replays and
compare every output with the eager decoders. The ``test_gpu_*`` tests run
``predict`` end to end on a GPU.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import pickle

import pytest
import torch

from m2f_plugin.accel.cuda_graphs import FlatDecoders, to_predictions
from tests.accel.stand_in import (
    CudaSpy,
    HostReadingDecoders,
    assert_predictions_close,
    decode,
    needs_cuda,
)
from tests.helpers import feats, make_label_maps, seg_data_samples, tiny_head

METAS = [dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64))]
# real graphs launch the same kernels as eager code, but cuBLAS / cuDNN may
# pick other algorithms inside a capture
GPU_TOL = dict(rtol=1e-4, atol=1e-5)


def pair(device='cpu', graph_kw=None, **model_kw):
    """An ``M2FGraphedHead`` (eval) and an eager ``M2FHead`` twin."""
    head = tiny_head(type='M2FGraphedHead', **(graph_kw or {}),
                     **model_kw).to(device).eval()
    eager = tiny_head(**model_kw).to(device).eval()
    eager.load_state_dict(head.state_dict())
    return head, eager


def maps(device, scale=1.0, h=32, w=32):
    """Backbone maps for one image (small: every capture runs the decoders
    three times)."""
    return [f.to(device) * scale for f in feats(1, h, w)]


def tol(device):
    return GPU_TOL if device == 'cuda' else {}


def flat(p):
    return [*p.class_logits, *p.mask_embeds, p.mask_features]


@pytest.mark.parametrize('key,value', [('cuda_graph', True),
                                       ('cuda_graph_train', True),
                                       ('max_graphs', 2)])
def test_m2f_head_points_graph_options_to_the_graphed_head(key, value):
    with pytest.raises(ValueError, match='M2FGraphedHead'):
        tiny_head(**{key: value})


def test_cpu_head_predicts_eagerly_without_capturing(stand_in):
    """On CPU tensors the graphed head is ``M2FHead``: same outputs, and no
    capture is even begun (the stand-in would have captured it)."""
    head, eager = pair()
    with torch.no_grad():
        torch.testing.assert_close(head.predict(feats(1), METAS, None),
                                   eager.predict(feats(1), METAS, None),
                                   rtol=0, atol=0)
        assert_predictions_close(head.prediction_sets(feats(1)),
                                 eager.prediction_sets(feats(1)))
    assert stand_in.attempts == 0 and stand_in.replays == 0


def test_replays_read_new_inputs_and_return_fresh_copies(graphs):
    head, _ = pair(graphs.device)
    outputs = []
    with torch.no_grad():
        for step in range(3):  # new values each time: a replay must read them
            x = maps(graphs.device, step + 1)
            got = decode(head, x)
            assert_predictions_close(got, head.predictions(x),
                                     **tol(graphs.device))
            outputs.append((got, [t.clone() for t in flat(got)]))
    assert graphs.attempts == 1 and len(graphs.captured) == 1
    assert graphs.replays == 3
    # the outputs are copies: later replays did not overwrite earlier ones
    for got, kept in outputs:
        for a, b in zip(flat(got), kept):
            assert torch.equal(a, b)


def test_each_signature_gets_its_own_graph(graphs):
    """Shape, inference mode and autocast select the graph: each variant is
    captured once, then replayed; the plain signature keeps its graph."""
    device = graphs.device
    head, _ = pair(device, graph_kw=dict(max_graphs=8))
    variants = [
        (contextlib.nullcontext, maps(device)),
        (contextlib.nullcontext, maps(device, h=64)),
        (torch.inference_mode, maps(device)),
        (lambda: torch.autocast(device, dtype=torch.bfloat16), maps(device)),
    ]
    with torch.no_grad():
        for i, (context, x) in enumerate(variants):
            for _ in range(2):
                with context():
                    got, want = decode(head, x), head.predictions(x)
                low = want.mask_features.dtype == torch.bfloat16
                assert_predictions_close(
                    got, want, **(dict(rtol=2e-2, atol=2e-2) if low else
                                   tol(device)))
            assert graphs.attempts == i + 1, f'variant {i}'
        decode(head, variants[0][1])
    assert graphs.attempts == len(variants)
    assert graphs.replays == 2 * len(variants) + 1


def test_more_signatures_than_max_graphs_run_eagerly_with_one_warning(
        graphs, warnings_logged):
    head, _ = pair(graphs.device, graph_kw=dict(max_graphs=1))
    sizes = [(32, 32), (64, 32), (64, 32), (32, 64), (32, 32)]
    with torch.no_grad():
        for h, w in sizes:
            x = maps(graphs.device, h=h, w=w)
            assert_predictions_close(decode(head, x), head.predictions(x),
                                     **tol(graphs.device))
    assert graphs.attempts == 1
    assert graphs.replays == 2  # the first size, twice; the others eagerly
    assert len(warnings_logged) == 1
    assert 'more than 1 input signatures' in warnings_logged[0]


def test_failed_capture_runs_eagerly_with_one_warning(graphs,
                                                      warnings_logged):
    """A host read inside the decoders makes the capture fail: the result is
    the eager one, one warning says so, and no capture is tried again (not
    even for a new signature)."""
    head, _ = pair(graphs.device)
    decoders = HostReadingDecoders(head)
    with torch.no_grad():
        for x in (maps(graphs.device), maps(graphs.device, 2.0),
                  maps(graphs.device, h=64)):
            got = head.graphed_inference(decoders, x)
            assert_predictions_close(got, head.predictions(x),
                                     **tol(graphs.device))
    assert graphs.attempts == 1 and not graphs.captured
    assert graphs.replays == 0
    assert len(warnings_logged) == 1
    assert 'capture failed' in warnings_logged[0]


def test_moves_reloads_and_train_drop_graphs_eval_keeps_them(stand_in):
    """Graphs read parameters by address: ``.to()`` (as ``.cuda()``,
    ``.half()``), ``load_state_dict`` and ``train()`` drop them (released at
    once) and the next call captures again; ``eval()`` keeps them."""
    head, eager = pair()
    x = maps('cpu')

    def run():
        with torch.no_grad():
            assert_predictions_close(decode(head, x), eager.predictions(x))

    run()
    actions = [lambda: head.to('cpu'),
               lambda: head.load_state_dict(head.state_dict()),
               lambda: head.train().eval()]
    for i, action in enumerate(actions):
        graph = stand_in.captured[-1]
        action()
        assert graph() is None, f'action {i} kept the graph'
        run()
        assert stand_in.attempts == i + 2, f'action {i}'
    replays = stand_in.replays
    head.eval()
    run()
    assert stand_in.attempts == len(actions) + 1
    assert stand_in.replays == replays + 1


def test_copies_and_pickles_start_without_graphs(stand_in):
    """``deepcopy`` (EMA) and pickling (``torch.save``) leave the graphs
    behind (a graph cannot be copied); each copy captures its own and the
    original keeps replaying its graph."""
    head, eager = pair()
    x = maps('cpu')
    with torch.no_grad():
        decode(head, x)
        copies = [copy.deepcopy(head), pickle.loads(pickle.dumps(head))]
        for n, clone in enumerate(copies):
            assert_predictions_close(decode(clone, x), eager.predictions(x))
            assert stand_in.attempts == n + 2
        replays = stand_in.replays
        assert_predictions_close(decode(head, x), eager.predictions(x))
    assert stand_in.attempts == 3 and stand_in.replays == replays + 1


def test_caches_made_in_inference_mode_allow_checkpointed_training():
    """Sizes first seen under inference_mode are cached as normal tensors,
    so a checkpointed training step at that size can save them."""
    with_cp = dict(
        pixel_decoder=dict(type='M2FPixelDecoder', num_layers=2, num_heads=4,
                           ffn_dims=64, num_groups=8, with_cp=True),
        transformer_decoder=dict(type='M2FMaskedTransformerDecoder',
                                 num_layers=3, num_heads=4, ffn_dims=64,
                                 with_cp=True))
    head, _ = pair(**with_cp)
    with torch.inference_mode():
        head.predict(feats(2), METAS, None)
    for m in head.modules():  # train mode without train(): caches stay
        m.training = True
    losses = head.loss(feats(2),
                       seg_data_samples(make_label_maps(2, 64, 64, 5)), None)
    sum(losses.values()).backward()


def test_pytorch_deformable_attention_is_announced_eager(warnings_logged):
    """mmcv's PyTorch deformable attention syncs with the host: the head
    says at construction that its decoders run eagerly (on a GPU,
    ``test_gpu_pytorch_msda_runs_eagerly``)."""
    pd = dict(type='M2FPixelDecoder', num_layers=2, num_heads=4, ffn_dims=64,
              num_groups=8, msda_impl='pytorch')
    tiny_head(type='M2FGraphedHead', cuda_graph=False, pixel_decoder=pd)
    assert warnings_logged == []
    tiny_head(type='M2FGraphedHead', pixel_decoder=pd)
    assert len(warnings_logged) == 1 and 'msda_impl' in warnings_logged[0]


def test_flat_decoders_are_the_heads_forward():
    """What every graph captures, run eagerly: the head's prediction sets
    (the graphs' eager fallback runs this module too)."""
    head, _ = pair()
    x = maps('cpu')
    with torch.no_grad():
        assert_predictions_close(to_predictions(FlatDecoders(head)(*x)),
                                 head.predictions(x))


def test_graph_captured_in_train_mode_is_not_replayed_in_eval(stand_in):
    """A no-grad forward in train mode (dropout on, SDPA attention) captures
    a graph; after ``eval()`` (which keeps inference graphs) the output must
    be eval mode's."""
    td = dict(type='M2FMaskedTransformerDecoder', num_layers=3, num_heads=4,
              ffn_dims=64, dropout=0.5)
    head, eager = pair(transformer_decoder=td)
    x = maps('cpu')
    head.train()
    with torch.no_grad():
        decode(head, x)
        head.eval()
        assert_predictions_close(decode(head, x), eager.predictions(x))


@needs_cuda
@pytest.mark.parametrize('impl', ['mmcv', 'triton'])
def test_gpu_predict_replays_match_eager(impl, monkeypatch):
    spy = CudaSpy(monkeypatch)
    pd = dict(type='M2FPixelDecoder', num_layers=2, num_heads=4, ffn_dims=64,
              num_groups=8, msda_impl=impl)
    head, eager = pair('cuda', graph_kw=dict(max_graphs=2), pixel_decoder=pd)
    with torch.no_grad():
        for seed in range(3):  # new inputs each time: replay reads them
            x = [f.cuda() * (seed + 1) for f in feats(1)]
            torch.testing.assert_close(head.predict(x, METAS, None),
                                       eager.predict(x, METAS, None),
                                       **GPU_TOL)
        assert spy.attempts == 1 and spy.replays == 3
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
                                       **GPU_TOL)
        assert spy.attempts == 2 and len(spy.captured) == 2
    head.train()
    gc.collect()
    assert all(ref() is None for ref in spy.captured)


@needs_cuda
def test_gpu_graph_survives_leaving_autocast(monkeypatch):
    """Captured under one autocast context, replayed under a later one after
    the allocator reused memory: same as eager (autocast's weight-cast cache
    is off during capture, so the graph casts the weights itself)."""
    spy = CudaSpy(monkeypatch)
    head, eager = pair('cuda')
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
    assert spy.attempts == 1 and spy.replays == 2


@needs_cuda
def test_gpu_graph_outlives_cleared_size_caches(monkeypatch):
    """The decoders' per-size caches (position encodings, level geometry)
    are bounded and cleared after 16 sizes; a graph reads their tensors by
    address, so it keeps them alive and stays right afterwards."""
    spy = CudaSpy(monkeypatch)
    head, eager = pair('cuda', graph_kw=dict(max_graphs=1))
    x = [f.cuda() for f in feats(1)]
    with torch.no_grad():
        head.predict(x, METAS, None)  # captured at 64 x 64
        for k in range(17):  # other sizes, eagerly: the caches are cleared
            head.predict([f.cuda() for f in feats(1, 32 * (k % 4 + 3),
                                                  32 * (k // 4 + 3))],
                         METAS, None)
        torch.cuda.empty_cache()
        # overwrite freed memory, small blocks (the cached tensors) and large
        junk = [torch.full((n, ), 1e4, device='cuda') for n in
                (64, 256, 1024, 4096, 16384) for _ in range(256)]
        junk += [torch.full((1 << 20, ), 1e4, device='cuda')
                 for _ in range(64)]
        got = head.predict(x, METAS, None)
        del junk
        torch.testing.assert_close(got, eager.predict(x, METAS, None),
                                   **GPU_TOL)
    assert spy.attempts == 1 and spy.replays == 2


@needs_cuda
def test_gpu_pytorch_msda_runs_eagerly(monkeypatch):
    """mmcv's PyTorch MSDA syncs with the host: no capture, same output."""
    spy = CudaSpy(monkeypatch)
    pd = dict(type='M2FPixelDecoder', num_layers=2, num_heads=4, ffn_dims=64,
              num_groups=8, msda_impl='pytorch')
    head, eager = pair('cuda', pixel_decoder=pd)
    x = [f.cuda() for f in feats(1)]
    with torch.no_grad():
        torch.testing.assert_close(head.predict(x, METAS, None),
                                   eager.predict(x, METAS, None))
    assert spy.attempts == 0


@needs_cuda
def test_gpu_graph_under_autocast_and_after_reload(monkeypatch):
    spy = CudaSpy(monkeypatch)
    head, _ = pair('cuda')
    x = [f.cuda() for f in feats(1)]
    with torch.no_grad():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            a = head.predict(x, METAS, None)
        b = head.predict(x, METAS, None)
        assert spy.attempts == 2  # autocast selects its own graph
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
        # new weights loaded in place: captured again, with the new values
        state = {k: v * 0.5 if v.is_floating_point() else v
                 for k, v in head.state_dict().items()}
        head.load_state_dict(state)
        eager = tiny_head().cuda().eval()
        eager.load_state_dict(state)
        torch.testing.assert_close(head.predict(x, METAS, None),
                                   eager.predict(x, METAS, None), **GPU_TOL)
        assert spy.attempts == 3
