#!/usr/bin/env bash
# Run on the lent GPU machine (device tool), from the repo root:
#   source .devwheels/env.sh && bash scripts/gpu_check.sh
# Writes results under $OUT (or ./gpu_out). Each part has its own time limit so
# one failure does not lose the rest.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, mmcv, mmseg, mmdet, scipy, triton; print(torch.__version__, mmcv.__version__, mmseg.__version__, mmdet.__version__, scipy.__version__, triton.__version__)" | tee -a "$OUT/gpu.txt"
for part in ${PARTS:-triton pytest bench}; do
  case $part in
    triton)
      timeout 110 python3 projects_ops/msda_triton/bench.py --check --out "$OUT/triton_bench.json" > "$OUT/triton.log" 2>&1
      tail -25 "$OUT/triton.log" ;;
    pytest)
      timeout 90 python3 -m pytest -q -p no:cacheprovider tests/projects_ops tests/models/test_equivalence_mmseg.py > "$OUT/pytest_gpu.log" 2>&1
      tail -3 "$OUT/pytest_gpu.log" ;;
    bench)
      timeout 300 python3 -m m2f_plugin.tools.benchmark --out "$OUT/bench.json" --ours-triton --iters 15 --warmup 3 \
        --msda-impls mmcv pytorch triton > "$OUT/bench.log" 2>&1
      grep -E "^(train|infer|msda|wrote)" "$OUT/bench.log" | cut -c1-170 ;;
  esac
done
