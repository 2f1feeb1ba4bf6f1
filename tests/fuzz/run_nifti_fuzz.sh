#!/bin/bash
# Usage: tests/fuzz/run_nifti_fuzz.sh BUILD_DIR SECONDS
# Configures a clang + libFuzzer build in BUILD_DIR (libraries coverage-instrumented,
# ASan + UBSan), builds only the nifti_fuzz target, seeds a corpus from small images
# the target writes itself and from the nifti_clib regression files
# ($FEDSEG_TESTDATA/nifti-regress, heads only, when present), and fuzzes for SECONDS.
# Exits non-zero on any crash, sanitizer report, leak, timeout or out-of-memory;
# the reproducer is left in BUILD_DIR/fuzz-artifacts/.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR SECONDS" >&2; exit 64; }
build=$1
secs=$2
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
testdata=${FEDSEG_TESTDATA:-$src/../shared/testdata}
command -v clang++ >/dev/null || { echo "clang++ not installed (apt-get install clang libclang-rt-dev)" >&2; exit 69; }

mkdir -p "$build"
log=$build/fuzz-configure.log
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S "$src" -B "$build" -DFEDSEG_FUZZ=ON -DFEDSEG_TOOLS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_C_FLAGS=$san" "-DCMAKE_CXX_FLAGS=$san" >"$log" 2>&1 \
  || { cat "$log" >&2; exit 1; }
cmake --build "$build" -j"$(nproc)" --target nifti_fuzz

corpus=$build/fuzz-corpus/nifti
seeds=$build/fuzz-seeds/nifti
artifacts=$build/fuzz-artifacts
mkdir -p "$corpus" "$seeds" "$artifacts"
rm -f "$seeds"/*
FEDSEG_FUZZ_WRITE_SEEDS=$seeds "$build/bin/nifti_fuzz"
if [ -d "$testdata/nifti-regress" ]; then
  for f in "$testdata"/nifti-regress/*; do
    head -c 16384 "$f" >"$seeds/regress-$(basename "$f")"
  done
else
  echo "note: $testdata/nifti-regress absent; seeding from written images only"
fi
echo "seeds: $(ls "$seeds" | wc -l) files"

rc=0
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
  "$build/bin/nifti_fuzz" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "$seeds" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FAIL: nifti_fuzz exited $rc; reproducer(s) in $artifacts:" >&2
  ls -l "$artifacts" >&2
  exit 1
fi
echo "nifti_fuzz ran $secs s without a crash"
