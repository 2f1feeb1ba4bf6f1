#!/usr/bin/env bash
# The floor of any NIfTI cohort reader: the wall time to read and gunzip every .nii.gz
# of a cohort to /dev/null, one file after the other, single-threaded.
#
#   bench/gunzip_floor.sh [--tsv] [--repeat N] COHORT_DIR
#
# Tools timed (each when installed; the page cache is warmed first):
#   true                process start only (the per-file overhead inside every row)
#   cat                 read only, no inflate (the I/O part of the floor)
#   gzip -dc            GNU gzip: the portable floor (the one bench/prep.sh judges against)
#   zcat                the same inflate through the zcat wrapper
#   pigz -d -p 1        zlib's inflate
#   libdeflate-gunzip   whole-buffer libdeflate inflate (Debian libdeflate-tools): the
#                       tightest C-level floor
# Each time is the best of --repeat runs (default 2).
# Output: a table; with --tsv, lines "tool<TAB>seconds<TAB>files<TAB>compressed_bytes<TAB>decoded_bytes".
set -euo pipefail

tsv=0
repeat=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tsv) tsv=1; shift ;;
    --repeat) repeat="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gunzip_floor.sh: error: unknown option '$1'" >&2; exit 64 ;;
    *) break ;;
  esac
done
if [[ $# -ne 1 ]]; then
  echo "usage: bench/gunzip_floor.sh [--tsv] [--repeat N] COHORT_DIR" >&2
  exit 64
fi
cohort="$1"
[[ -d "$cohort" ]] || { echo "gunzip_floor.sh: error: not a folder '$cohort'" >&2; exit 66; }

mapfile -d '' files < <(find "$cohort" -name '*.nii.gz' -type f -print0 | sort -z)
[[ ${#files[@]} -gt 0 ]] || { echo "gunzip_floor.sh: error: no .nii.gz files in '$cohort'" >&2; exit 66; }

comp_bytes=0
dec_bytes=0
for f in "${files[@]}"; do
  comp_bytes=$((comp_bytes + $(stat -c %s "$f")))
  # ISIZE: the decoded size modulo 2^32, little-endian, in the last 4 bytes (single member).
  isize=$(tail -c 4 "$f" | od -An -tu4 | tr -d ' ')
  dec_bytes=$((dec_bytes + isize))
done

# Warm the page cache so that every tool sees the same (cached) input.
cat "${files[@]}" > /dev/null

now() { date +%s.%N; }

# time_loop NAME CMD... : runs CMD FILE > /dev/null for every file, best of $repeat.
time_loop() {
  local name="$1"; shift
  local best="" t0 t1 dt r f
  for ((r = 0; r < repeat; r++)); do
    t0=$(now)
    for f in "${files[@]}"; do
      "$@" "$f" > /dev/null
    done
    t1=$(now)
    dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    if [[ -z "$best" ]] || awk -v a="$dt" -v b="$best" 'BEGIN { exit !(a < b) }'; then best="$dt"; fi
  done
  if [[ $tsv -eq 1 ]]; then
    printf '%s\t%s\t%d\t%d\t%d\n' "$name" "$best" "${#files[@]}" "$comp_bytes" "$dec_bytes"
  else
    awk -v n="$name" -v s="$best" -v d="$dec_bytes" -v c="$comp_bytes" 'BEGIN {
      printf "  %-20s %8.3f s  %8.1f MB/s decoded  %8.1f MB/s compressed\n", n, s, d / s / 1e6, c / s / 1e6 }'
  fi
}

if [[ $tsv -eq 0 ]]; then
  awk -v n="${#files[@]}" -v c="$comp_bytes" -v d="$dec_bytes" -v dir="$cohort" 'BEGIN {
    printf "gunzip floor: %d files in %s, %.1f MB compressed, %.1f MB decoded, 1 thread, warm cache\n", n, dir, c / 1e6, d / 1e6 }'
fi
time_loop "true (spawn only)" true
time_loop "cat" cat
time_loop "gzip -dc" gzip -dc
time_loop "zcat" zcat
if command -v pigz > /dev/null; then time_loop "pigz -d -p 1" pigz -d -p 1 -c; fi
if command -v libdeflate-gunzip > /dev/null; then time_loop "libdeflate-gunzip" libdeflate-gunzip -c; fi
