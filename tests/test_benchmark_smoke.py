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
