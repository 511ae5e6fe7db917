"""ParallelStatsGroupNorm: nn.GroupNorm's values and keys, split statistics
only at inference on large float32 groups."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from m2f_plugin.models.layers import ParallelStatsGroupNorm, group_norm_split_stats
from m2f_plugin.models.pixel_decoder import M2FPixelDecoder


@pytest.mark.parametrize('shape', [(1, 32, 20, 24), (3, 16, 7, 5),
                                   (2, 8, 50)])
def test_split_stats_equal_group_norm(shape):
    torch.manual_seed(0)
    # an offset and a spread per channel, as after a convolution
    x = torch.randn(shape) * 3 + torch.randn(shape[1]).view(
        1, -1, *([1] * (len(shape) - 2))) * 5
    weight, bias = torch.randn(shape[1]), torch.randn(shape[1])
    out = group_norm_split_stats(x, 4, weight, bias, 1e-5)
    torch.testing.assert_close(out, F.group_norm(x, 4, weight, bias, 1e-5),
                               atol=2e-5, rtol=1e-5)


def _split_on_cpu(monkeypatch, min_elements=0):
    monkeypatch.setattr(ParallelStatsGroupNorm, 'split_devices',
                        ('cuda', 'cpu'))
    torch.manual_seed(0)
    norm = ParallelStatsGroupNorm(4, 16, min_group_elements=min_elements)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    return norm


def test_split_path_only_at_inference_on_large_float32_groups(monkeypatch):
    norm = _split_on_cpu(monkeypatch, min_elements=4 * 6 * 6)
    big, small = torch.randn(2, 16, 6, 6), torch.randn(2, 16, 5, 6)
    assert not norm.uses_split_stats(big)  # parameters need gradients
    with torch.no_grad():
        assert norm.uses_split_stats(big)
        assert not norm.uses_split_stats(small)  # 120 < 144 per group
        assert not norm.uses_split_stats(big.double())
        assert not norm.uses_split_stats(big.half())
    norm.requires_grad_(False)
    assert norm.uses_split_stats(big)
    assert not norm.uses_split_stats(big.clone().requires_grad_())
    norm.bias.requires_grad_(True)
    assert not norm.uses_split_stats(big)
    norm.bias.requires_grad_(False)
    # one row per (image, group): from max_rows on, the native kernel fills
    # the GPU by itself
    norm.max_rows = 8
    assert not norm.uses_split_stats(big)  # 2 images x 4 groups
    assert norm.uses_split_stats(big[:1])
    norm.max_rows = 0
    assert not norm.uses_split_stats(big[:1])
    monkeypatch.setattr(ParallelStatsGroupNorm, 'split_devices', ('cuda', ))
    with torch.no_grad():
        assert not norm.uses_split_stats(big)  # CPU by default


def test_module_matches_nn_group_norm(monkeypatch):
    norm = _split_on_cpu(monkeypatch)
    ref = nn.GroupNorm(4, 16)
    assert list(norm.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(norm.state_dict())
    x = torch.randn(2, 16, 9, 11) * 2 + 1
    with torch.no_grad():
        assert norm.uses_split_stats(x)
        torch.testing.assert_close(norm(x), ref(x), atol=2e-5, rtol=1e-5)
    x.requires_grad_()  # training: the native op, same gradients
    out, out_ref = norm(x), ref(x)
    torch.testing.assert_close(out, out_ref)
    g, = torch.autograd.grad(out.square().sum(), x)
    g_ref, = torch.autograd.grad(out_ref.square().sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_pixel_decoder_inference_same_with_split_statistics(monkeypatch):
    torch.manual_seed(0)
    decoder = M2FPixelDecoder(in_channels=[16, 32, 64, 128],
                              feat_channels=32, out_channels=32, num_layers=1,
                              num_heads=4, ffn_dims=64, num_groups=8,
                              msda_impl='pytorch').eval()
    norms = [m for m in decoder.modules()
             if isinstance(m, ParallelStatsGroupNorm)]
    assert len(norms) == 5  # 3 input projections, 1 lateral, 1 output conv
    for m in norms:
        m.min_group_elements = 0
    feats = [torch.randn(1, c, 64 // s, 64 // s)
             for c, s in zip([16, 32, 64, 128], [4, 8, 16, 32])]
    with torch.no_grad():
        ref = decoder(feats)
        monkeypatch.setattr(ParallelStatsGroupNorm, 'split_devices',
                            ('cuda', 'cpu'))
        assert norms[0].uses_split_stats(torch.randn(1, 32, 2, 2))
        out = decoder(feats)
    torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
    for a, b in zip(out[1], ref[1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_pixel_decoder_norm_split_stats_switch(monkeypatch):
    monkeypatch.setattr(ParallelStatsGroupNorm, 'split_devices',
                        ('cuda', 'cpu'))
    x = torch.randn(1, 32, 256, 256)  # 8 groups of 4 x 256 x 256 = 2**18
    for on in (True, False):
        decoder = M2FPixelDecoder(in_channels=[16, 32, 64, 128],
                                  feat_channels=32, out_channels=32,
                                  num_layers=1, num_heads=4, ffn_dims=64,
                                  num_groups=8, msda_impl='pytorch',
                                  norm_split_stats=on).eval()
        norms = [m for m in decoder.modules()
                 if isinstance(m, ParallelStatsGroupNorm)]
        with torch.no_grad():
            assert [m.uses_split_stats(x) for m in norms] == [on] * 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_split_stats_on_cuda_at_1024x2048_group_sizes():
    """The stride-4 map of a 1024x2048 image: 32 groups of 2**20 elements
    take the split path by default and match the native kernel."""
    torch.manual_seed(0)
    norm = ParallelStatsGroupNorm(32, 256).cuda()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(1, 256, 256, 512, device='cuda') * 3 + 2
    with torch.no_grad():
        assert norm.uses_split_stats(x)
        torch.testing.assert_close(
            norm(x), F.group_norm(x, 32, norm.weight, norm.bias, norm.eps),
            atol=1e-4, rtol=1e-4)
        assert not norm.uses_split_stats(x[:, :, :128, :128])  # 512x512
