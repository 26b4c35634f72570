#!/bin/bash
# The GPU checks, as ONE call on a lent GPU machine (prepare it with device_prepare.sh):
#
#   run(command="bash benchmarks/device_check.sh", carry=[".whl", ".devdata"], timeout_s=560)
#
# 1. the CUDA tests (tests/test_gpu.py: every precision trains, predictions equal the CPU's),
#    which skip on a machine without a GPU;
# 2. CIFAKE (fit 16,000, score 4,000 held-out, K = 10, encoder seed 0) at the defaults and with
#    --epochs 100 (EPOCHS): what a GPU buys against the 2-core CPU's 22 bfloat16 epochs
#    (benchmarks/results/epochs22/quality.md) and 50 (epochs50/NOTES.md). quality.json holds
#    each fit's training seconds and images per second.
#
# Everything lands in $OUT (./device_out when run elsewhere): check.log, gpu_tests.log,
# quality.log, quality/quality.{json,md}. SMOKE=1 runs quality.py --smoke instead (seconds, on
# any machine): a check of this script, not of the GPU. The exit status is 1 if any step failed.
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT="${OUT:-device_out}"
EPOCHS="${EPOCHS:-100}"
PYTHON="${PYTHON:-python3}"  # the machine's own, which holds torch there
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/check.log"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/aegmm-site .whl/*.whl || { log "installing the carried wheels failed"; exit 1; }
fi
export PYTHONPATH="$PWD/src:/tmp/aegmm-site${PYTHONPATH:+:$PYTHONPATH}"
# the carried data where device_prepare.sh put it; else ../shared/data (common.py)
[ -d .devdata ] && export AEGMM_SHARED_DATA="${AEGMM_SHARED_DATA:-$PWD/.devdata}"
log "$(nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi')"
"$PYTHON" - <<'PY' 2>&1 | tee -a "$OUT/check.log"
import os, numba, sklearn, torch, torchvision, umap
print("torch", torch.__version__, "torchvision", torchvision.__version__, "sklearn", sklearn.__version__,
      "umap", umap.__version__, "numba", numba.__version__, "cores", os.cpu_count())
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

log "CUDA tests"
"$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
step=${PIPESTATUS[0]} failed=$((step != 0))
log "CUDA tests: exit $step"

smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)
log "CIFAKE: defaults and epochs=$EPOCHS"
"$PYTHON" benchmarks/quality.py "${smoke[@]}" --datasets cifake --tasks cifar10 --seeds 0 --methods aegmm \
    --variant "epochs=$EPOCHS" --out "$OUT/quality" 2>&1 | tee "$OUT/quality.log"
step=${PIPESTATUS[0]} failed=$((failed || step != 0))
log "CIFAKE: exit $step"
exit "$failed"
