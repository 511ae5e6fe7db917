"""The masked cross-attention's two kernels compute the same function."""
import copy

import pytest
import torch

from m2f_plugin.models.transformer_decoder import MultiheadAttention


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


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('with_mask', [False, True])
def test_math_attention_equals_sdpa(with_mask, batch):
    """Values and gradients."""
    sdpa, math, args = _attention_pair(batch, with_mask, requires_grad=True)
    outs = []
    for m in (sdpa, math):
        out = m(*args)
        grad, = torch.autograd.grad(out.square().sum(), args[0])
        outs.append((out, grad))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_attention_matches_torch_multihead_attention():
    """Same parameters as ``nn.MultiheadAttention`` (checkpoint layout),
    same output plus the residual."""
    torch.manual_seed(0)
    ours = MultiheadAttention(32, 4, impl='math')
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    mask = torch.rand(2, 5, 9) > 0.5
    mask[..., 0] = True
    want = q + ref(q, kv, kv, attn_mask=(~mask).repeat_interleave(4, 0))[0]
    torch.testing.assert_close(ours(q, kv, kv, attend_mask=mask), want,
                               atol=1e-5, rtol=1e-5)


def test_attention_impl_is_checked():
    with pytest.raises(ValueError, match="choose one of"):
        MultiheadAttention(32, 4, impl='flash')


def test_auto_attention_picks_math_in_eval_mode(monkeypatch):
    import m2f_plugin.models.transformer_decoder.attention as attention
    calls = []
    real = attention._math_attention
    monkeypatch.setattr(attention, '_math_attention',
                        lambda *a: calls.append(1) or real(*a))
    m = MultiheadAttention(32, 4)  # 'auto'
    x = torch.randn(1, 3, 32)
    m.train()(x, x, x)
    assert not calls
    m.eval()(x, x, x)
    assert calls == [1]
