"""Split-K products compute the plain products."""
import pytest
import torch

from m2f_plugin.ops.mask_products import mask_logits_splitk_backward, splitk_bmm


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


def test_mask_logits_splitk_backward_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 6, 5, dtype=torch.float64, generator=g,
                        requires_grad=True)
    feats = torch.randn(2, 5, 8, 5, dtype=torch.float64, generator=g,
                        requires_grad=True)
    assert torch.autograd.gradcheck(mask_logits_splitk_backward,
                                    (embed, feats))
    torch.testing.assert_close(mask_logits_splitk_backward(embed, feats),
                               torch.einsum('bqc,bchw->bqhw', embed, feats))


def test_mask_logits_splitk_backward_follows_autocast():
    embed, feats = torch.randn(2, 6, 5), torch.randn(2, 5, 4, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = mask_logits_splitk_backward(embed, feats)
        ref = torch.einsum('bqc,bchw->bqhw', embed, feats)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
