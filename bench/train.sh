#!/bin/bash
# bench/train.sh: seconds per training step of fedseg-train against the same model
# and step in Python PyTorch (Debian python3-torch: the same libtorch), at the same
# thread count, batch 1. Issue 5's targets: ratio C++/Python <= 1.0, and data
# loading + augmentation < 5 % of fedseg-train's step time.
#
#   bench/train.sh [BUILD_DIR] [THREADS] [STEPS] [CONFIGS]
#   defaults: build, nproc, 4 (1 warm-up + 3 timed), "small:64 fets:64 small:128 fets:128"
#
# Each config is PRESET:PATCH. The FeTS model at 128^3 needs about 9.5 GiB and about
# 40 s per step on 2 cores: the default run takes about 10 minutes.
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-$(nproc)}
STEPS=${3:-4}
CONFIGS=${4:-"small:64 fets:64 small:128 fets:128"}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$BUILD/bin" && pwd)
PY=/usr/bin/python3
"$PY" -c 'import torch' 2>/dev/null || { echo "bench/train.sh: needs Debian's python3-torch" >&2; exit 69; }
WORK=${FEDSEG_BENCH_DIR:-/tmp/fedseg-bench}/train
mkdir -p "$WORK"
cd "$WORK"
rm -rf ex* agg s
"$BIN/fedseg-keygen" -o agg >/dev/null 2>&1
"$BIN/fedseg-keygen" -o s >/dev/null 2>&1
if [ ! -e site.h5 ]; then
  "$BIN/fedseg-synth" -o cohort --cases 2 --shape 160,160,140 --seed 1 -q
  "$BIN/fedseg-prep" cohort -o site.h5 --val-fraction 0 -q
fi
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)
echo "fedseg-train step vs PyTorch step: batch 1, $THREADS threads, median of $((STEPS - 1)) steps after 1 warm-up"
echo "libblas.so.3 -> $blas; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-12s %12s %12s %8s %10s %8s\n' config "fedseg s" "pytorch s" ratio "data %" verdict
worst=0
for cfg in $CONFIGS; do
  preset=${cfg%%:*}
  patch=${cfg##*:}
  ex=ex-$preset-$patch
  "$BIN/fedseg-init" --federation bench --key agg --site s=s --preset "$preset" --patch "$patch" \
    --foreground-fraction 0.33 --epochs 1000 -o "$ex" -q >/dev/null
  "$BIN/fedseg-train" "$ex/rounds/0/global.h5" site.h5 --federation "$ex/federation.json" --site s \
    --threads "$THREADS" --max-steps "$STEPS" -o "$ex/update.h5" --json -q >"$ex/train.json"
  "$PY" "$HERE/train_reference.py" "$preset" "$patch" "$THREADS" "$STEPS" >"$ex/python.json"
  "$PY" - "$ex/train.json" "$ex/python.json" "$cfg" <<'PYEOF'
import json, sys
c, p = json.load(open(sys.argv[1]))["timings"], json.load(open(sys.argv[2]))
ratio = c["median_step_seconds"] / p["median_step_seconds"]
steps = json.load(open(sys.argv[1]))["steps"]
data = 100 * c["data_seconds"] / (c["data_seconds"] + c["compute_seconds"])
ok = ratio <= 1.0 and data < 5
print("%-12s %12.3f %12.3f %8.2f %9.2f%% %8s" % (sys.argv[3], c["median_step_seconds"], p["median_step_seconds"],
                                                 ratio, data, "met" if ok else "MISSED"))
PYEOF
done
echo "targets: ratio <= 1.0 (fedseg-train no slower than PyTorch), data loading + augmentation < 5 % of the step"
