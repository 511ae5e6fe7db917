#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_fullgraph.sh
# The GPU tests of the training graphs, then training at batch 2 and 8 with
# the backbone inside the graphs (M2FEncoderDecoder) against the built-in, the
# decoders-only graphs and the eager low-memory recipe, in one run.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/models/test_segmentor_graph.py \
    tests/models/test_cuda_graph_train.py tests/models/test_resnet_stage_cp.py \
    > "$OUT/pytest_gpu.log" 2>&1
  tail -3 "$OUT/pytest_gpu.log"
fi
LOW="backbone.type='M2FResNet';backbone.cp_stages=(0,1);decode_head.pixel_decoder.with_cp=True"
G="decode_head.cuda_graph_train=True"
CP="decode_head.pixel_decoder.with_cp=True;decode_head.transformer_decoder.with_cp=True"
FULL="type='M2FEncoderDecoder';$G"
timeout 480 python3 -m m2f_plugin.tools.benchmark --only train --amp fp32 \
  --batches ${BATCHES:-2 8} --iters ${ITERS:-12} --warmup ${WARMUP:-4} --out "$OUT/fullgraph.json" \
  --variant "lowmem:$LOW" \
  --variant "graph:$G;$CP" \
  --variant "full:$FULL" \
  --variant "fullcp:$FULL;$CP" \
  --variant "fulllow:$FULL;$LOW;decode_head.transformer_decoder.with_cp=True" \
  > "$OUT/fullgraph.log" 2>&1
python3 scripts/summarize_train_log.py < "$OUT/fullgraph.log"
grep -iE "warn|fail|error" "$OUT/fullgraph.log" | sort | uniq -c | head -8
