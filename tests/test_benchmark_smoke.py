"""The benchmark tool runs on CPU (smoke mode) and writes a complete JSON."""
from __future__ import annotations

import json

from m2f_plugin.tools import benchmark


def test_benchmark_smoke_writes_all_sections(tmp_path):
    out = tmp_path / 'bench.json'
    assert benchmark.main(['--smoke', '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    r = result['results']
    for key in ('train_builtin_b2_fp32', 'train_ours_b2_fp32',
                'infer_builtin_64x64_b1_fp32', 'infer_ours_64x64_b1_fp32',
                'msda_b2_float32'):
        assert key in r and 'error' not in r[key], (key, r.get(key))
    # same weights on both sides: step-0 losses agree up to point sampling
    a = r['train_builtin_b2_fp32']['loss_step0']
    b = r['train_ours_b2_fp32']['loss_step0']
    assert abs(a - b) / a < 0.02, (a, b)
    assert r['infer_ours_64x64_b1_fp32']['img_per_s'] > 0
    assert r['msda_b2_float32']['mmcv']['fwd_us'] > 0


def test_benchmark_variants_apply_config_overrides():
    name, overrides = benchmark.parse_variant(
        "lean:backbone.with_cp=True;decode_head.pixel_decoder.msda_impl='triton'")
    assert name == 'lean'
    assert overrides == {'backbone.with_cp': True,
                         'decode_head.pixel_decoder.msda_impl': 'triton'}
    cfg = {'backbone': {'with_cp': False},
           'decode_head': {'pixel_decoder': {'msda_impl': 'mmcv'}}}
    benchmark._override(cfg, overrides)
    assert cfg['backbone']['with_cp'] is True
    assert cfg['decode_head']['pixel_decoder']['msda_impl'] == 'triton'


def test_profile_smoke_reports_stages(tmp_path):
    from m2f_plugin.tools import profile
    assert profile.main(['--smoke', '--out', str(tmp_path), '--which', 'ours',
                         '--mode', 'train', '--steps', '1',
                         '--warmup', '0']) == 0
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert len(summary) == 1 and summary[0]['which'] == 'ours'
    stages = summary[0]['stages']
    for stage in ('backbone', 'pixel_decoder', 'transformer_decoder',
                  'criterion', 'backward', 'optimizer'):
        assert stages[stage]['host_ms'] > 0, stage
    text = (tmp_path / 'ours_train_b2_fp32.txt').read_text()
    assert 'by host self time' in text and 'stage backward' in text


def test_benchmark_config_optimizers_are_each_sides_own():
    """``--optim config``: mmseg's config gives one group per parameter, ours
    fused AdamW with one group per option set; a step runs with it."""
    import pytest
    ours = benchmark.build('ours', 150, True)
    builtin = benchmark.build('builtin', 150, True)
    a = benchmark.make_optimizer(ours, 'ours', 'config')
    b = benchmark.make_optimizer(builtin, 'builtin', 'config')
    assert a.defaults['fused'] is True and 3 <= len(a.param_groups) <= 8
    trainable = [p for p in builtin.parameters() if p.requires_grad]
    assert not b.defaults['fused'] and len(b.param_groups) == len(trainable)
    with pytest.raises(ValueError, match="'plain' or 'config'"):
        benchmark.make_optimizer(ours, 'ours', 'adam')
    r = benchmark.bench_train(ours, 2, (64, 64), 150, 'cpu', None, 0, 1,
                              'ours', 'config')
    assert r['step_s'] > 0 and r['loss_step0'] > 0
