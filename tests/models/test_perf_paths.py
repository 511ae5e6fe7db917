"""The speed/memory code paths compute the same function as the plain ones."""
import copy

import pytest
import torch

from m2f_plugin.models.decoder import M2FMaskedTransformerDecoder
from m2f_plugin.models.decoder.attention import MultiheadAttention
from m2f_plugin.models.layers import SinePositionEncoding2d, splitk_bmm
from m2f_plugin.models.layers.mask_logits import _MaskLogits
from m2f_plugin.models.pixel_decoder import M2FPixelDecoder


@pytest.mark.parametrize('splits', [1, 2, 3, 7, 16])
def test_splitk_bmm_equals_bmm(splits):
    g = torch.Generator().manual_seed(splits)
    a = torch.randn(3, 20, 301, dtype=torch.float64, generator=g)
    # a transposed (non-contiguous) right operand, as the callers pass
    b = torch.randn(3, 5, 301, dtype=torch.float64,
                    generator=g).transpose(1, 2)
    torch.testing.assert_close(splitk_bmm(a, b, splits), torch.bmm(a, b),
                               rtol=1e-12, atol=1e-12)


def test_splitk_bmm_auto_is_plain_on_cpu():
    a, b = torch.randn(2, 4, 4096), torch.randn(2, 4096, 3)
    assert torch.equal(splitk_bmm(a, b), torch.bmm(a, b))


def test_mask_logits_function_gradients():
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 6, 5, dtype=torch.float64, generator=g,
                        requires_grad=True)
    feats = torch.randn(2, 5, 40, dtype=torch.float64, generator=g,
                        requires_grad=True)
    assert torch.autograd.gradcheck(_MaskLogits.apply, (embed, feats))
    torch.testing.assert_close(_MaskLogits.apply(embed, feats),
                               torch.einsum('bqc,bcn->bqn', embed, feats))


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('splits', [0, 4])
@pytest.mark.parametrize('with_mask', [False, True])
def test_math_attention_equals_sdpa(with_mask, splits, batch, monkeypatch):
    """The matmul form, with attn x v split over the keys as on CUDA
    (``splits=4``: 30 keys padded to 32) or plain (CPU's auto choice)."""
    import m2f_plugin.models.decoder.attention as attention
    calls = []

    def forced(a, b):
        calls.append(a.shape)
        return splitk_bmm(a, b, splits)

    monkeypatch.setattr(attention, 'splitk_bmm', forced)
    torch.manual_seed(0)
    sdpa = MultiheadAttention(32, 4, impl='sdpa').double()
    math = copy.deepcopy(sdpa)
    math.impl = 'math'
    q = torch.randn(batch, 7, 32, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(batch, 30, 32, dtype=torch.float64)
    pos = torch.randn(batch, 30, 32, dtype=torch.float64)
    mask = None
    if with_mask:
        mask = torch.rand(batch, 7, 30) > 0.6
        mask[:, 0] = True  # every query attends somewhere
    outs = []
    for m in (sdpa, math):
        out = m(q, kv, kv, None, pos, mask)
        grad, = torch.autograd.grad(out.square().sum(), q)
        outs.append((out, grad))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    assert calls == [(batch * 4, 7, 30)]  # heads folded into the batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_math_attention_splits_long_key_sets_on_cuda():
    """Inference cross-attention against the 1/8 level of a 1024x2048 image
    (32768 keys): attn x v is split, and equals SDPA."""
    torch.manual_seed(0)
    math = MultiheadAttention(256, 8, impl='math').cuda()
    q = torch.randn(1, 100, 256, device='cuda')
    kv = torch.randn(1, 32768, 256, device='cuda')
    mask = torch.rand(1, 100, 32768, device='cuda') > 0.5
    with torch.no_grad():
        out = math(q, kv, kv, attend_mask=mask)
        math.impl = 'sdpa'
        ref = math(q, kv, kv, attend_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    from m2f_plugin.models.layers.splitk_bmm import _auto_splits
    assert _auto_splits(8, 100, 32, 32768) == 8


def test_attention_impl_is_checked():
    with pytest.raises(ValueError, match="choose one of"):
        MultiheadAttention(32, 4, impl='flash')


def test_auto_attention_picks_math_without_grad(monkeypatch):
    import m2f_plugin.models.decoder.attention as attention
    calls = []
    real = attention._math_attention
    monkeypatch.setattr(attention, '_math_attention',
                        lambda *a: calls.append(1) or real(*a))
    m = MultiheadAttention(32, 4)  # 'auto'
    x = torch.randn(1, 3, 32)
    m(x, x, x)
    assert not calls
    with torch.no_grad():
        m(x, x, x)
    assert calls == [1]


def _pixel_decoder(with_cp):
    torch.manual_seed(0)
    return M2FPixelDecoder(in_channels=[16, 32, 64, 128],
                           feat_channels=32, out_channels=32, num_layers=2,
                           num_heads=4, ffn_dims=64, num_groups=8,
                           msda_impl='pytorch', with_cp=with_cp)


def test_pixel_decoder_checkpointing_same_values_and_grads():
    feats = [torch.randn(2, c, s, s) for c, s in
             ((16, 32), (32, 16), (64, 8), (128, 4))]
    results = []
    for with_cp in (False, True):
        m = _pixel_decoder(with_cp).train()
        mask_feats, outs = m(feats)
        loss = mask_feats.square().mean() + sum(o.mean() for o in outs)
        loss.backward()
        results.append((mask_feats.detach(),
                        {n: p.grad.clone() for n, p in m.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], msg=name)


def test_decoder_checkpointing_same_grads():
    torch.manual_seed(0)
    memories = [torch.randn(2, 32, s, s) for s in (4, 8, 16)]
    mask_feats = torch.randn(2, 32, 32, 32)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(1)
        m = M2FMaskedTransformerDecoder(num_classes=5, in_channels=32,
                                        embed_dims=32, mask_dims=32,
                                        num_queries=6, num_layers=3,
                                        num_heads=4, ffn_dims=64,
                                        with_cp=with_cp).train()
        cls, masks = m(memories, mask_feats)
        (sum(c.square().mean() for c in cls) +
         sum(x.sigmoid().mean() for x in masks)).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], msg=name)


def test_position_encoding_cache():
    enc = SinePositionEncoding2d(8)
    a = enc(2, 5, 7, torch.device('cpu'))
    b = enc(3, 5, 7, torch.device('cpu'))
    assert a.shape == (2, 16, 5, 7) and b.shape == (3, 16, 5, 7)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[0:1], enc._encode(5, 7, torch.device('cpu')))
    for s in range(40):  # many sizes: the cache stays bounded
        enc(1, s + 1, 3, torch.device('cpu'))
    assert len(enc._cache) <= 16


