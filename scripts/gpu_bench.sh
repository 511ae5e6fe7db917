#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_bench.sh
# GPU tests, then the side-by-side benchmark with our variants. Writes JSON and
# logs under $OUT; prints a short table at the end.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
B="python3 -m m2f_plugin.tools.benchmark --iters ${ITERS:-20} --warmup ${WARMUP:-5}"
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/models/test_cuda_graph.py \
    tests/models/test_cuda_graph_train.py tests/models/test_lazy_masks.py \
    tests/models/test_perf_paths.py tests/models/test_fast_costs.py tests/projects_ops \
    > "$OUT/pytest_gpu.log" 2>&1
  tail -3 "$OUT/pytest_gpu.log"
fi
for part in ${PARTS:-train bf16 infer profile}; do
  case $part in
    train) timeout 300 $B --only train --amp fp32 --out "$OUT/train.json" --ours-triton \
        --variant "cp:decode_head.pixel_decoder.with_cp=True" \
        --variant "cpall:decode_head.pixel_decoder.with_cp=True;decode_head.transformer_decoder.with_cp=True" \
        --variant "lean:backbone.with_cp=True;decode_head.pixel_decoder.with_cp=True;decode_head.transformer_decoder.with_cp=True" \
        > "$OUT/train.log" 2>&1 ;;
    graph) timeout 420 $B --only train --amp fp32 --out "$OUT/graph.json" \
        --variant "cp:decode_head.pixel_decoder.with_cp=True" \
        --variant "graph:decode_head.cuda_graph_train=True" \
        --variant "graphcp:decode_head.cuda_graph_train=True;decode_head.pixel_decoder.with_cp=True" \
        --variant "graphcpall:decode_head.cuda_graph_train=True;decode_head.pixel_decoder.with_cp=True;decode_head.transformer_decoder.with_cp=True" \
        --variant "graphlean:backbone.with_cp=True;decode_head.cuda_graph_train=True;decode_head.pixel_decoder.with_cp=True;decode_head.transformer_decoder.with_cp=True" \
        > "$OUT/graph.log" 2>&1 ;;
    bf16) timeout 150 $B --only train --amp bf16 --batches 8 2 --no-builtin --out "$OUT/bf16.json" \
        --variant "cpalltri:decode_head.pixel_decoder.with_cp=True;decode_head.transformer_decoder.with_cp=True;decode_head.pixel_decoder.msda_impl='triton'" \
        > "$OUT/bf16.log" 2>&1 ;;
    infer) timeout 150 $B --only infer --out "$OUT/infer.json" \
        --variant "graph:decode_head.cuda_graph=True" \
        > "$OUT/infer.log" 2>&1 ;;
    profile) timeout 120 python3 -m m2f_plugin.tools.profile --out "$OUT/prof" --which ours \
        --mode train --batch 2 8 --steps 3 > "$OUT/profile.log" 2>&1
        grep -E "^(==|wall|  memory)" "$OUT/profile.log"
        (cd "$OUT" && tar czf prof.tgz prof && rm -rf prof) ;;
  esac
  [ -f "$OUT/$part.log" ] && [ "$part" != profile ] && grep -E "^(train|infer|msda)_" "$OUT/$part.log" | python3 -c "
import sys, json
for line in sys.stdin:
    k, _, v = line.partition(' ')
    d = json.loads(v)
    print(f'{k:34s}', ' '.join(f'{a}={b:.4g}' if isinstance(b, float) else f'{a}={str(b)[:90]}' for a, b in d.items() if a in ('step_s','min_s','peak_mb','reserved_mb','loss_step0','img_per_s','error')))
"
done
