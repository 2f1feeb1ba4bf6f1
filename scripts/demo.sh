#!/usr/bin/env bash
# The main job end to end on synthetic data, with what exists today: three sites
# generate their cohorts and preprocess them into datasets; the aggregator creates
# the federation; each site trains round 0 and sends a signed, encrypted update,
# which the aggregator verifies and unpacks.
# Steps whose tools are not built yet are listed at the end as missing.
set -euo pipefail
build=${1:-build}
out=${2:-demo}
bin=$(cd "$build/bin" && pwd)
export PATH="$bin:$PATH"
rm -rf "$out"
mkdir -p "$out"
cd "$out"
missing=()
have() { [ -x "$bin/fedseg-$1" ]; }
step() { printf '\n== %s\n' "$*"; }

sites=(hospital-a hospital-b hospital-c)
profiles=(standard lowfield highres)
if have synth; then
  for i in 0 1 2; do
    step "${sites[$i]}: synthesise a cohort (profile ${profiles[$i]})"
    fedseg-synth -o "${sites[$i]}/cohort" --cases 4 --shape 64,64,48 --seed $((100 + i)) --profile "${profiles[$i]}"
  done
else
  missing+=("fedseg-synth (issue 3)")
fi
if have prep && have synth; then
  for s in "${sites[@]}"; do
    step "$s: preprocess the cohort into a dataset"
    fedseg-prep "$s/cohort" -o "$s/dataset.h5" --val-fraction 0.25
    fedseg-inspect --check "$s/dataset.h5" | head -12
  done
else
  missing+=("fedseg-prep (issue 3)")
fi
if have keygen; then
  step "identities: the aggregator and each site make their keys (fingerprints are read over the phone)"
  mkdir -p aggregator "${sites[@]}"
  fedseg-keygen -o aggregator/id --site aggregator
  for s in "${sites[@]}"; do fedseg-keygen -q -o "$s/id" --site "$s"; done
  ls aggregator/id
fi
if have init && have train && have pack && have verify; then
  step "aggregator: create the federation (small CPU model) and publish round 0"
  pubs=()
  for s in "${sites[@]}"; do pubs+=(--site "$s=$s/id"); done
  fedseg-init --federation demo --key aggregator/id "${pubs[@]}" --preset small --patch 32 --epochs 2 \
    --patches-per-case 4 --lr 3e-3 --seed 1 -o exchange
  for s in "${sites[@]}"; do
    step "$s: train round 0's global model on its own dataset, pack and sign the update"
    fedseg-train exchange/rounds/0/global.h5 "$s/dataset.h5" --federation exchange/federation.json \
      --aggregator-pub aggregator/id --site "$s" --round 0 -o "$s/update-0.h5"
    mkdir -p exchange/rounds/0/updates
    fedseg-pack "$s/update-0.h5" --key "$s/id" --to aggregator/id -o "exchange/rounds/0/updates/$s.age"
  done
  step "aggregator: verify and unpack the packages (the aggregation itself is issue 6)"
  for s in "${sites[@]}"; do
    fedseg-verify "exchange/rounds/0/updates/$s.age" --federation exchange/federation.json \
      --aggregator-pub aggregator/id --identity aggregator/id -o "aggregator/$s-0.h5" --force
  done
else
  for t in init train pack verify; do have "$t" || missing+=("fedseg-$t"); done
fi
for t in aggregate eval predict fetch push report; do
  have "$t" || missing+=("fedseg-$t")
done
step "what the demo could not run yet"
if [ ${#missing[@]} -eq 0 ]; then
  echo "nothing missing"
else
  printf '  missing: %s\n' "${missing[@]}"
fi
echo
echo "demo outputs are in $(pwd)"
