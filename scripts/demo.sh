#!/usr/bin/env bash
# The README's first command (make -f Makefile.dist demo): a simulated federation on this
# machine. Three hospitals with different synthetic cohorts (fedseg-synth's non-IID scanner
# profiles) make their keys and datasets; the aggregator creates the federation (the small
# model); then ROUNDS rounds run with the same cron scripts a real federation uses
# (share/fedseg/site-round per hospital, share/fedseg/aggregator-round) over a local
# exchange folder: fetch, verify, evaluate, train, pack, push; quorum, aggregate, publish.
# It prints the federation-wide Dice per round, writes the HTML report, and trains a
# centralised baseline on the pooled training data with the same budget (the same number
# of epochs over the same cases), then prints federated Dice / centralised Dice on the
# pooled validation cases.
#
#   scripts/demo.sh [BUILD_DIR] [OUT_DIR]
#   environment: DEMO_ROUNDS (4), DEMO_CASES per site (8), DEMO_SHAPE (64,64,48),
#                DEMO_EPOCHS per round (2), DEMO_THREADS (all cores), DEMO_RULE (fedavg)
#                and DEMO_RULE_PARAMS ("KEY=VALUE ...", e.g. "server_lr=1 momentum=0.9")
set -euo pipefail
build=${1:-build}
out=${2:-demo}
ROUNDS=${DEMO_ROUNDS:-4}
CASES=${DEMO_CASES:-8}
SHAPE=${DEMO_SHAPE:-64,64,48}
EPOCHS=${DEMO_EPOCHS:-2}
THREADS=${DEMO_THREADS:-0}
RULE=${DEMO_RULE:-fedavg}
read -r -a RULE_PARAMS <<<"${DEMO_RULE_PARAMS:-}"
bin=$(cd "$build/bin" && pwd)
share=$(cd "$(dirname "$0")/../share/fedseg" && pwd)
export PATH="$bin:$PATH"
export HDF5_PLUGIN_PATH="$(cd "$build" && pwd)/hdf5-plugins"
rm -rf "$out"
mkdir -p "$out"
cd "$out"
top=$(pwd)
t_start=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
dice_line() { # REPORT.json -> "WT 0.xxx  TC 0.xxx  ET 0.xxx (N cases)"
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
f = m["federation"]
d = f.get("dice") or {}
def g(r):
    v = d.get(r, {}).get("mean")
    return "  -  " if v is None else "%.3f" % v
print("WT %s  TC %s  ET %s  (%d val cases, %d sites)" % (g("WT"), g("TC"), g("ET"), f["num_cases"], f["sites"]))
PY
}

sites=(hospital-a hospital-b hospital-c)
profiles=(standard lowfield highres)
for i in 0 1 2; do
  s=${sites[$i]}
  step "$s: a synthetic cohort (scanner profile ${profiles[$i]}), preprocessed into its dataset"
  fedseg-synth -o "$s/cohort" --cases "$CASES" --shape "$SHAPE" --seed $((100 + i)) --profile "${profiles[$i]}" \
    --prefix "H$((i + 1))" -q
  fedseg-prep "$s/cohort" -o "$s/dataset.h5" --val-fraction 0.25 -q
  fedseg-inspect "$s/dataset.h5" | grep -E 'num_(train|val)' | tr -s ' ' | paste -sd' '
done

step "identities: each party makes its keys; the fingerprints are compared over the phone"
mkdir -p aggregator
fedseg-keygen -q -o aggregator/id --site aggregator
mkdir -p aggregator/pub && cp aggregator/id/age.pub aggregator/id/minisign.pub aggregator/pub/
for s in "${sites[@]}"; do fedseg-keygen -q -o "$s/id" --site "$s"; done
fedseg-keygen --fingerprint aggregator/id 2>/dev/null || true

step "aggregator: the federation (small model, $RULE${DEMO_RULE_PARAMS:+ $DEMO_RULE_PARAMS}, $EPOCHS epochs per round), round 0 published"
recipe=(--preset small --patch 32 --epochs "$EPOCHS" --patches-per-case 4 --lr 3e-3 --seed 1)
pubs=()
for s in "${sites[@]}"; do pubs+=(--site "$s=$s/id"); done
rule=(--rule "$RULE")
for p in "${RULE_PARAMS[@]}"; do rule+=(--rule-param "$p"); done
fedseg-init --federation demo --key aggregator/id "${pubs[@]}" "${recipe[@]}" "${rule[@]}" -o exchange -q
for s in "${sites[@]}"; do
  cat >"$s/site.conf" <<EOF
