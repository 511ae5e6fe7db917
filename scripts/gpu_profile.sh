#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_profile.sh
# torch.profiler reports (m2f_plugin.tools.profile) for the issue-7 shapes.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT/prof"
export PYTHONUNBUFFERED=1
P="python3 -m m2f_plugin.tools.profile --out $OUT/prof --steps ${STEPS:-5} --warmup 3"
timeout 200 $P --which ours builtin --mode train --batch 2 8 2>&1 | grep -E "^(==|wall|  )" 
timeout 100 $P --which ours --mode train --batch 8 --amp bf16 2>&1 | grep -E "^(==|wall|  )"
timeout 100 $P --which ours builtin --mode infer --batch 1 2>&1 | grep -E "^(==|wall|  )"
timeout 100 $P --which ours builtin --mode infer --batch 1 --size 1024 2048 2>&1 | grep -E "^(==|wall|  )"
cd "$OUT/prof" && tar czf ../prof.tgz *.txt summary.json && rm -f *.txt
