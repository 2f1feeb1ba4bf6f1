#!/usr/bin/env bash
# fedseg-prep benchmark: cases per second on a 240x240x155 four-modality synthetic cohort,
# against the gunzip floor and a Python reference (nibabel + numpy + h5py) doing the same
# steps, all timed in the same run.
#
#   bench/prep.sh [BUILD_DIR] [CASES] [THREADS]        (defaults: build 4 1)
#
# Targets (issue 3): fedseg-prep at 1 thread at least 5x the Python reference's cases/s;
# fedseg-prep's wall time within 2x of the floor (reading + gunzipping every input with
# `gzip -dc`, one thread). The Python reference is single-threaded whatever THREADS is.
#
# Environment:
#   FEDSEG_BENCH_DIR  cache and output folder (default /tmp/fedseg-bench); the cohort is
#                     generated once per (cases, fedseg-synth binary) and reused
#   REPEAT            runs of fedseg-prep and of the floor; the best counts (default 2)
#   REPEAT_PYTHON     runs of the Python reference (default 1)
#   COMPARE=0         skip the output cross-check (bench/compare_prep.py)
#   PYTHON            interpreter for the reference (default /usr/bin/python3)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build}
cases=${2:-4}
threads=${3:-1}
zstd_level=${ZSTD_LEVEL:-1}   # the same compression level on both sides (fedseg-prep's default)
build=$(cd "$build" && pwd)
bench_dir=${FEDSEG_BENCH_DIR:-/tmp/fedseg-bench}
repeat=${REPEAT:-2}
repeat_py=${REPEAT_PYTHON:-1}
python=${PYTHON:-/usr/bin/python3}
shape=240,240,155

synth="$build/bin/fedseg-synth"
prep="$build/bin/fedseg-prep"
plugins="$build/hdf5-plugins"
for f in "$synth" "$prep"; do
  [[ -x "$f" ]] || { echo "prep.sh: error: missing '$f' (build first)" >&2; exit 66; }
done
[[ -d "$plugins" ]] || { echo "prep.sh: error: missing '$plugins' (the HDF5 zstd plugin)" >&2; exit 66; }
[[ -x /usr/bin/time ]] || { echo "prep.sh: error: /usr/bin/time missing (apt-get install time)" >&2; exit 69; }
"$python" -c 'import nibabel, numpy, h5py' 2> /dev/null || {
  echo "prep.sh: error: $python lacks nibabel/numpy/h5py (apt-get install python3-nibabel python3-numpy python3-h5py python3-scipy)" >&2
  exit 69
}

mkdir -p "$bench_dir"
# --- the cohort, generated once and cached --------------------------------------------
synth_sum=$(sha256sum "$synth" | cut -c1-16)
cohort="$bench_dir/cohort-${shape//,/x}-n$cases-seed1"
stamp="$cohort/.fedseg-bench-complete"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$synth_sum" ]]; then
  echo "generating the cohort in $cohort (fedseg-synth $synth_sum) ..."
  rm -rf "$cohort" "$cohort.tmp"
  "$synth" -o "$cohort.tmp" --cases "$cases" --shape "$shape" --seed 1 -q
  mv "$cohort.tmp" "$cohort"
  echo "$synth_sum" > "$stamp"
fi
echo "cohort: $cohort (cached; delete it to regenerate)"

out="$bench_dir/out"
mkdir -p "$out"

# run_timed REPEAT OUTVAR CMD... : best-of-REPEAT wall time; sets OUTVAR_wall, _cpu, _rss (MB).
run_timed() {
  local n="$1" var="$2"; shift 2
  local best_wall="" best_cpu="" best_rss="" i tf line wall usr sys rss
  tf=$(mktemp)
  for ((i = 0; i < n; i++)); do
    if ! /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@"; then
      echo "prep.sh: error: command failed: $*" >&2
      rm -f "$tf"
      exit 70
    fi
    line=$(tail -n 1 "$tf")
    read -r wall usr sys rss <<< "$line"
    if [[ -z "$best_wall" ]] || awk -v a="$wall" -v b="$best_wall" 'BEGIN { exit !(a < b) }'; then
      best_wall=$wall
      best_cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
      best_rss=$(awk -v r="$rss" 'BEGIN { printf "%.0f", r / 1024 }')
    fi
  done
  rm -f "$tf"
  printf -v "${var}_wall" '%s' "$best_wall"
  printf -v "${var}_cpu" '%s' "$best_cpu"
  printf -v "${var}_rss" '%s' "$best_rss"
}

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "machine: ${cpu_model:-unknown CPU}, $(nproc) cores available, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM, $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "fedseg-prep: $("$prep" --version 2>&1 | head -n 1); python: $("$python" -c 'import sys, nibabel, numpy, h5py; print(sys.version.split()[0], "nibabel", nibabel.__version__, "numpy", numpy.__version__, "h5py", h5py.__version__)')"

load_start=$(cut -d' ' -f1 /proc/loadavg)
echo "load average at start: $load_start"
# Warm the page cache for everyone.
find "$cohort" -name '*.nii.gz' -type f -exec cat {} + > /dev/null

