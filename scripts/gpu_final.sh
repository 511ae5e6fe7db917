#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_final.sh
# Inference in fp32 and bf16 (ours; the built-in has no bf16), a third
# training comparison, and an inference profile at 1024x2048.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
B="python3 -m m2f_plugin.tools.benchmark --iters 15 --warmup 4"
timeout 170 $B --only infer --infer-amp fp32 bf16 --variant "graph:decode_head.cuda_graph=True" \
  --out "$OUT/infer_amp.json" > "$OUT/infer_amp.log" 2>&1
grep -E "^infer_" "$OUT/infer_amp.log" | cut -c1-190
timeout 100 $B --only train --amp fp32 --out "$OUT/train3.json" > "$OUT/train3.log" 2>&1
grep -E "^train_" "$OUT/train3.log" | cut -c1-190
timeout 80 python3 -m m2f_plugin.tools.profile --out "$OUT/prof" --which ours builtin --mode infer \
  --batch 1 --size 1024 2048 --steps 3 > "$OUT/profile.log" 2>&1
grep -E "^(==|wall|  memory)" "$OUT/profile.log"
(cd "$OUT" && tar czf prof.tgz prof && rm -rf prof)