# site-round configuration of $s (share/fedseg/examples/site.conf explains each line)
EXCHANGE=$top/exchange
SITE=$s
IDENTITY=$top/$s/id
AGGREGATOR_PUB=$top/aggregator/pub
DATASET=$top/$s/dataset.h5
WORK=$top/$s/work
THREADS=$THREADS
FEDSEG_BIN=$bin
EOF
done
cat >aggregator/aggregator.conf <<EOF
EXCHANGE=$top/exchange
KEY=$top/aggregator/id
FEDSEG_BIN=$bin
EOF

for r in $(seq 0 $((ROUNDS - 1))); do
  step "round $r: each hospital runs site-round (fetch, verify, eval, train, pack, push); then aggregator-round"
  for s in "${sites[@]}"; do
    t0=$(date +%s)
    "$share/site-round" "$s/site.conf"
    echo "  $s: done in $(($(date +%s) - t0)) s"
  done
  "$share/aggregator-round" aggregator/aggregator.conf
  echo "  round $r global model on the sites' val cases: $(dice_line "exchange/rounds/$r/report.json")"
done

step "the final global model (round $ROUNDS) and a centralised baseline with the same budget"
# The pooled data: every hospital's cohort in one folder, the same split rule.
mkdir -p pooled/cohort
for s in "${sites[@]}"; do for c in "$s"/cohort/*/; do ln -s "$top/$c" "pooled/cohort/$(basename "$c")"; done; done
fedseg-prep pooled/cohort -o pooled/dataset.h5 --val-fraction 0.25 -q
# Centralised = one site holding all the data, ROUNDS x EPOCHS epochs in one go.
fedseg-keygen -q -o pooled/id --site pooled
fedseg-init --federation central --key aggregator/id --site pooled=pooled/id --preset small --patch 32 \
  --epochs $((ROUNDS * EPOCHS)) --patches-per-case 4 --lr 3e-3 --seed 1 -o central -q
fedseg-train central/rounds/0/global.h5 pooled/dataset.h5 --federation central/federation.json \
  --aggregator-pub aggregator/pub --site pooled --round 0 -o pooled/update.h5 --threads "$THREADS" -q
mkdir -p central/rounds/0/updates
fedseg-pack pooled/update.h5 --key pooled/id --to aggregator/pub -o central/rounds/0/updates/pooled.age -q
fedseg-aggregate central --key aggregator/id --state aggregator/state-central -q
ev() { # MODEL FEDERATION -> mean Dice per region on the pooled val cases (JSON)
  fedseg-eval "$1" pooled/dataset.h5 --federation "$2/federation.json" --aggregator-pub aggregator/pub \
    --split val --threads "$THREADS" --json -q
}
ev exchange/rounds/$ROUNDS/global.h5 exchange >fed-eval.json
ev central/rounds/1/global.h5 central >central-eval.json
/usr/bin/python3 - fed-eval.json central-eval.json <<'PY'
import json, sys
def means(p):
    s = json.load(open(p))["summary"]
    regions = s.get("regions", s)
    return {r: regions[r]["dice"]["mean"] for r in ("WT", "TC", "ET")}
f, c = means(sys.argv[1]), means(sys.argv[2])
print("                 WT      TC      ET      mean")
for name, d in (("federated", f), ("centralised", c)):
    print("%-14s %6.3f  %6.3f  %6.3f  %6.3f" % (name, d["WT"], d["TC"], d["ET"], sum(d.values()) / 3))
ratio = lambda a, b: float("nan") if b == 0 else a / b
fm, cm = sum(f.values()) / 3, sum(c.values()) / 3
print("federated / centralised Dice: WT %.2f  TC %.2f  ET %.2f  mean %.2f" %
      (ratio(f["WT"], c["WT"]), ratio(f["TC"], c["TC"]), ratio(f["ET"], c["ET"]), ratio(fm, cm)))
PY

step "the report"
if [ -x "$bin/fedseg-report" ]; then
  fedseg-report exchange --aggregator-pub aggregator/pub -o report.html -q && echo "  $top/report.html"
else
  echo "  fedseg-report is not built"
fi
fedseg-aggregate exchange --key aggregator/id --verify-ledger
echo
echo "demo finished in $(($(date +%s) - t_start)) s; outputs are in $top"
