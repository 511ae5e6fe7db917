"""Checkpointing and per-size caches change nothing but memory and time."""
import torch

from m2f_plugin.models.layers import SinePositionEncoding2d
from m2f_plugin.models.pixel_decoder import M2FPixelDecoder
from m2f_plugin.models.transformer_decoder import M2FMaskedTransformerDecoder


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
        p = m(memories, mask_feats)
        (sum(c.square().mean() for c in p.class_logits) +
         sum(p.mask_logits(s).sigmoid().mean()
             for s in range(p.num_sets))).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], msg=name)


def test_position_encoding_cache():
    enc = SinePositionEncoding2d(8)
    fresh = SinePositionEncoding2d(8)
    fresh.cache = False
    a = enc(2, 5, 7, torch.device('cpu'))
    b = enc(3, 5, 7, torch.device('cpu'))
    assert a.shape == (2, 16, 5, 7) and b.shape == (3, 16, 5, 7)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a, fresh(2, 5, 7, torch.device('cpu')))
    for s in range(40):  # many sizes: the cache stays bounded, stays right
        got = enc(1, s + 1, 3, torch.device('cpu'))
        torch.testing.assert_close(got, fresh(1, s + 1, 3,
                                              torch.device('cpu')))


def test_pixel_decoder_geometry_cache_matches_fresh():
    m = _pixel_decoder(False).eval()
    feats = [torch.randn(1, c, s, s) for c, s in
             ((16, 32), (32, 16), (64, 8), (128, 4))]
    with torch.no_grad():
        first = m(feats)[0]
        cached = m(feats)[0]
        m.cache = m.pos_encoding.cache = False  # no caches
        torch.testing.assert_close(cached, first)
        torch.testing.assert_close(m(feats)[0], first)


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
