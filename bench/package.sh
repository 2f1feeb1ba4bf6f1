#!/usr/bin/env bash
# bench/package.sh [BUILD_DIR] [MB] — fedseg-pack and fedseg-verify (+ unpack) of an
# MB-MiB update (default 200) against the standard tools with the same settings:
#   pack:   fedseg-pack --zstd=3                  vs  zstd -3 -c FILE | age -r R -o OUT
#   unpack: fedseg-verify --pub --identity -o     vs  age -d -i KEY PKG | zstd -d -o OUT
# (fedseg-verify also checks the signature, the plaintext hash and the inner
# attributes; the standard pipeline checks none of them.) Best of REPEAT runs
# (default 3), warm page cache. Targets: ratio = reference wall / fedseg wall >= 1.0,
# fedseg peak RSS < 64 MB. A MISS does not fail: benchmarks are not tests.
set -euo pipefail
BUILD=${1:-build}
MB=${2:-200}
REPEAT=${REPEAT:-3}
BIN=$(cd "$BUILD/bin" && pwd)
for t in age zstd /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 69; }; done
W=${FEDSEG_BENCH_DIR:-/tmp/fedseg-bench}/package
mkdir -p "$W"
cd "$W"
if [ ! -f "update-$MB.h5" ] || [ "update-$MB.h5" -ot "$BIN/fedseg-testwrite" ]; then
  rm -f "update-$MB.h5"
  "$BIN/fedseg-testwrite" -o "update-$MB.h5" --kind update --site hospital-a --tensors 0 --random-mb "$MB" \
    --base "$(printf '%064d' 0)"
fi
rm -rf agg site && "$BIN/fedseg-keygen" -q -o agg >/dev/null && "$BIN/fedseg-keygen" -q -o site >/dev/null
R=$(grep -v '^#' agg/age.pub)
IN=update-$MB.h5
cat "$IN" >/dev/null

# best WALL RSS over REPEAT runs of a command (sh -c); RSS = largest process (KiB -> MB).
best() {
  local bw="" br=0 w r
  for _ in $(seq "$REPEAT"); do
    rm -f out.age out.age.minisig ref.age ref.age.minisig out.h5 ref.h5
    /usr/bin/time -f "%e %M" -o t.txt sh -c "$1" >/dev/null
    read -r w r <t.txt
    if [ -z "$bw" ] || awk "BEGIN{exit !($w < $bw)}"; then bw=$w; fi
    [ "$r" -gt "$br" ] && br=$r
  done
  echo "$bw $((br / 1024))"
}

echo "machine: $(nproc) cores; load at start:$(uptime | sed 's/.*load average://')"
echo "input: $IN $(stat -c %s "$IN") bytes"
read -r fp frss < <(best "$BIN/fedseg-pack $IN --key site --to agg --zstd=3 -o out.age -q")
read -r rp rrss < <(best "zstd -q -3 -c $IN | age -r $R -o ref.age")
"$BIN/fedseg-pack" "$IN" --key site --to agg --zstd=3 -o pkg.age -q --force >/dev/null
read -r fu furss < <(best "$BIN/fedseg-verify pkg.age --pub site --identity agg -o out.h5 -q")
read -r ru rurss < <(best "age -d -i agg/age.key pkg.age | zstd -q -d -o ref.h5")
# The same work done with the standard tools: fedseg also hashes, signs or
# verifies, and fsyncs its outputs (atomic publish). For information, not judged.
if command -v minisign >/dev/null; then
  read -r rpf _ < <(best "sha256sum $IN >/dev/null && zstd -q -3 -c $IN | age -r $R -o ref.age && minisign -S -s site/minisign.key -m ref.age -t x >/dev/null && sync ref.age ref.age.minisig")
  read -r ruf _ < <(best "minisign -Vm pkg.age -p site/minisign.pub -q && age -d -i agg/age.key pkg.age | zstd -q -d -o ref.h5 && sha256sum ref.h5 >/dev/null && sync ref.h5")
else
  rpf=- ruf=-
fi
"$BIN/fedseg-verify" pkg.age --pub site --identity agg -o out.h5 -q --force >/dev/null
cmp -s "$IN" out.h5 || { echo "unpacked file differs" >&2; exit 1; }
rm -f out.h5 ref.h5 out.age* ref.age*
echo "package: $(stat -c %s pkg.age) bytes (zstd -3 + age)"
printf '%-8s %9s %9s %7s %10s %9s  %-22s %s\n' step fedseg_s ref_s ratio fedseg_MB ref_MB verdict "same-work ref_s (ratio)"
for row in "pack $fp $rp $frss $rrss $rpf" "unpack $fu $ru $furss $rurss $ruf"; do
  set -- $row
  ratio=$(awk "BEGIN{printf \"%.2f\", $3 / $2}")
  verdict=PASS
  awk "BEGIN{exit !($ratio < 1.0)}" && verdict="MISS(ratio)"
  [ "$4" -ge 64 ] && verdict="$verdict MISS(rss)"
  full="$6"
  [ "$6" != - ] && full="$6 ($(awk "BEGIN{printf \"%.2f\", $6 / $2}"))"
  printf '%-8s %9s %9s %7s %10s %9s  %-22s %s\n' "$1" "$2" "$3" "$ratio" "$4" "$5" "$verdict" "$full"
done
echo "load at end:$(uptime | sed 's/.*load average://')"
