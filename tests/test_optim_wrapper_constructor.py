"""M2FOptimWrapperConstructor: one group per distinct option set, the same
updates as mmengine's default constructor, and resume from its checkpoints."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.optim.scheduler import PolyLR

import m2f_plugin  # noqa: F401  (registers the constructor)
from m2f_plugin.engine import merge_param_groups

PARAMWISE = dict(
    custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=1.0),
                 'query_embed': dict(lr_mult=1.0, decay_mult=0.0)},
    norm_decay_mult=0.0)


class Toy(nn.Module):
    """Backbone (conv + BN), a query embedding, a head (linear + LN) and a
    frozen parameter (left out by both constructors): four option sets under
    ``PARAMWISE``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.query_embed = nn.Embedding(5, 4)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4),
                                  nn.Linear(4, 3))
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x).mean((2, 3))
        q = self.query_embed.weight @ f.t()  # (5, B)
        return self.head(f + q.mean(0, keepdim=True).t()).pow(2).mean()


def _wrapper(model: nn.Module, constructor: str, **optim):
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05,
                              **optim),
               clip_grad=dict(max_norm=1.0), paramwise_cfg=PARAMWISE)
    if constructor:
        cfg['constructor'] = constructor
    return build_optim_wrapper(model, copy.deepcopy(cfg))


def _options_by_param(wrapper, model):
    group_of = {id(p): g for g in wrapper.optimizer.param_groups
                for p in g['params']}
    return {n: {k: v for k, v in group_of[id(p)].items() if k != 'params'}
            for n, p in model.named_parameters() if p.requires_grad}


def _train(model, wrapper, steps: int, scheduler=None) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        wrapper.update_params(model.loss(torch.randn(2, 3, 6, 6, generator=g)))
        if scheduler is not None:
            scheduler.step()


def test_merge_param_groups_keeps_order_and_unhashable_options():
    groups = [dict(params=[0], lr=1, betas=[0.9]), dict(params=[1], lr=2),
              dict(params=[2], lr=1, betas=[0.9]), dict(params=[3], lr=2)]
    merged = merge_param_groups(groups)
    assert merged == [dict(params=[0, 2], lr=1, betas=[0.9]),
                      dict(params=[1, 3], lr=2)]
    assert groups[0]['params'] == [0]  # input untouched


def test_every_parameter_keeps_the_default_constructors_options():
    model = Toy()
    default = _wrapper(model, '')
    ours = _wrapper(model, 'M2FOptimWrapperConstructor')
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(default.optimizer.param_groups) == len(trainable) == 11
    expected = _options_by_param(default, model)
    assert _options_by_param(ours, model) == expected
    distinct = []
    for opts in expected.values():
        if opts not in distinct:
            distinct.append(opts)
    assert len(ours.optimizer.param_groups) == len(distinct) == 4
    flat = [p for g in ours.optimizer.param_groups for p in g['params']]
    assert sorted(map(id, flat)) == sorted(map(id, trainable))