# --- (a) the floor ---------------------------------------------------------------------
echo "timing the gunzip floor ..."
floor_tsv=$("$here/gunzip_floor.sh" --tsv --repeat "$repeat" "$cohort")
floor_gzip=$(awk -F'\t' '$1 == "gzip -dc" { print $2 }' <<< "$floor_tsv")
read -r tight_name tight_wall < <(awk -F'\t' '$1 != "cat" && $1 !~ /^true/ {
  if (best == "" || $2 < best) { best = $2; name = $1 } } END { gsub(/ /, "_", name); print name, best }' <<< "$floor_tsv")
tight_name=${tight_name//_/ }
read_wall=$(awk -F'\t' '$1 == "cat" { print $2 }' <<< "$floor_tsv")
dec_mb=$(awk -F'\t' 'NR == 1 { printf "%.0f", $5 / 1e6 }' <<< "$floor_tsv")
comp_mb=$(awk -F'\t' 'NR == 1 { printf "%.0f", $4 / 1e6 }' <<< "$floor_tsv")

# --- (b) fedseg-prep -------------------------------------------------------------------
echo "timing fedseg-prep --threads $threads ..."
run_timed "$repeat" fs "$prep" "$cohort" -o "$out/fedseg.h5" --threads "$threads" --margin 2 --zstd-level "$zstd_level" --force -q --no-progress

# --- (c) the Python reference ----------------------------------------------------------
echo "timing the Python reference (single-threaded) ..."
run_timed "$repeat_py" py env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
  HDF5_PLUGIN_PATH="$plugins" "$python" "$here/prep_reference.py" "$cohort" "$out/python.h5" --margin 2 --zstd-level "$zstd_level"

# --- the table -------------------------------------------------------------------------
load_end=$(cut -d' ' -f1 /proc/loadavg)
echo
echo "fedseg-prep benchmark: $cases cases of ${shape//,/x} (4 modalities + seg; $comp_mb MB gzipped, $dec_mb MB decoded), warm page cache"
awk -v n="$cases" -v t="$threads" \
  -v rd="$read_wall" -v fg="$floor_gzip" -v tn="$tight_name" -v tw="$tight_wall" \
  -v fw="$fs_wall" -v fc="$fs_cpu" -v fr="$fs_rss" \
  -v pw="$py_wall" -v pc="$py_cpu" -v pr="$py_rss" 'BEGIN {
  printf "  %-38s %7s %9s %9s %11s %10s\n", "", "threads", "wall s", "cases/s", "user+sys s", "max RSS MB"
  printf "  %-38s %7d %9.2f %9.2f %11s %10s\n", "read only (cat)", 1, rd, n / rd, "-", "-"
  printf "  %-38s %7d %9.2f %9.2f %11s %10s\n", "floor: gzip -dc", 1, fg, n / fg, "-", "-"
  if (tn != "gzip -dc")
    printf "  %-38s %7d %9.2f %9.2f %11s %10s\n", "tightest floor: " tn, 1, tw, n / tw, "-", "-"
  printf "  %-38s %7d %9.2f %9.2f %11.2f %10d\n", "fedseg-prep", t, fw, n / fw, fc, fr
  printf "  %-38s %7d %9.2f %9.2f %11.2f %10d\n", "python reference (nibabel/numpy/h5py)", 1, pw, n / pw, pc, pr
  speed = pw / fw; ratio = fw / fg; tratio = fw / tw
  print ""
  if (fc > 0) printf "  CPU-time ratio python / fedseg-prep (user+sys): %.2fx (informational; robust to other load)\n", pc / fc
  if (t == 1)
    printf "  speedup fedseg-prep vs python: %6.2fx   target >= 5x at 1 thread: %s\n", speed, (speed >= 5 ? "PASS" : "MISS")
  else
    printf "  speedup fedseg-prep vs python: %6.2fx   (fedseg-prep at %d threads vs single-threaded python; the 5x target is judged at 1 thread)\n", speed, t
  printf "  fedseg-prep / floor (gzip -dc): %5.2fx   target <= 2x: %s%s\n", ratio, (ratio <= 2 ? "PASS" : "MISS"), (t > 1 ? " (the floor is single-threaded)" : "")
  if (tn != "gzip -dc")
    printf "  fedseg-prep / tightest floor (%s): %5.2fx   (informational)\n", tn, tratio
}'
awk -v a="$load_start" -v b="$load_end" -v c="$(nproc)" 'BEGIN {
  if (a > 0.5 || b > 0.5) printf "  WARNING: load average %s at start, %s at end on %d cores: other processes competed; wall times are pessimistic\n", a, b, c }'
echo
echo "outputs: $out/fedseg.h5, $out/python.h5"

if [[ "${COMPARE:-1}" != 0 ]]; then
  echo
  echo "cross-check (bench/compare_prep.py fedseg.h5 python.h5):"
  HDF5_PLUGIN_PATH="$plugins" "$python" "$here/compare_prep.py" "$out/fedseg.h5" "$out/python.h5" | grep -E '^(case|RESULT)|MISMATCH|^  image: max|^  label: [0-9]|differs' || true
fi
