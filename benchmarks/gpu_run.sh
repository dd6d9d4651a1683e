#!/usr/bin/env bash
# One prepared speed run for a lent GPU machine (docs/performance.md).
#
#   OUT=/some/dir bash benchmarks/gpu_run.sh          # the real run: ends within ~8 minutes
#   OUT=/tmp/gpuout GPU_SMOKE=1 bash benchmarks/gpu_run.sh   # a tiny smoke run (any machine)
#
# Uses the package from the source tree (PYTHONPATH=$PWD, nothing is installed).
# Writes under $OUT: gpu_run.log (nvidia-smi, progress, summary tables),
# speed_gpu.json (every result, rewritten after each setting so a cut-short run
# keeps what it measured) and inference_gpu.json (whole NUTS / SVI fits). With .ref/run_experiments.py present (the authors' script,
# never committed) their PyTorch trainer is timed beside ours.
#
# Environment: PY (python with jax; default python3), REF_PYTHON (python with torch;
# default $PY), BUDGET_S (whole-script limit in seconds; default 470).
set -u
cd "$(dirname "$0")/.."

OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
PY=${PY:-python3}
REF_PY=${REF_PYTHON:-$PY}
BUDGET_S=${BUDGET_S:-480}
LOG="$OUT/gpu_run.log"
JSON="$OUT/speed_gpu.json"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# Full float32 matrix products, like PyTorch's default (no TF32), for a like-for-like comparison.
export JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-highest}

log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - SECONDS)); }

: >"$LOG"
rm -f "$JSON" "$JSON.tmp"  # results of an earlier run in the same $OUT are not mixed in
log "gpu_run.sh start; GPU_SMOKE=${GPU_SMOKE:-0}; budget ${BUDGET_S}s"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
else
    log "no nvidia-smi on this machine"
fi
log "python: $($PY -c 'import sys; print(sys.version.split()[0])' 2>&1)"

REF_ARGS=()
if [ -f .ref/run_experiments.py ]; then
    if $REF_PY -c "import torch" >/dev/null 2>&1; then
        REF_ARGS=(--against-reference .ref/run_experiments.py --reference-python "$REF_PY")
        log "reference: .ref/run_experiments.py with $($REF_PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1)"
    else
        log "reference: $REF_PY has no torch; reference timings skipped"
    fi
else
    log "reference: .ref/run_experiments.py absent; reference timings skipped"
fi

# part LIMIT_S ARGS...: one speed.py invocation, appending to $JSON, killed at LIMIT_S
part() {
    local limit=$1
    shift
    local room
    room=$(left)
    if [ "$room" -lt 20 ]; then
        log "skipped (budget spent): $*"
        return 0
    fi
    [ "$limit" -gt "$room" ] && limit=$room
    log "part (limit ${limit}s): $*"
    timeout -k 5 "$limit" "$PY" benchmarks/speed.py --append --out "$JSON" "$@" >>"$LOG" 2>&1
    log "part done, rc=$?"
}

# fits LIMIT_S ARGS...: one inference.py invocation (whole NUTS / SVI fits), killed at LIMIT_S
fits() {
    local limit=$1
    shift
    local room
    room=$(left)
    if [ "$room" -lt 20 ]; then
        log "skipped (budget spent): inference $*"
        return 0
    fi
    [ "$limit" -gt "$room" ] && limit=$room
    log "fits (limit ${limit}s): $*"
    timeout -k 5 "$limit" "$PY" benchmarks/inference.py --out "$OUT/inference_gpu.json" "$@" >>"$LOG" 2>&1
    log "fits done, rc=$?"
}

if [ "${GPU_SMOKE:-0}" = "1" ]; then
    # Tiny: small settings, the large-game path with A=8, a forced episode batch and random actions.
    part 240 --quick --repeats 1 --max-seconds 2 --settings E1 E2 --sequential-for E2 "${REF_ARGS[@]}" --reference-epochs 2 \
        --reference-settings E2
    part 120 --quick --repeats 1 --max-seconds 2 --settings anon_n1000 --large-actions 8 --simulate-below 500 \
        --episode-batch 4 --sequential-for
    fits 200 --chain-method vectorized --warmup 20 --samples 20 --steps 20
else
    COMMON=(--repeats 5 --max-seconds 6 --worker-timeout 170 "${REF_ARGS[@]}" --reference-epochs 3)
    # 1. The numbers that matter most: ours vs the authors' trainer on E1, E2 (neural) and
    #    n=300, then 10,000 and 1,000,000 agents.
    part 250 "${COMMON[@]}" --sequential-for --settings E1 E2_neural E7_n300 anon_n10000 anon_n1000000
    # 2. Whole fits: NUTS on E2 (4 chains x (1000 + 1000), chains vectorised on the one GPU), SVI on E1.
    fits 100 --chain-method vectorized
    # 3. The rest: structured E2 (+ sequential recurrence), E3, the other E7 sizes (n=120 with the reference).
    part 110 "${COMMON[@]}" --sequential-for E2 --reference-settings E7_n120 --settings E2 E3 E7_n40 E7_n80 E7_n120 E7_n200
    # 4. The remaining anonymous sizes.
    part 60 "${COMMON[@]}" --sequential-for --settings anon_n100000 anon_n1000
fi

log "summary of $JSON:"
"$PY" - "$JSON" >>"$LOG" 2>&1 <<'EOF'
import json, sys
sys.path.insert(0, "benchmarks")
from speed import summary
report = json.load(open(sys.argv[1]))
print("machine:", json.dumps(report.get("machine")))
print(summary(report["results"]))
EOF
rm -f "$JSON.tmp"
log "gpu_run.sh end"
tail -n 40 "$LOG"