def test_without_paramwise_cfg_it_is_the_default_constructor():
    model = Toy()
    wrapper = build_optim_wrapper(model, dict(
        constructor='M2FOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1)))
    assert len(wrapper.optimizer.param_groups) == 1


@pytest.mark.parametrize('optim', [dict(foreach=False), dict(fused=True)],
                         ids=['for-loop', 'fused'])
def test_same_updates_as_one_group_per_parameter(optim):
    """Five AdamW steps with clipping and a PolyLR schedule. The per-element
    arithmetic is the same; only the gradient norm for clipping sums the
    parameters in another order (and fused AdamW, what our configs use,
    rounds differently), so they agree to float32 rounding."""
    torch.manual_seed(0)
    ref_model = Toy()
    model = copy.deepcopy(ref_model)
    ref = _wrapper(ref_model, '', foreach=False)
    ours = _wrapper(model, 'M2FOptimWrapperConstructor', **optim)
    _train(ref_model, ref, 5, PolyLR(ref.optimizer, end=10, by_epoch=False))
    _train(model, ours, 5, PolyLR(ours.optimizer, end=10, by_epoch=False))
    for (name, a), b in zip(ref_model.named_parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8, msg=name)
    assert not torch.equal(ref_model.head[0].weight, Toy().head[0].weight)


def test_resume_keeps_fused_and_continues_like_the_run_that_saved_it():
    """A checkpoint saved by a foreach optimizer, resumed by a fused one (our
    configs): moments, steps and the scheduled lr carry over, ``fused`` stays
    on (PyTorch would take the checkpoint's flags), a GradScaler step works,
    and the next steps equal the saving run's."""
    torch.manual_seed(0)
    ref_model = Toy()
    ref = _wrapper(ref_model, 'M2FOptimWrapperConstructor', foreach=True)
    _train(ref_model, ref, 3, PolyLR(ref.optimizer, end=10, by_epoch=False))
    saved = copy.deepcopy(ref.state_dict())
    assert all(g['foreach'] for g in saved['param_groups'])

    model = copy.deepcopy(ref_model)
    ours = _wrapper(model, 'M2FOptimWrapperConstructor', fused=True)
    ours.load_state_dict(saved)
    assert all(g['fused'] is True and not g['foreach']
               for g in ours.optimizer.param_groups)
    assert _options_by_param(ours, model).keys() == _options_by_param(
        ref, ref_model).keys()
    for name, opts in _options_by_param(ref, ref_model).items():
        assert _options_by_param(ours, model)[name]['lr'] == opts['lr']
    for p_ref, p in zip(ref_model.parameters(), model.parameters()):
        if p.requires_grad:
            s_ref, s = ref.optimizer.state[p_ref], ours.optimizer.state[p]
            assert torch.equal(s['exp_avg_sq'], s_ref['exp_avg_sq'])
            assert float(s['step']) == float(s_ref['step']) == 3
    _train(ref_model, ref, 2)
    _train(model, ours, 2)
    for a, b in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8)
    # what AmpOptimWrapper does: a scaled step through the fused kernel
    scaler = torch.amp.GradScaler('cpu')
    before = model.head[0].weight.detach().clone()
    scaler.scale(model.loss(torch.randn(2, 3, 6, 6))).backward()
    scaler.unscale_(ours.optimizer)
    scaler.step(ours.optimizer)
    assert not torch.equal(model.head[0].weight, before)


def test_checkpoint_with_one_group_per_parameter_is_refused_with_the_remedy():
    """mmengine's default constructor writes 11 groups for Toy; merging them
    alone would leave the schedulers' per-group state behind, so it is
    refused with the command that resumes it; that command works."""
    torch.manual_seed(0)
    ref_model = Toy()
    ref = _wrapper(ref_model, '', foreach=False)
    _train(ref_model, ref, 2)
    saved = copy.deepcopy(ref.state_dict())
    ours = _wrapper(copy.deepcopy(ref_model), 'M2FOptimWrapperConstructor',
                    fused=True)
    with pytest.raises(ValueError, match=r'has 11 parameter groups, this one '
                       r'has 4 .*constructor=DefaultOptimWrapperConstructor '
                       r'optim_wrapper.optimizer.fused=None'):
        ours.load_state_dict(saved)
    remedy = _wrapper(copy.deepcopy(ref_model), '', fused=None)
    remedy.load_state_dict(saved)
    assert len(remedy.optimizer.param_groups) == 11


def test_checkpoint_of_another_model_is_refused_with_a_clear_error():
    other = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2, bias=False))
    saved = build_optim_wrapper(other, dict(
        optimizer=dict(type='AdamW', lr=1e-3),
        paramwise_cfg=dict(custom_keys={'0': dict(lr_mult=0.5)}))).state_dict()
    ours = _wrapper(Toy(), 'M2FOptimWrapperConstructor')
    with pytest.raises(ValueError, match=r'has 3 parameter groups.*load_from'):
        ours.load_state_dict(saved)


def _logged_lines(build) -> list:
    """The messages the current MMLogger receives while ``build()`` runs."""
    import logging

    from mmengine.logging import MMLogger

    lines = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Keep(level=logging.DEBUG)
    logger.addHandler(handler)
    try:
        build()
    finally:
        logger.removeHandler(handler)
    return lines


def test_log_summarises_each_group_by_module():
    """One summary line per merged group: its options, its parameter count,
    how many parameters each module (the first two components of the
    parameter's module path) holds, and the custom keys it matched; no
    per-parameter lines of the default constructor at INFO level."""
    lines = _logged_lines(
        lambda: _wrapper(Toy(), 'M2FOptimWrapperConstructor'))
    summary = [s for s in lines if s.startswith('paramwise_options -- group')
               and ' parameters: ' not in s]
    assert summary == [
        'paramwise_options -- group 1/4: lr=0.0001, weight_decay=0.05, '
        'lr_mult=0.1, decay_mult=1.0 -> 4 parameters (backbone.0: 2, '
        'backbone.1: 2; custom keys: backbone)',
        'paramwise_options -- group 2/4: lr=0.001, weight_decay=0.0, '
        'lr_mult=1.0, decay_mult=0.0 -> 1 parameters (query_embed: 1; '
        'custom keys: query_embed)',
        'paramwise_options -- group 3/4: lr=0.001, weight_decay=0.05 '
        '(optimizer defaults) -> 4 parameters (head.0: 2, head.2: 2)',
        'paramwise_options -- group 4/4: lr=0.001, weight_decay=0.0 -> 2 '
        'parameters (head.1: 2)',
    ]


def test_group_summary_counts_deep_and_top_level_parameters_per_module():
    """Deep names are counted under their first two module levels
    (``decode_head.pixel_decoder``), a parameter directly on the model
    under its own name, an unknown one as ``?``."""
    from m2f_plugin.engine.optim_wrapper_constructor import (
        describe_param_groups,
    )
    params = [torch.zeros(1) for _ in range(5)]
    names = {id(params[0]): 'decode_head.pixel_decoder.layers.0.attn.weight',
             id(params[1]): 'decode_head.pixel_decoder.layers.1.attn.bias',
             id(params[2]): 'decode_head.query_embed.weight',
             id(params[3]): 'level_embed'}
    lines = describe_param_groups(
        [dict(params=params, lr=0.5)], names, custom_keys=['query_embed'],
        defaults=dict(lr=0.1, weight_decay=None))
    assert lines == [
        'paramwise_options -- group 1/1: lr=0.5 -> 5 parameters '
        '(decode_head.pixel_decoder: 2, decode_head.query_embed: 1, '
        'level_embed: 1, ?: 1; custom keys: query_embed)']
