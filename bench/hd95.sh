#!/usr/bin/env bash
# bench/hd95.sh: fedseg::metrics' HD95 on BraTS-sized (240x240x155, 1 mm) tumour masks
# against the MedPy algorithm in scipy (bench/hd95_reference.py), timed in the same run.
#
#   bench/hd95.sh [BUILD_DIR] [THREADS] [CASES]      (defaults: build 1 4)
#
# Target (issue 7): fedseg at least 20x faster than the scipy reference, with the same
# values (pooled and max-directed HD95 within 1e-6). fedseg's time is that of
# binary_metrics (counting pass, Dice, both HD95 conventions, sensitivity,
# specificity, volumes) over all cases, volumes already in memory; the reference's is
# MedPy's hd95 alone. The whole-grid row (--full-grid: no union bounding box) shows
# what the crop is worth. A MISSED target does not fail: benchmarks are not tests.
#
# Environment:
#   FEDSEG_BENCH_DIR  cache folder (default /tmp/fedseg-bench); the masks are made once
#                     in FEDSEG_BENCH_DIR/hd95/ (71 MB for 4 cases)
#   REPEAT            runs of fedseg, the best counts (default 20)
#   REPEAT_PYTHON     runs of the reference (default 1)
#   PYTHON            interpreter with numpy and scipy (default /usr/bin/python3)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build}
threads=${2:-1}
cases=${3:-4}
build=$(cd "$build" && pwd)
repeat=${REPEAT:-20}
repeat_py=${REPEAT_PYTHON:-1}
python=${PYTHON:-/usr/bin/python3}
tool=$build/bin/fedseg-metricstool

[[ -x "$tool" ]] || { echo "hd95.sh: error: missing '$tool' (build the fedseg-metricstool target)" >&2; exit 66; }
"$python" -c 'import numpy, scipy' 2>/dev/null || {
  echo "hd95.sh: error: $python lacks numpy/scipy (apt-get install python3-numpy python3-scipy)" >&2
  exit 69
}

W=${FEDSEG_BENCH_DIR:-/tmp/fedseg-bench}/hd95
mkdir -p "$W"
key="cases=$cases seed=1 gen=$(sha256sum "$here/hd95_reference.py" | cut -c1-16)"
if [[ ! -f "$W/.complete" || "$(cat "$W/.complete")" != "$key" ]]; then
  rm -f "$W/.complete"
  echo "making $cases mask pairs in $W ..."
  "$python" "$here/hd95_reference.py" gen "$W" "$cases" 1
  echo "$key" >"$W/.complete"
fi

"$tool" "$W/manifest.json" --threads "$threads" --repeat "$repeat" >"$W/fedseg.json"
"$tool" "$W/manifest.json" --threads "$threads" --repeat 2 --full-grid >"$W/fedseg_full.json"
"$python" "$here/hd95_reference.py" time "$W" "$repeat_py" >"$W/scipy.json"

"$python" - "$W" "$threads" <<'EOF'
import json, sys
w, threads = sys.argv[1], sys.argv[2]
f = json.load(open(w + "/fedseg.json"))
g = json.load(open(w + "/fedseg_full.json"))
s = json.load(open(w + "/scipy.json"))
n = len(s["cases"])
print(f"{n} cases of 155x240x240 voxels, 1 mm; fedseg --threads {threads}; {f['repeat']} fedseg runs, "
      f"{s['repeat']} reference run(s), the best counts")
print(f"{'case':>4} {'ref ml':>7} {'pred ml':>7} {'dice':>6} {'hd95':>8} {'hd95 max':>8}  same as scipy")
worst = 0.0
for i, (a, b) in enumerate(zip(f["cases"], s["cases"])):
    d = max(abs(a["hd95"] - b["hd95"]), abs(a["hd95_max_directed"] - b["hd95_max_directed"]),
            abs(g["cases"][i]["hd95"] - b["hd95"]))
    worst = max(worst, d)
    print(f"{i:>4} {a['volume_ref_ml']:7.2f} {a['volume_pred_ml']:7.2f} {a['dice']:6.3f} {a['hd95']:8.4f} "
          f"{a['hd95_max_directed']:8.4f}  {'yes' if d <= 1e-6 else 'NO (%.3g)' % d}")
fs, gs, ss = f["seconds"], g["seconds"], s["seconds"]
print(f"{'':<34} {'s (all cases)':>14} {'s per case':>11} {'ratio':>8}")
print(f"{'fedseg (union bounding box)':<34} {fs:14.4f} {fs / n:11.4f} {ss / fs:8.1f}")
print(f"{'fedseg whole grid (--full-grid)':<34} {gs:14.4f} {gs / n:11.4f} {ss / gs:8.1f}")
print(f"{'scipy / MedPy reference':<34} {ss:14.4f} {ss / n:11.4f} {1:8.1f}")
ok = ss / fs >= 20 and worst <= 1e-6
print(f"ratio reference/fedseg {ss / fs:.1f} (target >= 20), values within {worst:.2g}: {'PASS' if ok else 'MISS'}")
EOF
