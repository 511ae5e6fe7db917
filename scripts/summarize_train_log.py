"""Summarise the ``train_*`` lines of a benchmark log (stdin): one line per
run with step time, peak/reserved memory, step-0 loss or the error."""
import json
import sys

KEYS = ('step_s', 'min_s', 'peak_mb', 'reserved_mb', 'loss_step0', 'error')

for line in sys.stdin:
    if not line.startswith('train_'):
        continue
    name, _, values = line.partition(' ')
    d = json.loads(values)
    print(f'{name:30s}', ' '.join(
        f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={str(v)[:200]}'
        for k, v in d.items() if k in KEYS))
