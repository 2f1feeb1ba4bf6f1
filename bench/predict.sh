#!/bin/bash
# bench/predict.sh: whole-volume inference time per case on the CPU (issue 7), for the
# fets and small presets: fedseg-predict on one 240x240x155 synthetic case (prep's
# preprocessing, sliding windows with overlap 0.5, mapping back, NIfTI writing),
# plus the model-only share from --json. No target: the numbers go in the notes.
#   bench/predict.sh [BUILD_DIR] [THREADS] [PRESETS]     defaults: build nproc "small fets"
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-$(nproc)}
PRESETS=${3:-"small fets"}
BIN=$(cd "$BUILD/bin" && pwd)
WORK=${FEDSEG_BENCH_DIR:-/tmp/fedseg-bench}/predict
mkdir -p "$WORK"
cd "$WORK"
[ -d cohort ] || "$BIN/fedseg-synth" -o cohort --cases 1 --shape 240,240,155 --seed 1 -q
[ -d agg ] || { "$BIN/fedseg-keygen" -o agg >/dev/null 2>&1; "$BIN/fedseg-keygen" -o s >/dev/null 2>&1; }
echo "fedseg-predict, one 240x240x155 case, $THREADS threads, overlap 0.5, no mirroring; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %8s %12s %10s\n' preset patch "seconds" "peak RSS"
for p in $PRESETS; do
  rm -rf "ex-$p" "out-$p"
  "$BIN/fedseg-init" --federation bench --key agg --site s=s --preset "$p" -o "ex-$p" -q >/dev/null
  patch=$([ "$p" = fets ] && echo 128 || echo 64)
  /usr/bin/time -f "%e %M" -o time.txt "$BIN/fedseg-predict" "ex-$p/rounds/0/global.h5" cohort -o "out-$p" \
    --federation "ex-$p/federation.json" --threads "$THREADS" -q --json >"out-$p.json"
  read -r secs kb <time.txt
  printf '%-8s %8s %12s %9.0fM\n' "$p" "$patch" "$secs" "$(echo "$kb / 1024" | bc -l)"
done