def test_pixel_decoder_geometry_cache_matches_fresh():
    m = _pixel_decoder(False).eval()
    feats = [torch.randn(1, c, s, s) for c, s in
             ((16, 32), (32, 16), (64, 8), (128, 4))]
    with torch.no_grad():
        first = m(feats)[0]
        assert len(m._geometry_cache) == 1
        m._geometry_cache.clear()
        torch.testing.assert_close(m(feats)[0], first)


def test_decoder_last_only_equals_last_set():
    torch.manual_seed(0)
    m = M2FMaskedTransformerDecoder(num_classes=5, in_channels=32,
                                    embed_dims=32, mask_dims=32,
                                    num_queries=6, num_layers=3, num_heads=4,
                                    ffn_dims=64).eval()
    memories = [torch.randn(2, 32, s, s) for s in (4, 8, 16)]
    mask_feats = torch.randn(2, 32, 32, 32)
    with torch.no_grad():
        cls, masks = m(memories, mask_feats)
        cls1, masks1 = m(memories, mask_feats, last_only=True)
    assert len(cls) == len(masks) == 4 and len(cls1) == len(masks1) == 1
    torch.testing.assert_close(cls1[0], cls[-1])
    torch.testing.assert_close(masks1[0], masks[-1])


def test_semantic_logits_keeps_gradients():
    """The in-place band writes are used only without autograd; with it the
    bands are assigned, and gradients equal the one-shot formula's."""
    from m2f_plugin.models.heads import semantic_logits
    g = torch.Generator().manual_seed(0)
    grads = []
    for chunk in (100, 0):
        cls = torch.randn(2, 5, 7, generator=g.manual_seed(0),
                          requires_grad=True)
        masks = torch.randn(2, 5, 8, 8, generator=g.manual_seed(1),
                            requires_grad=True)
        out = semantic_logits(cls, masks, (32, 24), chunk=chunk)
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((cls.grad, masks.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
