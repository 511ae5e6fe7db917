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


def _attention_pair(batch, with_mask, requires_grad=False):
    """An SDPA attention, its 'math' twin and float64 inputs."""
    torch.manual_seed(0)
    sdpa = MultiheadAttention(32, 4, impl='sdpa').double()
    math = copy.deepcopy(sdpa)
    math.impl = 'math'
    q = torch.randn(batch, 7, 32, dtype=torch.float64,
                    requires_grad=requires_grad)
    kv = torch.randn(batch, 30, 32, dtype=torch.float64)
    pos = torch.randn(batch, 30, 32, dtype=torch.float64)
    mask = None
    if with_mask:
        mask = torch.rand(batch, 7, 30) > 0.6
        mask[:, 0] = True  # every query attends somewhere
    return sdpa, math, (q, kv, kv, None, pos, mask)


def _spy_splitk(monkeypatch, splits):
    """Replace the attention's ``splitk_bmm`` by one that records its left
    operand's shape and splits into ``splits`` pieces (on any device)."""
    import m2f_plugin.models.decoder.attention as attention
    calls = []

    def forced(a, b):
        calls.append(a.shape)
        return splitk_bmm(a, b, splits)

    monkeypatch.setattr(attention, 'splitk_bmm', forced)
    return calls


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('with_mask', [False, True])
def test_math_attention_equals_sdpa(with_mask, batch, monkeypatch):
    """Values and gradients; with gradients the keys are never split."""
    calls = _spy_splitk(monkeypatch, 4)
    sdpa, math, args = _attention_pair(batch, with_mask, requires_grad=True)
    outs = []
    for m in (sdpa, math):
        out = m(*args)
        grad, = torch.autograd.grad(out.square().sum(), args[0])
        outs.append((out, grad))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    assert calls == []


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('split_keys', [True, False])
@pytest.mark.parametrize('with_mask', [False, True])
def test_math_attention_split_keys_equals_sdpa(with_mask, split_keys, batch,
                                               monkeypatch):
    """Inference: attn x v split into 4 pieces as on CUDA (30 keys padded to
    32; heads folded into the batch), or one matmul with
    ``split_keys=False``."""
    calls = _spy_splitk(monkeypatch, 4)
    sdpa, math, args = _attention_pair(batch, with_mask)
    math.split_keys = split_keys
    with torch.no_grad():
        torch.testing.assert_close(math(*args), sdpa(*args))
    assert calls == ([(batch * 4, 7, 30)] if split_keys else [])


def test_math_attention_traced_without_split(monkeypatch):
    """A traced graph must not freeze the split to the traced key count."""
    calls = _spy_splitk(monkeypatch, 4)
    _, math, (q, kv, _, _, pos, _) = _attention_pair(1, False)
    math.requires_grad_(False)  # traced closures take no grad parameters
    with torch.no_grad():
        traced = torch.jit.trace(lambda a, b: math(a, b, b), (q, kv),
                                 check_trace=False)
        longer = torch.randn(1, 45, 32, dtype=torch.float64)
        torch.testing.assert_close(traced(q, longer), math(q, longer, longer))
    assert calls == [(4, 7, 45)]  # the eager reference only


def test_transformer_decoder_passes_split_keys():
    m = M2FMaskedTransformerDecoder(num_classes=5, in_channels=32,
                                    embed_dims=32, mask_dims=32, num_layers=2,
                                    num_heads=4, ffn_dims=64,
                                    cross_attn_split_keys=False)
    assert [layer.cross_attn.split_keys for layer in m.layers] == [False] * 2
    assert all(layer.self_attn.split_keys for layer in m.layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_math_attention_splits_long_key_sets_on_cuda(monkeypatch):
    """Inference cross-attention against the 1/8 level of a 1024x2048 image
    (32768 keys): attn x v is split in 8 (the automatic choice), and equals
    SDPA."""
    import m2f_plugin.models.decoder.attention as attention
    calls = []
    monkeypatch.setattr(attention, 'splitk_bmm',
                        lambda a, b: calls.append(a.shape) or splitk_bmm(a, b))
    monkeypatch.setattr(torch, 'bmm', _counting(torch.bmm, calls))
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
    # splitk_bmm called once, and its bmm ran 8 pieces per head
    assert calls == [(8, 100, 32768), ('bmm', 64, 100, 4096)]


def _counting(fn, calls):
    def wrapped(a, b, *args, **kwargs):
        calls.append(('bmm', *a.shape))
        return fn(a, b, *args, **kwargs)
    return wrapped


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
