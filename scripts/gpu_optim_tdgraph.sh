#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_optim_tdgraph.sh
# Written in a session without a GPU: the two changes below are CPU-tested
# but their GPU effect is unmeasured. This script measures both in one run.
#
# 1. --optim config: each side trains with the optimizer its own config
#    builds (mmseg: 451 groups, foreach AdamW; ours: 4 groups, fused AdamW),
#    against --optim plain (one AdamW group on both sides, runs 1-15).
# 2. cuda_graph_train='transformer_decoder' on top of the eager low-memory
#    recipe (r50-lowmem): only the transformer decoder is graphed; backbone
#    stages 0-1 and the pixel decoder stay eager and checkpointed.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider \
    tests/models/test_cuda_graph_train.py tests/models/test_segmentor_graph.py \
    tests/test_optim_wrapper_constructor.py > "$OUT/pytest_gpu.log" 2>&1
  tail -3 "$OUT/pytest_gpu.log"
fi
LOW="backbone.type='M2FResNet';backbone.cp_stages=(0,1);decode_head.pixel_decoder.with_cp=True"
TD="decode_head.cuda_graph_train='transformer_decoder'"
for OPTIM in ${OPTIMS:-config plain}; do
  timeout 520 python3 -m m2f_plugin.tools.benchmark --only train --amp fp32 \
    --optim "$OPTIM" --batches ${BATCHES:-2 8} --iters ${ITERS:-12} \
    --warmup ${WARMUP:-4} --out "$OUT/train_$OPTIM.json" \
    --variant "lowmem:$LOW" \
    --variant "lowtd:$LOW;$TD" \
    --variant "lowtdcp:$LOW;$TD;decode_head.transformer_decoder.with_cp=True" \
    > "$OUT/train_$OPTIM.log" 2>&1
  echo "== --optim $OPTIM"
  python3 scripts/summarize_train_log.py < "$OUT/train_$OPTIM.log"
  grep -iE "warn|fail|error" "$OUT/train_$OPTIM.log" | sort | uniq -c | head -8
done
