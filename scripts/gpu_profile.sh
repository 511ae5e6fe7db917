#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_profile.sh
# torch.profiler reports (m2f_plugin.tools.profile) for the issue-7 shapes.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT/prof"
export PYTHONUNBUFFERED=1
P="python3 -m m2f_plugin.tools.profile --steps ${STEPS:-5} --warmup 3"
timeout 200 $P --out $OUT/prof/r0 --which ours builtin --mode train --batch 2 8 2>&1 | grep -E "^(==|wall|  )" 
timeout 100 $P --out $OUT/prof/r1 --which ours --mode train --batch 8 --amp bf16 2>&1 | grep -E "^(==|wall|  )"
timeout 100 $P --out $OUT/prof/r2 --which ours builtin --mode infer --batch 1 2>&1 | grep -E "^(==|wall|  )"
timeout 100 $P --out $OUT/prof/r3 --which ours builtin --mode infer --batch 1 --size 1024 2048 2>&1 | grep -E "^(==|wall|  )"
cd "$OUT" && tar czf prof.tgz prof && rm -rf prof
