#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_check.sh
# Writes results under $OUT (or ./gpu_out). Each part has its own time limit so
# one failure does not lose the rest.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, mmcv, mmseg, mmdet, scipy; print(torch.__version__, mmcv.__version__, mmseg.__version__, mmdet.__version__, scipy.__version__)" | tee -a "$OUT/gpu.txt"
PARTS=${PARTS:-"triton bench"}
for part in $PARTS; do
  case $part in
    triton)
      if [ -f projects_ops/msda_triton/bench.py ]; then
        timeout 240 python3 projects_ops/msda_triton/bench.py --check --out "$OUT/triton_bench.json" 2>&1 | tail -40 | tee "$OUT/triton.log"
      fi ;;
    bench)
      timeout 420 python3 -m m2f_plugin.tools.benchmark --out "$OUT/bench.json" \
        --msda-impls ${MSDA_IMPLS:-mmcv pytorch} 2>&1 | grep -E "^(train|infer|msda|wrote)|Error|error" | tee "$OUT/bench.log" ;;
  esac
done
