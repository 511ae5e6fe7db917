"""``M2FResNet(cp_stages=...)``: mmseg's ResNet, checkpointing chosen stages."""
from __future__ import annotations

import pytest
import torch
from mmseg.registry import MODELS

CFG = dict(depth=18, norm_cfg=dict(type='BN', requires_grad=True))


def _saved_bytes(model, x):
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = model(x)
    return sum(seen.values()), outs


def test_same_outputs_gradients_and_keys_as_resnet_with_less_saved():
    torch.manual_seed(0)
    ref = MODELS.build(dict(type='ResNet', **CFG))
    ours = MODELS.build(dict(type='M2FResNet', cp_stages=(0, ), **CFG))
    ref.train()  # mmseg's ResNet.train returns None
    ours.train()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ref_bytes, ref_outs = _saved_bytes(ref, x)
    our_bytes, our_outs = _saved_bytes(ours, x)
    for a, b in zip(our_outs, ref_outs):
        torch.testing.assert_close(a, b)
    w = [torch.randn_like(o) for o in ref_outs]
    sum((o * g).sum() for o, g in zip(ref_outs, w)).backward()
    sum((o * g).sum() for o, g in zip(our_outs, w)).backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    # layer1's activations (64 channels at stride 4) are not kept
    layer1_out = 2 * 64 * 16 * 16 * 4
    assert ref_bytes - our_bytes > 3 * layer1_out, (ref_bytes, our_bytes)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match='cp_stages'):
        MODELS.build(dict(type='M2FResNet', cp_stages=(4, ), **CFG))
    with pytest.raises(ValueError, match='every stage'):
        MODELS.build(dict(type='M2FResNet', with_cp=True, **CFG))


def test_frozen_stem_keeps_stage_checkpointed():
    """Checkpointing follows grad mode, not the stage input's requires_grad:
    with the stem frozen (its output needs no gradient) stage 0 is still
    recomputed, and only grad-free inference skips it."""
    torch.manual_seed(0)
    kw = dict(CFG, frozen_stages=0)
    plain = MODELS.build(dict(type='M2FResNet', **kw))
    ours = MODELS.build(dict(type='M2FResNet', cp_stages=(0, ), **kw))
    ours.load_state_dict(plain.state_dict())
    plain.train()
    ours.train()
    x = torch.randn(2, 3, 64, 64)
    plain_bytes, _ = _saved_bytes(plain, x)
    our_bytes, outs = _saved_bytes(ours, x)
    assert plain_bytes - our_bytes > 3 * 2 * 64 * 16 * 16 * 4
    assert outs[0].requires_grad
    with torch.no_grad():
        for a, b in zip(ours(x), plain(x)):
            torch.testing.assert_close(a, b)
