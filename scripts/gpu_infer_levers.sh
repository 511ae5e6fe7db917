#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_infer_levers.sh
# Written in a session without a GPU: measures change 25 (three inference
# levers aimed at the profile of run 8 at 1024x2048, docs/perf.md):
#   - attn x v of the inference cross-attention split over the keys
#     (run 8: sm80_xmma_gemm ... nn 32x32x8, 521 us x 9 per image);
#   - GroupNorm statistics by torch.var_mean on large groups
#     (run 8: RowwiseMomentsCUDAKernel, 388 us x 5 per image);
#   - the semantic map's class probabilities made contiguous
#     (run 8: cutlass ... sgemm_128x32_8x5_nt_align1, 51 us x 51 per image).
# The benchmark times each lever switched off in the same process (variants
# nosplit, nogn, neither; the contiguous probabilities have no switch), and
# the profile's kernel table compares with docs/bench/profile_after/
# ours_infer_1024x2048_b1_fp32.txt (kernel times travel across hosts better
# than wall times).
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT/prof"
export PYTHONUNBUFFERED=1
timeout 150 python3 -m pytest -q -p no:cacheprovider \
  tests/models/test_group_norm.py tests/models/test_perf_paths.py \
  tests/models/test_head.py > "$OUT/pytest_gpu.log" 2>&1
tail -3 "$OUT/pytest_gpu.log"
NOSPLIT="decode_head.transformer_decoder.cross_attn_split_keys=False"
NOGN="decode_head.pixel_decoder.norm_split_stats=False"
timeout 400 python3 -m m2f_plugin.tools.benchmark --only infer \
  --iters ${ITERS:-30} --warmup 5 --out "$OUT/infer.json" \
  --variant "nosplit:$NOSPLIT" --variant "nogn:$NOGN" \
  --variant "neither:$NOSPLIT;$NOGN" > "$OUT/infer.log" 2>&1
grep -E "infer|fps|MB" "$OUT/infer.log" | tail -20
timeout 150 python3 -m m2f_plugin.tools.profile --steps 5 --warmup 3 \
  --out "$OUT/prof" --which ours builtin --mode infer --batch 1 \
  --size 1024 2048 2>&1 | grep -E "^(==|wall|  )"
