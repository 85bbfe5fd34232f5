#!/usr/bin/env bash
# On the lent GPU machine (no network; PyTorch, Lightning, torchmetrics installed): install the wheels of
# .gpu_bundle/ (made here by benchmarks/gpu_bundle.sh), unpack its datasets, run the GPU suite into $OUT/gpu,
# or the leaderboard into $OUT/leaderboard.
#
#   bash benchmarks/gpu_run.sh [more options of benchmarks.gpu_suite, e.g. --budget-s 400]
#   bash benchmarks/gpu_run.sh leaderboard [options of benchmarks.leaderboard, e.g. --budget 1]
#   bash benchmarks/gpu_run.sh efficiency      # genlab against plain loops (benchmarks.gpu_efficiency), ~7 minutes
#
# $OUT/gpu gets results.md, results.json, suite.log and logs.tar.gz (every command's log and run_stats.json);
# the run folders (checkpoints) stay in $WORK, which nothing copies back.
set -euo pipefail
cd "$(dirname "$0")/.."

BUNDLE=${BUNDLE:-.gpu_bundle}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_suite_out}
RESULTS=$OUT/gpu
WORK=${WORK:-/tmp/gpu_suite_runs}
SITE=${SITE:-/tmp/site}
export DATA_DIR=${GPU_DATA_DIR:-/tmp/data}

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$BUNDLE"/wheels/*.whl
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

mkdir -p "$DATA_DIR/FashionMNIST/raw" "$DATA_DIR/tinyshakespeare" "$RESULTS"
for archive in "$BUNDLE"/data/FashionMNIST/raw/*.gz; do
    gunzip -c "$archive" >"$DATA_DIR/FashionMNIST/raw/$(basename "$archive" .gz)"
done
cp "$BUNDLE/data/tinyshakespeare/input.txt" "$DATA_DIR/tinyshakespeare/"

if [[ ${1:-} == leaderboard ]]; then  # the board straight into $OUT (rewritten after each family); runs in $WORK
    shift
    mkdir -p "$OUT/leaderboard"
    status=0
    PYTHONUNBUFFERED=1 "$PYTHON" -m benchmarks.leaderboard --out "$OUT/leaderboard" --work "$WORK/leaderboard" \
        --accelerator gpu "$@" 2>&1 | tee "$OUT/leaderboard/leaderboard.log" || status=$?
    (cd "$WORK/leaderboard" && tar czf "$OUT/leaderboard/logs.tar.gz" logs) || true
    exit "$status"
fi

if [[ ${1:-} == efficiency ]]; then  # the suite's efficiency part alone, with its whole budget
    shift
    set -- --parts efficiency --budget-s 460 "$@"
fi

status=0
PYTHONUNBUFFERED=1 "$PYTHON" -m benchmarks.gpu_suite --out "$RESULTS" --work "$WORK" "$@" 2>&1 |
    tee "$RESULTS/suite.log" || status=$?
# the logs, small: what a failed part printed, beyond the tail that results.json keeps
(cd "$WORK" && find . -name '*.log' -o -name run_stats.json -o -name samples.txt |
    tar czf "$RESULTS/logs.tar.gz" -T -) || true
exit "$status"
